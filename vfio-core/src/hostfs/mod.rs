//! The host seam: the filesystem view of the host (sysfs, procfs, `/dev`, `/etc`, `/run`).
//!
//! Everything the toolkit learns about or changes on the host outside VFIO ioctls goes
//! through [`HostFs`]. Paths are the host's absolute paths (`/sys/bus/pci/devices`);
//! an implementation may serve them from anywhere: [`RealFs`] confines them to a root
//! directory (`/` for the live host, or a captured tree from `vfiotool snapshot`), and
//! the mock's simulated sysfs serves them from memory and reacts to writes as Linux does.
//!
//! The contract every implementation keeps, so that a hostile tree cannot hurt the host:
//!
//! - **confined**: no path, link target or `..` leads outside the view's root;
//! - **bounded**: reads stop at a size cap ([`HostFs::read_limited`], [`READ_CAP`] for
//!   [`HostFs::read`]) and directory listings at [`DIR_CAP`] names;
//! - **never blocking**: only regular files are read or written; a FIFO, a socket or a
//!   device node is refused at once instead of hanging the caller;
//! - **atomic files**: regular files the toolkit owns (the bind journal, boot
//!   configuration) are replaced as a whole ([`HostFs::replace_file`]: temporary file,
//!   `fsync`, `rename`, `fsync` of the directory), so a crash leaves the old or the new
//!   content, never a torn one;
//! - **one lock**: [`HostFs::lock`] is an exclusive `flock`, released by the kernel when
//!   its holder dies, so it can never be held twice nor left stale.

mod device;
mod mdev;
mod real;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub use device::{
    is_bridge_class, link_name, parse_hex, SysfsDevice, DMA_SAFE_DRIVERS, PCI_DEVICES,
};
pub use mdev::{is_uuid, parse_uuid, SysfsMdev, MDEV_BUS, MDEV_DEVICES};
pub use real::RealFs;

/// The size cap of [`HostFs::read`]: sysfs attributes are one page, the largest file
/// read whole (`/proc/cpuinfo` of a large host, `/proc/mounts` of a container host) far
/// below this. Larger files are refused with [`io::ErrorKind::FileTooLarge`].
pub const READ_CAP: usize = 4 << 20;

/// The most names [`HostFs::read_dir`] returns; a larger directory is refused.
pub const DIR_CAP: usize = 200_000;

/// What kind of node a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A regular file (sysfs attributes are files).
    File,
    /// A directory.
    Dir,
    /// A symbolic link (not followed).
    Symlink,
    /// A character device node (`/dev/vfio/N`).
    CharDevice,
    /// Anything else (a FIFO, a socket, a block device).
    Other,
}

/// The metadata the toolkit uses: kind, permission bits and owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeMeta {
    /// What kind of node.
    pub kind: NodeKind,
    /// Permission bits (`0o660`).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
}

/// A held [`HostFs::lock`]; dropping it releases the lock.
pub trait HeldLock: Send + Sync + fmt::Debug {}

/// The filesystem view of a host. Paths are absolute host paths.
pub trait HostFs: Send + Sync + fmt::Debug {
    /// Reads a whole regular file of at most `max` bytes; a larger one fails with
    /// [`io::ErrorKind::FileTooLarge`], anything but a regular file (a FIFO, a device
    /// node) with [`io::ErrorKind::InvalidInput`], without blocking.
    fn read_limited(&self, path: &Path, max: usize) -> io::Result<Vec<u8>>;
    /// Reads up to `buf.len()` bytes at `offset` of a regular file; returns how many were
    /// read.
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Stores `data` into an existing attribute as one `write` call (sysfs attributes
    /// react to the write). Never creates a file: regular files are written with
    /// [`HostFs::replace_file`].
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Replaces (or creates) a regular file atomically with `data` and permission bits
    /// `mode`: a crash leaves either the old or the new content. A link at `path` is
    /// replaced, never followed.
    fn replace_file(&self, path: &Path, data: &[u8], mode: u32) -> io::Result<()>;
    /// The target of a symbolic link.
    fn read_link(&self, path: &Path) -> io::Result<PathBuf>;
    /// The names in a directory, sorted (at most [`DIR_CAP`]).
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Metadata of a path, without following a final symbolic link.
    fn metadata(&self, path: &Path) -> io::Result<NodeMeta>;
    /// Changes the owner of a path (`chown`) without following a final symbolic link:
    /// a link there is refused.
    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()>;
    /// Creates a directory and its parents; the directories it creates get `mode`.
    fn create_dir_all(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// Removes a regular file or a link (never what a link points to).
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Takes the exclusive lock on the file `path` (created with mode 0600 when missing)
    /// without waiting: [`io::ErrorKind::WouldBlock`] when another holder has it. The
    /// lock ends when the returned guard is dropped or its process dies.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn HeldLock>>;
    /// Loads a kernel module (`modprobe NAME`).
    fn modprobe(&self, module: &str) -> io::Result<()>;

    /// Reads a whole file of at most [`READ_CAP`] bytes; see [`HostFs::read_limited`].
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.read_limited(path, READ_CAP)
    }

    /// Reads a text attribute with surrounding white space removed.
    fn read_string(&self, path: &Path) -> io::Result<String> {
        let bytes = self.read(path)?;
        Ok(String::from_utf8_lossy(&bytes).trim().to_string())
    }

    /// Whether a path exists (a dangling link counts as existing).
    fn exists(&self, path: &Path) -> bool {
        self.metadata(path).is_ok()
    }
}

/// The error of a read past its cap.
pub fn too_large(path: &Path, max: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!("{} is larger than {max} bytes", path.display()),
    )
}

/// The error of a read or write of something that is not a regular file.
pub fn not_regular(path: &Path, kind: NodeKind) -> io::Error {
    let what = match kind {
        NodeKind::Dir => "a directory",
        NodeKind::Symlink => "a symbolic link",
        NodeKind::CharDevice => "a device node",
        NodeKind::File => "a regular file",
        NodeKind::Other => "a FIFO, socket or block device",
    };
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{} is {what}, not a regular file", path.display()),
    )
}

/// The error of a directory with more than [`DIR_CAP`] names.
pub fn too_many_names(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!("{} has more than {DIR_CAP} entries", path.display()),
    )
}

/// A path made absolute and resolved lexically: `..` drops the component before it
/// (never above `/`), `.` is dropped. Links are not followed.
#[cfg(feature = "host")]
pub(crate) fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}
