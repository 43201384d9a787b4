//! Crashes and split views for testing code that changes the host.
//!
//! [`CrashFs`] wraps any host view and "kills" the process at its `n`-th change: that
//! change and every operation after it fail, reads included, as if the process had died
//! there. Nothing the dying run would do afterwards (a rollback, a journal update)
//! reaches the host; locks it held are released when its guards drop, as the kernel
//! releases a dead process's `flock`. A test then runs recovery (`restore --all`) on the
//! unwrapped view. [`CrashFs::changes`] counts the changes of a clean run, so a test can
//! kill at every one in turn.
//!
//! [`SplitFs`] serves sysfs, procfs and `/dev` from one view (the simulated host) and
//! every other path (`/run`, `/etc`) from another, usually a [`RealFs`] on a temporary
//! directory: the journal and configuration files then take the real filesystem path
//! (temporary file, `fsync`, `rename`) that a simulated filesystem would hide.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use crate::hostfs::{HeldLock, HostFs, NodeMeta, RealFs};

/// A host view that dies at its `n`-th change; see the module documentation.
#[derive(Debug)]
pub struct CrashFs {
    inner: Arc<dyn HostFs>,
    at: u32,
    seen: AtomicU32,
    dead: AtomicBool,
}

impl CrashFs {
    /// Wraps `inner`, dying at change `at` (1-based; 0 or past the last change: never).
    pub fn new(inner: Arc<dyn HostFs>, at: u32) -> Self {
        CrashFs { inner, at, seen: AtomicU32::new(0), dead: AtomicBool::new(false) }
    }

    /// How many changes were attempted (the count of a run that did not die).
    pub fn changes(&self) -> u32 {
        self.seen.load(Ordering::SeqCst)
    }

    /// Whether the simulated process died.
    pub fn died(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    fn dead_err() -> io::Error {
        io::Error::other("killed (simulated crash)")
    }

    fn alive(&self) -> io::Result<()> {
        if self.died() {
            Err(Self::dead_err())
        } else {
            Ok(())
        }
    }

    /// Counts a change; the `at`-th kills.
    fn change(&self) -> io::Result<()> {
        self.alive()?;
        let n = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.at {
            self.dead.store(true, Ordering::SeqCst);
            return Err(Self::dead_err());
        }
        Ok(())
    }
}

impl HostFs for CrashFs {
    fn read_limited(&self, path: &Path, max: usize) -> io::Result<Vec<u8>> {
        self.alive()?;
        self.inner.read_limited(path, max)
    }
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.alive()?;
        self.inner.read_at(path, offset, buf)
    }
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.change()?;
        self.inner.write(path, data)
    }
    fn replace_file(&self, path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
        self.change()?;
        self.inner.replace_file(path, data, mode)
    }
    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        self.alive()?;
        self.inner.read_link(path)
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.alive()?;
        self.inner.read_dir(path)
    }
    fn metadata(&self, path: &Path) -> io::Result<NodeMeta> {
        self.alive()?;
        self.inner.metadata(path)
    }
    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        self.change()?;
        self.inner.chown(path, uid, gid)
    }
    fn create_dir_all(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.alive()?;
        self.inner.create_dir_all(path, mode)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.change()?;
        self.inner.remove_file(path)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn HeldLock>> {
        self.alive()?;
        self.inner.lock(path)
    }
    fn modprobe(&self, module: &str) -> io::Result<()> {
        self.change()?;
        self.inner.modprobe(module)
    }
}

/// Kernel filesystems from one view, everything else from another; see the module
/// documentation.
#[derive(Debug, Clone)]
pub struct SplitFs {
    kernel: Arc<dyn HostFs>,
    files: Arc<dyn HostFs>,
}

impl SplitFs {
    /// `/sys`, `/proc` and `/dev` from `kernel`, the rest from `files`.
    pub fn new(kernel: Arc<dyn HostFs>, files: Arc<dyn HostFs>) -> Self {
        SplitFs { kernel, files }
    }

    /// `/sys`, `/proc` and `/dev` from `kernel`, the rest from a real directory, seeded
    /// with the plain files `kernel` serves there now (`/etc/passwd`, ...).
    pub fn with_real_files(kernel: &crate::mock::MockHost, dir: &Path) -> io::Result<Self> {
        let real = RealFs::new(dir);
        let files: Vec<(PathBuf, Vec<u8>)> =
            kernel.state().sys.files.iter().map(|(p, d)| (p.clone(), d.clone())).collect();
        for (p, d) in files {
            if let Some(parent) = p.parent() {
                real.create_dir_all(parent, 0o755)?;
            }
            real.replace_file(&p, &d, 0o644)?;
        }
        Ok(SplitFs::new(kernel.fs(), Arc::new(real)))
    }

    fn pick(&self, p: &Path) -> &dyn HostFs {
        if p.starts_with("/sys") || p.starts_with("/proc") || p.starts_with("/dev") {
            &*self.kernel
        } else {
            &*self.files
        }
    }
}

impl HostFs for SplitFs {
    fn read_limited(&self, path: &Path, max: usize) -> io::Result<Vec<u8>> {
        self.pick(path).read_limited(path, max)
    }
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.pick(path).read_at(path, offset, buf)
    }
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.pick(path).write(path, data)
    }
    fn replace_file(&self, path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
        self.pick(path).replace_file(path, data, mode)
    }
    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        self.pick(path).read_link(path)
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.pick(path).read_dir(path)
    }
    fn metadata(&self, path: &Path) -> io::Result<NodeMeta> {
        self.pick(path).metadata(path)
    }
    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        self.pick(path).chown(path, uid, gid)
    }
    fn create_dir_all(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.pick(path).create_dir_all(path, mode)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.pick(path).remove_file(path)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn HeldLock>> {
        self.pick(path).lock(path)
    }
    fn modprobe(&self, module: &str) -> io::Result<()> {
        self.kernel.modprobe(module)
    }
}
