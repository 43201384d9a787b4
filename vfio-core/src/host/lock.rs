//! The host lock: one vfiotool at a time changes driver bindings and the bind journal.
//!
//! The lock is the file [`LOCK`], created exclusively (`O_CREAT | O_EXCL` through
//! [`HostFs::create_new`]) and holding `PID TOKEN`. A second run finds the file and fails
//! with "another vfiotool is running (pid N)". A lock whose process is gone (a crash, a
//! `kill -9`) is stale: the next run sees that `/proc/PID` does not exist, removes it and
//! takes the lock, saying so in [`HostLock::replaced_stale`]. The journal tells what the
//! crashed run left behind (`vfiotool restore`).
//!
//! The lock is released when the [`HostLock`] is dropped, and only if the file still
//! holds this holder's token (a lock taken over as stale by another run is left alone;
//! when the file cannot be read back, it is left too). A lock naming this process is
//! held while a [`HostLock`] with its token lives, and stale otherwise, so a lock this
//! process failed to remove does not shut it out.
//! Because the check goes through [`HostFs`], the simulated host tests every case:
//! running processes are its `SysState::processes`.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::hostfs::HostFs;

/// The lock file.
pub const LOCK: &str = "/run/vfiotool/lock";

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// Tokens of the [`HostLock`]s alive in this process.
static LIVE: Mutex<BTreeSet<u64>> = Mutex::new(BTreeSet::new());

fn live() -> std::sync::MutexGuard<'static, BTreeSet<u64>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// A held host lock; released on drop.
#[derive(Debug)]
pub struct HostLock<'a> {
    fs: &'a dyn HostFs,
    content: String,
    token: u64,
    replaced: Option<u32>,
}

/// What the lock file says: `None` when it cannot be read (gone), else the pid and
/// token written in it, when they parse.
fn holder(fs: &dyn HostFs) -> Option<(Option<u32>, Option<u64>)> {
    let bytes = fs.read(Path::new(LOCK)).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let mut f = text.split_whitespace();
    Some((f.next().and_then(|p| p.parse().ok()), f.next().and_then(|t| t.parse().ok())))
}

impl<'a> HostLock<'a> {
    /// Takes the lock for this process.
    pub fn acquire(fs: &'a dyn HostFs) -> Result<Self> {
        Self::acquire_as(fs, std::process::id())
    }

    /// Takes the lock for process `pid`. A lock held by `pid` itself (another thread of
    /// this process) counts as held, never as stale.
    pub fn acquire_as(fs: &'a dyn HostFs, pid: u32) -> Result<Self> {
        let path = Path::new(LOCK);
        let dir = path.parent().unwrap_or(Path::new("/run"));
        fs.create_dir_all(dir).map_err(|e| {
            Error::host("create directory", dir, e)
                .with_hint("changing the host needs root: run vfiotool with sudo")
        })?;
        let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
        let content = format!("{pid} {token}\n");
        let mut replaced = None;
        // Two rounds: the second after removing a stale lock.
        for _ in 0..2 {
            match fs.create_new(path, content.as_bytes()) {
                Ok(()) => {
                    live().insert(token);
                    return Ok(HostLock { fs, content, token, replaced });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::host("create", path, e)),
            }
            match holder(fs) {
                // Gone between our create and our read: try again.
                None => continue,
                Some((Some(other), t))
                    if (other == pid && t.is_some_and(|t| live().contains(&t)))
                        || (other != pid && fs.exists(Path::new(&format!("/proc/{other}")))) =>
                {
                    return Err(Error::Locked { pid: other, path: path.into() });
                }
                Some((stale, _)) => {
                    // The holder is gone (or the file is garbage): remove and retry.
                    replaced = Some(stale.unwrap_or(0));
                    match fs.remove_file(path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(Error::host("remove stale lock", path, e)),
                    }
                }
            }
        }
        // Another run took it between our removal of the stale lock and our create.
        Err(Error::Locked { pid: holder(fs).and_then(|h| h.0).unwrap_or(0), path: path.into() })
    }

    /// The pid of a crashed run whose stale lock was replaced (0 when the file named none).
    pub fn replaced_stale(&self) -> Option<u32> {
        self.replaced
    }
}

impl Drop for HostLock<'_> {
    fn drop(&mut self) {
        live().remove(&self.token);
        // Only our own lock: a run that judged us stale may have replaced it.
        if let Ok(now) = self.fs.read(Path::new(LOCK)) {
            if now == self.content.as_bytes() {
                let _ = self.fs.remove_file(Path::new(LOCK));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::{DeviceSpec, MockHost};

    fn host() -> MockHost {
        MockHost::new([DeviceSpec::edu("0000:00:04.0").driver("edu")])
    }

    #[test]
    fn a_second_holder_is_refused_and_the_lock_is_released_on_drop() {
        let h = host();
        let fs = h.fs();
        let l = HostLock::acquire_as(&*fs, 100).unwrap();
        assert!(l.replaced_stale().is_none());
        // Another thread of the same process.
        let e = HostLock::acquire_as(&*fs, 100).unwrap_err().to_string();
        assert!(e.contains("another vfiotool is running (pid 100)"), "{e}");
        // Another live process.
        h.state().sys.processes.insert(100);
        let e = HostLock::acquire_as(&*fs, 200).unwrap_err().to_string();
        assert!(e.contains("pid 100"), "{e}");
        assert!(!e.contains("--force"), "{e}");
        drop(l);
        assert!(!fs.exists(Path::new(LOCK)));
        let l2 = HostLock::acquire_as(&*fs, 200).unwrap();
        assert!(fs.read_string(Path::new(LOCK)).unwrap().starts_with("200 "));
        drop(l2);
        assert!(!fs.exists(Path::new(LOCK)));
    }

    #[test]
    fn a_stale_lock_of_a_crashed_run_is_taken_over() {
        let h = host();
        let fs = h.fs();
        fs.create_dir_all(Path::new("/run/vfiotool")).unwrap();
        fs.write(Path::new(LOCK), b"4242 7\n").unwrap();
        // While 4242 runs, the lock holds.
        h.state().sys.processes.insert(4242);
        assert!(HostLock::acquire_as(&*fs, 1).is_err());
        assert_eq!(fs.read(Path::new(LOCK)).unwrap(), b"4242 7\n");
        // It crashed: the lock is stale.
        h.state().sys.processes.remove(&4242);
        let l = HostLock::acquire_as(&*fs, 1).unwrap();
        assert_eq!(l.replaced_stale(), Some(4242));
        // A garbage lock file is stale as well.
        drop(l);
        fs.write(Path::new(LOCK), b"\xff garbage").unwrap();
        assert_eq!(HostLock::acquire_as(&*fs, 1).unwrap().replaced_stale(), Some(0));
    }

    #[test]
    fn a_lock_this_process_failed_to_release_does_not_shut_it_out() {
        let h = host();
        let fs = h.fs();
        let l = HostLock::acquire_as(&*fs, 500).unwrap();
        // The read-back on release fails: the file stays.
        h.inject_fault(crate::mock::FaultOp::Read, Some(LOCK), 1, libc::EIO);
        drop(l);
        assert!(fs.exists(Path::new(LOCK)));
        // Its token is gone with it, so the next run of this process takes it over.
        let again = HostLock::acquire_as(&*fs, 500).unwrap();
        assert_eq!(again.replaced_stale(), Some(500));
    }

    #[test]
    fn a_holder_judged_stale_does_not_remove_its_successor() {
        let h = host();
        let fs = h.fs();
        let old = HostLock::acquire_as(&*fs, 300).unwrap();
        // pid 300 is not in the process list: another run takes over.
        let new = HostLock::acquire_as(&*fs, 400).unwrap();
        assert_eq!(new.replaced_stale(), Some(300));
        drop(old);
        assert!(fs.read_string(Path::new(LOCK)).unwrap().starts_with("400 "));
        drop(new);
        assert!(!fs.exists(Path::new(LOCK)));
    }

    #[test]
    fn an_unwritable_run_directory_is_a_clear_error() {
        let h = host();
        let fs = h.fs();
        fs.create_dir_all(Path::new("/run")).unwrap();
        fs.write(Path::new("/run/vfiotool"), b"a file in the way").unwrap();
        let e = HostLock::acquire_as(&*fs, 1).unwrap_err().to_string();
        assert!(e.contains("/run/vfiotool"), "{e}");
    }
}
