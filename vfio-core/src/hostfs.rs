//! The host seam: the filesystem view of the host (sysfs, procfs, `/dev`, `/etc`).
//!
//! Everything the toolkit learns about or changes on the host outside VFIO ioctls goes
//! through [`HostFs`]. Paths are the host's absolute paths (`/sys/bus/pci/devices`);
//! an implementation may serve them from anywhere: [`RealFs`] re-roots them under a
//! directory (`/` for the live host, or a captured tree from `vfiotool snapshot`), and
//! the mock's simulated sysfs serves them from memory and reacts to writes as Linux does.

use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};

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
    /// Anything else.
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

/// The filesystem view of a host. Paths are absolute host paths.
pub trait HostFs: Send + Sync + fmt::Debug {
    /// Reads a whole file. Use [`HostFs::read_at`] for files that may be large (`rom`,
    /// `resource0`).
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read.
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes `data` to a file as one `write` call, creating a regular file outside
    /// sysfs if it does not exist (sysfs attributes react to the write).
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// The target of a symbolic link.
    fn read_link(&self, path: &Path) -> io::Result<PathBuf>;
    /// The names in a directory, sorted.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Metadata of a path, without following a final symbolic link.
    fn metadata(&self, path: &Path) -> io::Result<NodeMeta>;
    /// Changes the owner of a path (`chown`).
    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()>;
    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Loads a kernel module (`modprobe NAME`).
    fn modprobe(&self, module: &str) -> io::Result<()>;

    /// Creates a regular file holding `data`, failing with `AlreadyExists` when the path
    /// exists (`O_CREAT | O_EXCL`): the primitive of lock files. The default refuses.
    fn create_new(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let _ = data;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("cannot create {} exclusively on this host view", path.display()),
        ))
    }

    /// Removes a regular file (outside sysfs). The default refuses.
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("cannot remove {} on this host view", path.display()),
        ))
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

/// The host's filesystem, with every absolute path re-rooted under `root`.
#[derive(Debug, Clone)]
pub struct RealFs {
    root: PathBuf,
}

impl Default for RealFs {
    fn default() -> Self {
        RealFs::new("/")
    }
}

impl RealFs {
    /// A view of the filesystem under `root` (`/` for the live host).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RealFs { root: root.into() }
    }

    /// The directory host paths are re-rooted under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Maps a host path to the real path under the root. `..` components are refused so
    /// that a captured tree cannot point outside its root.
    pub fn resolve(&self, path: &Path) -> io::Result<PathBuf> {
        let mut out = self.root.clone();
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
        Ok(out)
    }
}

impl HostFs for RealFs {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(self.resolve(path)?)
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(self.resolve(path)?)?;
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
        use std::io::Write;
        let real = self.resolve(path)?;
        let mut f =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(real)?;
        // sysfs attributes take a store as one write(2) call.
        let n = f.write(data)?;
        if n != data.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short write"));
        }
        Ok(())
    }

    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        std::fs::read_link(self.resolve(path)?)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = std::fs::read_dir(self.resolve(path)?)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    }

    fn metadata(&self, path: &Path) -> io::Result<NodeMeta> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let m = std::fs::symlink_metadata(self.resolve(path)?)?;
        let ft = m.file_type();
        let kind = if ft.is_symlink() {
            NodeKind::Symlink
        } else if ft.is_dir() {
            NodeKind::Dir
        } else if ft.is_file() {
            NodeKind::File
        } else if ft.is_char_device() {
            NodeKind::CharDevice
        } else {
            NodeKind::Other
        };
        Ok(NodeMeta { kind, mode: m.mode() & 0o7777, uid: m.uid(), gid: m.gid() })
    }

    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        std::os::unix::fs::chown(self.resolve(path)?, uid, gid)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(self.resolve(path)?)
    }

    fn create_new(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let mut f =
            std::fs::OpenOptions::new().write(true).create_new(true).open(self.resolve(path)?)?;
        f.write_all(data)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(self.resolve(path)?)
    }

    fn modprobe(&self, module: &str) -> io::Result<()> {
        if self.root != Path::new("/") {
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

    #[test]
    fn reroots_paths_and_refuses_parent_components() {
        let fs = RealFs::new("/tmp/x");
        assert_eq!(fs.resolve(Path::new("/sys/bus/pci")).unwrap(), Path::new("/tmp/x/sys/bus/pci"));
        assert!(fs.resolve(Path::new("/sys/../etc/shadow")).is_err());
    }

    #[test]
    fn reads_writes_and_lists_under_a_root() {
        let dir = tempfile::tempdir().unwrap();
        let fs = RealFs::new(dir.path());
        fs.create_dir_all(Path::new("/sys/a")).unwrap();
        fs.write(Path::new("/sys/a/attr"), b"0x1234\n").unwrap();
        assert_eq!(fs.read_string(Path::new("/sys/a/attr")).unwrap(), "0x1234");
        let mut buf = [0u8; 4];
        assert_eq!(fs.read_at(Path::new("/sys/a/attr"), 2, &mut buf).unwrap(), 4);
        assert_eq!(&buf, b"1234");
        assert_eq!(fs.read_dir(Path::new("/sys/a")).unwrap(), vec!["attr"]);
        assert_eq!(fs.metadata(Path::new("/sys/a")).unwrap().kind, NodeKind::Dir);
        assert!(!fs.exists(Path::new("/sys/b")));
    }

    #[test]
    fn create_new_is_exclusive_and_remove_file_removes() {
        let dir = tempfile::tempdir().unwrap();
        let fs = RealFs::new(dir.path());
        let p = Path::new("/lock");
        fs.create_new(p, b"1\n").unwrap();
        assert_eq!(fs.create_new(p, b"2\n").unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs.read(p).unwrap(), b"1\n");
        fs.remove_file(p).unwrap();
        assert!(!fs.exists(p));
        assert_eq!(fs.remove_file(p).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn modprobe_refuses_a_captured_tree() {
        let fs = RealFs::new("/tmp/captured");
        assert_eq!(fs.modprobe("vfio-pci").unwrap_err().kind(), io::ErrorKind::Unsupported);
    }
}
