//! [`RealFs`]: the host's filesystem, confined to a root directory.
//!
//! Every path is opened with `openat2(2)` and `RESOLVE_IN_ROOT` relative to the root: a
//! `..` or an absolute link target inside the tree stays inside it, as if the process had
//! `chroot`ed there, so a captured or hostile tree cannot make the toolkit read, write or
//! `chown` anything outside it. Kernels older than 5.6 have no `openat2`: the live host
//! (root `/`, where there is nothing outside to escape to) falls back to `openat`, and a
//! tree under another root is refused with a clear error.

use std::ffi::{CString, OsStr};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{
    not_regular, too_large, too_many_names, HeldLock, HostFs, NodeKind, NodeMeta, DIR_CAP,
};

/// The host's filesystem, with every absolute path confined to `root`.
#[derive(Debug, Clone)]
pub struct RealFs {
    root: PathBuf,
    /// `RESOLVE_*` flags added to every lookup ([`RealFs::no_symlinks`]).
    resolve: u64,
}

impl Default for RealFs {
    fn default() -> Self {
        RealFs::new("/")
    }
}

fn errno() -> io::Error {
    io::Error::last_os_error()
}

/// Runs a libc call returning -1 on error, retrying on `EINTR`.
fn cvt(mut f: impl FnMut() -> libc::c_long) -> io::Result<libc::c_long> {
    loop {
        let r = f();
        if r >= 0 {
            return Ok(r);
        }
        let e = errno();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
}

fn kind_of(st: &libc::stat) -> NodeKind {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => NodeKind::File,
        libc::S_IFDIR => NodeKind::Dir,
        libc::S_IFLNK => NodeKind::Symlink,
        libc::S_IFCHR => NodeKind::CharDevice,
        _ => NodeKind::Other,
    }
}

fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: `st` is a plain C struct that fstat fills; `fd` is an open descriptor.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; fstat writes at most size_of::<stat>() bytes into `st`.
    cvt(|| unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } as libc::c_long)?;
    Ok(st)
}

/// Takes ownership of a descriptor a successful call returned.
fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open-like call and is owned by no one
    // else.
    unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) }
}

/// The flock guard: the lock lives as long as the descriptor.
#[derive(Debug)]
struct Flock(#[allow(dead_code)] OwnedFd);

impl HeldLock for Flock {}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl RealFs {
    /// A view of the filesystem under `root` (`/` for the live host).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RealFs { root: root.into(), resolve: 0 }
    }

    /// The same view, following no symbolic link at all (`RESOLVE_NO_SYMLINKS`): a path
    /// with a link in it fails with `ELOOP`, a final link is still read, replaced or
    /// removed as itself. For a tree this process writes and nobody else may redirect
    /// (`vfiotool snapshot`).
    pub fn no_symlinks(mut self) -> Self {
        self.resolve |= libc::RESOLVE_NO_SYMLINKS;
        self
    }

    /// Makes a symbolic link at the host path `link` holding `target` as given (not
    /// resolved, not checked). The directory of `link` is opened confined to the root;
    /// an existing `link` fails with [`io::ErrorKind::AlreadyExists`] and is left alone.
    pub fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        let (dir, name) = self.parent(link, libc::O_PATH)?;
        let target = cstr(target.as_os_str())?;
        // SAFETY: `target` and `name` are valid NUL-terminated strings for the duration of
        // the call; `dir` is an open directory descriptor.
        cvt(|| unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }
            as libc::c_long)?;
        Ok(())
    }

    /// The directory host paths are confined to.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn is_live(&self) -> bool {
        self.root == Path::new("/")
    }

    /// The host path as a path relative to the root (`.` for `/`). `..` components are
    /// refused: the toolkit never asks for them, so one is hostile input.
    fn relative(path: &Path) -> io::Result<CString> {
        let mut out = PathBuf::new();
        for c in path.components() {
            match c {
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                Component::Normal(n) => out.push(n),
                Component::ParentDir => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("path {} climbs with '..'", path.display()),
                    ))
                }
            }
        }
        if out.as_os_str().is_empty() {
            out.push(".");
        }
        cstr(out.as_os_str())
    }

    /// Where a host path lies under the root, for messages and for tools that hand the
    /// path to another program. Not confined: opening it may follow links out of the
    /// root; the methods of [`HostFs`] never do.
    pub fn display_path(&self, path: &Path) -> io::Result<PathBuf> {
        let rel = Self::relative(path)?;
        Ok(self.root.join(OsStr::from_bytes(rel.as_bytes())))
    }

    fn open_root(&self) -> io::Result<OwnedFd> {
        let root = cstr(self.root.as_os_str())?;
        // SAFETY: `root` is a valid NUL-terminated string for the duration of the call.
        let fd = cvt(|| unsafe {
            libc::open(root.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        } as libc::c_long)?;
        Ok(owned(fd))
    }

    /// Opens `path` confined to the root.
    fn open(&self, path: &Path, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
        let root = self.open_root()?;
        let rel = Self::relative(path)?;
        // SAFETY: open_how is a plain C struct; all-zero is its "no options" value.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (flags | libc::O_CLOEXEC) as u64;
        how.mode = if flags & libc::O_CREAT != 0 { mode as u64 } else { 0 };
        how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS | self.resolve;
        let mut tries = 0;
        loop {
            // SAFETY: `rel` and `how` outlive the call; the size passed is `how`'s size.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    root.as_raw_fd(),
                    rel.as_ptr(),
                    &how as *const libc::open_how,
                    std::mem::size_of::<libc::open_how>(),
                )
            };
            if r >= 0 {
                return Ok(owned(r));
            }
            let e = errno();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                // A concurrent rename made the kernel unsure the walk stayed inside.
                Some(libc::EAGAIN) if tries < 16 => tries += 1,
                Some(libc::ENOSYS) | Some(libc::EPERM) if self.is_live() => {
                    return self.open_unconfined(&root, &rel, flags, mode)
                }
                Some(libc::ENOSYS) => {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!(
                            "this kernel has no openat2 (Linux 5.6 or later), which confining \
                             paths to {} needs; use the tree on a newer kernel",
                            self.root.display()
                        ),
                    ))
                }
                _ => return Err(e),
            }
        }
    }

    /// `openat` from the root, for the live host on kernels without `openat2`.
    fn open_unconfined(
        &self,
        root: &OwnedFd,
        rel: &CString,
        flags: libc::c_int,
        mode: u32,
    ) -> io::Result<OwnedFd> {
        // SAFETY: `rel` is a valid NUL-terminated string for the duration of the call.
        let fd = cvt(|| unsafe {
            libc::openat(root.as_raw_fd(), rel.as_ptr(), flags | libc::O_CLOEXEC, mode)
        } as libc::c_long)?;
        Ok(owned(fd))
    }

    /// The parent directory of `path` (opened with `flags`) and the last component.
    fn parent(&self, path: &Path, flags: libc::c_int) -> io::Result<(OwnedFd, CString)> {
        let name = path.file_name().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{} names no file", path.display()))
        })?;
        let dir =
            self.open(path.parent().unwrap_or(Path::new("/")), flags | libc::O_DIRECTORY, 0)?;
        Ok((dir, cstr(name)?))
    }

    /// Opens a regular file for reading, refusing anything else before it is opened for
    /// reading (a FIFO would block, a device node could be endless).
    fn open_regular(&self, path: &Path, flags: libc::c_int) -> io::Result<std::fs::File> {
        let nofollow = flags & libc::O_NOFOLLOW;
        let probe = self.open(path, libc::O_PATH | nofollow, 0)?;
        let kind = kind_of(&fstat(&probe)?);
        if kind != NodeKind::File {
            return Err(not_regular(path, kind));
        }
        let fd = self.open(path, flags | libc::O_NONBLOCK | libc::O_NOCTTY, 0)?;
        let kind = kind_of(&fstat(&fd)?);
        if kind != NodeKind::File {
            return Err(not_regular(path, kind));
        }
        Ok(std::fs::File::from(fd))
    }
}

impl HostFs for RealFs {
    fn read_limited(&self, path: &Path, max: usize) -> io::Result<Vec<u8>> {
        let f = self.open_regular(path, libc::O_RDONLY)?;
        let mut out = Vec::new();
        f.take(max as u64 + 1).read_to_end(&mut out)?;
        if out.len() > max {
            return Err(too_large(path, max));
        }
        Ok(out)
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let f = self.open_regular(path, libc::O_RDONLY)?;
        let mut done = 0;
        while done < buf.len() {
            match f.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut f = self.open_regular(path, libc::O_WRONLY | libc::O_TRUNC | libc::O_NOFOLLOW)?;
        // sysfs attributes take a store as one write(2) call.
        let n = f.write(data)?;
        if n != data.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short write"));
        }
        Ok(())
    }

    fn replace_file(&self, path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
        let (dir, name) = self.parent(path, libc::O_RDONLY)?;
        let tmp = cstr(OsStr::new(&format!(
            ".{}.{}.{}.tmp",
            path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        )))?;
        let flags =
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: `tmp` is a valid NUL-terminated string for the duration of the call.
        let fd = owned(cvt(|| unsafe {
            libc::openat(dir.as_raw_fd(), tmp.as_ptr(), flags, mode as libc::c_uint)
        } as libc::c_long)?);
        let unlink_tmp = || {
            // SAFETY: `tmp` is a valid NUL-terminated string for the duration of the call.
            unsafe { libc::unlinkat(dir.as_raw_fd(), tmp.as_ptr(), 0) };
        };
        let mut f = std::fs::File::from(fd);
        let written = (|| {
            // The umask must not loosen nor tighten what the caller asked for.
            // SAFETY: `f` is an open descriptor.
            cvt(|| unsafe { libc::fchmod(f.as_raw_fd(), mode) } as libc::c_long)?;
            f.write_all(data)?;
            f.sync_all()?;
            // SAFETY: both names are valid NUL-terminated strings during the call.
            cvt(|| unsafe {
                libc::renameat(dir.as_raw_fd(), tmp.as_ptr(), dir.as_raw_fd(), name.as_ptr())
            } as libc::c_long)
        })();
        if let Err(e) = written {
            unlink_tmp();
            return Err(e);
        }
        // SAFETY: `dir` is an open directory descriptor.
        cvt(|| unsafe { libc::fsync(dir.as_raw_fd()) } as libc::c_long)?;
        Ok(())
    }

    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        let fd = self.open(path, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
        let empty = c"";
        // SAFETY: `buf` is writable for its whole length; the empty path with an O_PATH
        // descriptor of a link reads that link.
        let n = cvt(|| unsafe {
            libc::readlinkat(fd.as_raw_fd(), empty.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        } as libc::c_long)? as usize;
        if n >= buf.len() {
            return Err(too_large(path, libc::PATH_MAX as usize));
        }
        buf.truncate(n);
        Ok(PathBuf::from(OsStr::from_bytes(&buf)))
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let fd = self.open(path, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        let dir = nix::dir::Dir::from_fd(std::os::fd::IntoRawFd::into_raw_fd(fd))
            .map_err(io::Error::from)?;
        let mut names = Vec::new();
        for e in dir {
            let e = e.map_err(io::Error::from)?;
            let n = e.file_name().to_bytes();
            if n == b"." || n == b".." {
                continue;
            }
            if names.len() == DIR_CAP {
                return Err(too_many_names(path));
            }
            names.push(String::from_utf8_lossy(n).into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn metadata(&self, path: &Path) -> io::Result<NodeMeta> {
        let fd = self.open(path, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        let st = fstat(&fd)?;
        Ok(NodeMeta {
            kind: kind_of(&st),
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
        })
    }

    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        let fd = self.open(path, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        if kind_of(&fstat(&fd)?) == NodeKind::Symlink {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is a symbolic link; refusing to change its owner", path.display()),
            ));
        }
        let (u, g) = (uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX));
        let empty = c"";
        // SAFETY: the empty path with AT_EMPTY_PATH names the open descriptor itself.
        cvt(
            || unsafe { libc::fchownat(fd.as_raw_fd(), empty.as_ptr(), u, g, libc::AT_EMPTY_PATH) }
                as libc::c_long,
        )?;
        Ok(())
    }

    fn create_dir_all(&self, path: &Path, mode: u32) -> io::Result<()> {
        let mut cur = PathBuf::from("/");
        for c in path.components() {
            let Component::Normal(n) = c else { continue };
            cur.push(n);
            match self.open(&cur, libc::O_PATH | libc::O_DIRECTORY, 0) {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            let (dir, name) = self.parent(&cur, libc::O_PATH)?;
            // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
            let r =
                cvt(|| unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }
                    as libc::c_long);
            match r {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let (dir, name) = self.parent(path, libc::O_PATH)?;
        // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
        cvt(|| unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } as libc::c_long)?;
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn HeldLock>> {
        let flags = libc::O_RDWR | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_NONBLOCK;
        let fd = self.open(path, flags, 0o600)?;
        let kind = kind_of(&fstat(&fd)?);
        if kind != NodeKind::File {
            return Err(not_regular(path, kind));
        }
        // SAFETY: `fd` is an open descriptor.
        cvt(|| unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }
            as libc::c_long)?;
        // The holder's pid, for the message another run prints; the lock itself is the
        // flock, which the kernel drops when this process dies.
        let mut f = std::fs::File::from(fd);
        f.set_len(0)?;
        f.write_all(format!("{}\n", std::process::id()).as_bytes())?;
        Ok(Box::new(Flock(OwnedFd::from(f))))
    }

    fn modprobe(&self, module: &str) -> io::Result<()> {
        if !self.is_live() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "cannot load module {module} into a captured tree at {}",
                    self.root.display()
                ),
            ));
        }
        let out = std::process::Command::new("modprobe").arg(module).output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "modprobe {module}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn tree() -> (tempfile::TempDir, RealFs) {
        let dir = tempfile::tempdir().unwrap();
        let fs = RealFs::new(dir.path().join("root"));
        std::fs::create_dir(dir.path().join("root")).unwrap();
        (dir, fs)
    }

    #[test]
    fn refuses_parent_components() {
        let (_d, fs) = tree();
        let e = fs.read(Path::new("/sys/../etc/shadow")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(fs.display_path(Path::new("/a/../b")).is_err());
        assert_eq!(fs.display_path(Path::new("/sys/bus")).unwrap(), fs.root().join("sys/bus"));
    }

    #[test]
    fn reads_writes_and_lists_under_a_root() {
        let (_d, fs) = tree();
        fs.create_dir_all(Path::new("/sys/a"), 0o755).unwrap();
        fs.replace_file(Path::new("/sys/a/attr"), b"0x1234\n", 0o644).unwrap();
        assert_eq!(fs.read_string(Path::new("/sys/a/attr")).unwrap(), "0x1234");
        let mut buf = [0u8; 4];
        assert_eq!(fs.read_at(Path::new("/sys/a/attr"), 2, &mut buf).unwrap(), 4);
        assert_eq!(&buf, b"1234");
        fs.write(Path::new("/sys/a/attr"), b"1").unwrap();
        assert_eq!(fs.read_string(Path::new("/sys/a/attr")).unwrap(), "1");
        assert_eq!(fs.read_dir(Path::new("/sys/a")).unwrap(), vec!["attr"]);
        assert_eq!(fs.metadata(Path::new("/sys/a")).unwrap().kind, NodeKind::Dir);
        assert!(!fs.exists(Path::new("/sys/b")));
        // write stores into existing attributes only.
        assert_eq!(
            fs.write(Path::new("/sys/a/new"), b"1").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        fs.remove_file(Path::new("/sys/a/attr")).unwrap();
        assert!(!fs.exists(Path::new("/sys/a/attr")));
    }

    #[test]
    fn links_resolve_inside_the_root() {
        let (d, fs) = tree();
        let outside = d.path().join("outside");
        std::fs::write(&outside, b"secret").unwrap();
        let root = fs.root().to_path_buf();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        // An absolute link and a climbing relative link both resolve inside the root.
        symlink(&outside, root.join("etc/abs")).unwrap();
        symlink("../../../../../../outside", root.join("etc/rel")).unwrap();
        std::fs::write(root.join("outside"), b"inside").unwrap();
        assert_eq!(fs.read(Path::new("/etc/rel")).unwrap(), b"inside");
        assert_eq!(fs.read(Path::new("/etc/abs")).unwrap_err().kind(), io::ErrorKind::NotFound);
        // Writes through a final link are refused; replace_file replaces the link itself.
        symlink(&outside, root.join("etc/w")).unwrap();
        assert!(fs.write(Path::new("/etc/w"), b"x").is_err());
        fs.replace_file(Path::new("/etc/w"), b"mine", 0o600).unwrap();
        assert_eq!(std::fs::read(&outside).unwrap(), b"secret");
        assert_eq!(std::fs::read(root.join("etc/w")).unwrap(), b"mine");
        // A directory link out of the root does not lead out either.
        symlink(d.path(), root.join("up")).unwrap();
        assert!(fs.read(Path::new("/up/outside")).is_err());
        assert!(fs.replace_file(Path::new("/up/new"), b"x", 0o600).is_err());
        assert!(!d.path().join("new").exists());
        // chown refuses a link.
        symlink(&outside, root.join("etc/c")).unwrap();
        assert!(fs.chown(Path::new("/etc/c"), Some(0), Some(0)).is_err());
    }

    #[test]
    fn refuses_fifos_devices_and_huge_files_without_blocking() {
        let (_d, fs) = tree();
        let root = fs.root().to_path_buf();
        nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644))
            .unwrap();
        let e = fs.read(Path::new("/fifo")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        assert!(fs.write(Path::new("/fifo"), b"1").is_err());
        let mut b = [0u8; 4];
        assert!(fs.read_at(Path::new("/fifo"), 0, &mut b).is_err());
        symlink("/dev/zero", root.join("zero")).unwrap();
        assert!(fs.read(Path::new("/zero")).is_err());
        // A sparse file far past the cap is refused after reading the cap, not loaded.
        let big = std::fs::File::create(root.join("big")).unwrap();
        big.set_len(5 << 30).unwrap();
        let e = fs.read(Path::new("/big")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::FileTooLarge, "{e}");
        assert_eq!(
            fs.read_limited(Path::new("/big"), 10).unwrap_err().kind(),
            io::ErrorKind::FileTooLarge
        );
    }

    #[test]
    fn replace_file_sets_the_mode_whatever_the_umask() {
        let (_d, fs) = tree();
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        fs.replace_file(Path::new("/j"), b"[]", 0o600).unwrap();
        nix::sys::stat::umask(old);
        let m = std::fs::metadata(fs.root().join("j")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        // No temporary file is left behind.
        assert_eq!(fs.read_dir(Path::new("/")).unwrap(), vec!["j"]);
    }

    #[test]
    fn the_lock_is_exclusive_and_released_on_drop() {
        let (_d, fs) = tree();
        let l = fs.lock(Path::new("/lock")).unwrap();
        let e = fs.lock(Path::new("/lock")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(fs.read_string(Path::new("/lock")).unwrap(), std::process::id().to_string());
        drop(l);
        fs.lock(Path::new("/lock")).unwrap();
    }

    #[test]
    fn symlink_makes_a_link_inside_the_root_only() {
        let (d, fs) = tree();
        fs.create_dir_all(Path::new("/sys/bus/pci/devices"), 0o755).unwrap();
        let target = Path::new("../../../devices/pci0000:00/0000:00:04.0");
        let link = Path::new("/sys/bus/pci/devices/0000:00:04.0");
        fs.symlink(target, link).unwrap();
        assert_eq!(fs.read_link(link).unwrap(), target);
        assert_eq!(fs.metadata(link).unwrap().kind, NodeKind::Symlink);
        // An existing link (or file) is left as it is.
        let e = fs.symlink(Path::new("/etc"), link).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs.read_link(link).unwrap(), target);
        // A directory link out of the root leads back inside it: the link is made there.
        let root = fs.root().to_path_buf();
        symlink(d.path(), root.join("up")).unwrap();
        assert!(fs.symlink(Path::new("x"), Path::new("/up/made")).is_err());
        assert!(!d.path().join("made").exists());
        std::fs::create_dir(root.join("inner")).unwrap();
        symlink("/inner", root.join("to-inner")).unwrap();
        fs.symlink(Path::new("x"), Path::new("/to-inner/made")).unwrap();
        assert!(std::fs::symlink_metadata(root.join("inner/made")).unwrap().is_symlink());
        // Without links followed, a path through one is refused, a final link served.
        let strict = RealFs::new(&root).no_symlinks();
        let e = strict.symlink(Path::new("x"), Path::new("/to-inner/other")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
        assert!(strict.replace_file(Path::new("/to-inner/f"), b"x", 0o600).is_err());
        assert!(!root.join("inner/f").exists());
        assert_eq!(strict.read_link(Path::new("/to-inner")).unwrap(), Path::new("/inner"));
        strict.replace_file(Path::new("/to-inner"), b"file now", 0o600).unwrap();
        assert_eq!(std::fs::read(root.join("to-inner")).unwrap(), b"file now");
    }

    #[test]
    fn modprobe_refuses_a_captured_tree() {
        let fs = RealFs::new("/tmp/captured");
        assert_eq!(fs.modprobe("vfio-pci").unwrap_err().kind(), io::ErrorKind::Unsupported);
    }
}
