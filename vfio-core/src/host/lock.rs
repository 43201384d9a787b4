//! The run directory and the host lock: one vfiotool at a time changes driver bindings,
//! the bind journal and the boot configuration.
//!
//! The lock is an exclusive `flock(2)` on [`LOCK`] in the run directory [`RUN_DIR`] of
//! the host view (the live host's `/run/vfiotool`, or the same path inside a tree given
//! with `--sysfs-root`). The kernel releases it when the holder exits or is killed, so a
//! crashed run never leaves a stale lock behind, and two runs can never both hold it:
//! there is no window between testing and taking it. The holder's pid is written into
//! the file only to name it in the second run's error.
//!
//! The run directory is created `0700`; one that is a link, is owned by another user or
//! is writable by others is refused, so nobody but root can plant a journal or a lock.

use std::path::Path;

use crate::error::{Error, Result};
use crate::hostfs::{HeldLock, HostFs, NodeKind};

/// The run directory holding the lock and the bind journal.
pub const RUN_DIR: &str = "/run/vfiotool";

/// The lock file.
pub const LOCK: &str = "/run/vfiotool/lock";

/// How long a busy lock is tried again before [`Error::Locked`].
pub const LOCK_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

/// A held host lock; released on drop.
#[derive(Debug)]
pub struct HostLock {
    _held: Box<dyn HeldLock>,
}

/// The effective user id of this process.
fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Creates the run directory (`0700`) if needed and checks that it is safe to keep
/// state in: a real directory, owned by root or by this user, writable by no one else.
pub fn ensure_run_dir(fs: &dyn HostFs) -> Result<()> {
    let dir = Path::new(RUN_DIR);
    fs.create_dir_all(dir, 0o700)
        .map_err(|e| crate::host::change_error("create directory", dir, e))?;
    let m = fs.metadata(dir).map_err(|e| Error::host("stat", dir, e))?;
    let unsafe_dir = |reason: String| Error::Invalid {
        what: "run directory",
        input: RUN_DIR.into(),
        reason: format!("{reason}; remove it (it is created again) and try again"),
    };
    if m.kind != NodeKind::Dir {
        return Err(unsafe_dir("it is not a directory".into()));
    }
    if m.uid != 0 && m.uid != euid() {
        return Err(unsafe_dir(format!("it is owned by uid {}, not by root", m.uid)));
    }
    if m.mode & 0o022 != 0 {
        return Err(unsafe_dir(format!("others can write to it (mode {:o})", m.mode)));
    }
    Ok(())
}

impl HostLock {
    /// Takes the lock, or fails with [`Error::Locked`] naming the holder.
    ///
    /// A lock that is busy is tried again for [`LOCK_GRACE`]: a child process forked by
    /// any thread of the holder's process shares its descriptors (and so its `flock`)
    /// until it `exec`s, which holds a lock for an instant after its holder let it go.
    pub fn acquire(fs: &dyn HostFs) -> Result<Self> {
        ensure_run_dir(fs)?;
        let path = Path::new(LOCK);
        let deadline = std::time::Instant::now() + LOCK_GRACE;
        loop {
            match fs.lock(path) {
                Ok(held) => return Ok(HostLock { _held: held }),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if std::time::Instant::now() < deadline {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        continue;
                    }
                    let pid = fs.read_string(path).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
                    return Err(Error::Locked { pid, path: path.into() });
                }
                Err(e) => return Err(Error::host("lock", path, e)),
            }
        }
    }
}

#[cfg(all(test, feature = "mock"))]
mod tests {
    use super::*;
    use crate::hostfs::RealFs;
    use crate::mock::{DeviceSpec, MockHost};

    #[test]
    fn a_second_holder_is_refused_and_the_lock_is_released_on_drop() {
        let h = MockHost::new([DeviceSpec::edu("0000:00:04.0").driver("edu")]);
        let fs = h.fs();
        let l = HostLock::acquire(&*fs).unwrap();
        let e = HostLock::acquire(&*fs).unwrap_err().to_string();
        assert!(e.contains("another process holds the host lock"), "{e}");
        drop(l);
        HostLock::acquire(&*fs).unwrap();
    }

    #[test]
    fn on_a_real_tree_the_holder_is_named_and_a_dead_holder_leaves_no_lock() {
        let dir = tempfile::tempdir().unwrap();
        let fs = RealFs::new(dir.path());
        let l = HostLock::acquire(&fs).unwrap();
        let e = HostLock::acquire(&fs).unwrap_err().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(l);
        // A lock file left by a killed run (its flock died with it) does not shut out.
        std::fs::write(dir.path().join("run/vfiotool/lock"), b"4242\n").unwrap();
        HostLock::acquire(&fs).unwrap();
        let m = fs.metadata(Path::new(RUN_DIR)).unwrap();
        assert_eq!(m.mode & 0o777, 0o700);
    }

    #[test]
    fn an_unsafe_run_directory_is_refused_with_a_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fs = RealFs::new(dir.path());
        std::fs::create_dir_all(dir.path().join("run/vfiotool")).unwrap();
        let p = dir.path().join("run/vfiotool");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = HostLock::acquire(&fs).unwrap_err().to_string();
        assert!(e.contains("others can write to it") && e.contains("remove it"), "{e}");
        std::fs::remove_dir(&p).unwrap();
        std::os::unix::fs::symlink("/tmp", &p).unwrap();
        let e = HostLock::acquire(&fs).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, b"a file in the way").unwrap();
        assert!(HostLock::acquire(&fs).unwrap_err().to_string().contains("/run/vfiotool"));
    }
}
