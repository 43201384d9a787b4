//! Plain files and directories outside the kernel's filesystems (`/etc`, `/run`, `/usr`,
//! `/var`...): the writable regular-file store of [`SysState::files`](super::SysState),
//! with permission bits, created directories and locks. sysfs, procfs and `/dev` refuse
//! new files (`EACCES`), as the kernel does.

use std::collections::BTreeSet;
use std::io;
use std::path::{Component, Path, PathBuf};

use super::{err, is_kernel_path, node_at, normalize, Attr, Node};
use crate::hostfs::HeldLock;
use crate::mock::{HostState, MockHost};

/// A plain file or a directory holding some, at canonical path `p`.
pub(super) fn plain(st: &HostState, p: &Path) -> Option<Node> {
    if st.sys.files.contains_key(p) {
        let mode = st.sys.file_modes.get(p).copied().unwrap_or(0o644);
        return Some(Node::File(Attr::Plain(p.to_path_buf()), mode));
    }
    let is_dir = st.sys.dirs.contains(p)
        || st.sys.files.keys().chain(st.sys.dirs.iter()).any(|f| f.starts_with(p) && f != p);
    if !is_dir || is_kernel_path(p) {
        return None;
    }
    let mut names: BTreeSet<String> = BTreeSet::new();
    for f in st.sys.files.keys().chain(st.sys.dirs.iter()) {
        if let Ok(rest) = f.strip_prefix(p) {
            if let Some(Component::Normal(n)) = rest.components().next() {
                names.insert(n.to_string_lossy().into_owned());
            }
        }
    }
    Some(Node::Dir(names.into_iter().collect()))
}

/// The content of the plain file at canonical path `p`.
pub(super) fn read(st: &HostState, p: &Path) -> io::Result<Vec<u8>> {
    st.sys.files.get(p).cloned().ok_or_else(|| err(libc::ENOENT))
}

/// Stores `data` into the existing plain file at canonical path `p`.
pub(super) fn write(st: &mut HostState, p: PathBuf, data: &[u8]) {
    st.sys.files.insert(p, data.to_vec());
}

/// Where a regular file may be created: outside the kernel's filesystems (EACCES
/// there), in an existing directory (ENOENT otherwise).
fn plain_file_path(st: &HostState, path: &Path) -> io::Result<PathBuf> {
    let p = normalize(path);
    if is_kernel_path(&p) {
        return Err(err(libc::EACCES));
    }
    let parent = p.parent().unwrap_or(Path::new("/"));
    if !matches!(node_at(st, parent), Some(Node::Dir(_))) {
        return Err(err(libc::ENOENT));
    }
    Ok(p)
}

/// [`HostFs::create_dir_all`](crate::hostfs::HostFs::create_dir_all).
pub(super) fn create_dir_all(st: &mut HostState, path: &Path) -> io::Result<()> {
    let p = normalize(path);
    if is_kernel_path(&p) {
        return match node_at(st, &p) {
            Some(Node::Dir(_)) => Ok(()),
            _ => Err(err(libc::EACCES)),
        };
    }
    if p.ancestors().any(|a| st.sys.files.contains_key(a)) {
        return Err(err(libc::ENOTDIR));
    }
    st.sys.dirs.insert(p);
    Ok(())
}

/// [`HostFs::replace_file`](crate::hostfs::HostFs::replace_file).
pub(super) fn replace(st: &mut HostState, path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let p = plain_file_path(st, path)?;
    if matches!(node_at(st, &p), Some(Node::Dir(_))) {
        return Err(err(libc::EISDIR));
    }
    st.sys.files.insert(p.clone(), data.to_vec());
    st.sys.file_modes.insert(p, mode);
    st.sys.writes.push(path.to_path_buf());
    Ok(())
}

/// [`HostFs::remove_file`](crate::hostfs::HostFs::remove_file).
pub(super) fn remove(st: &mut HostState, path: &Path) -> io::Result<()> {
    let p = normalize(path);
    if is_kernel_path(&p) {
        return Err(err(libc::EACCES));
    }
    match st.sys.files.remove(&p) {
        Some(_) => {
            st.sys.file_modes.remove(&p);
            Ok(())
        }
        None if node_at(st, &p).is_some() => Err(err(libc::EISDIR)),
        None => Err(err(libc::ENOENT)),
    }
}

/// [`HostFs::lock`](crate::hostfs::HostFs::lock): the file holds the holder's pid.
pub(super) fn lock(host: &MockHost, path: &Path) -> io::Result<Box<dyn HeldLock>> {
    let mut st = host.state();
    let p = plain_file_path(&st, path)?;
    if !st.sys.locks.insert(p.clone()) {
        return Err(io::Error::from(io::ErrorKind::WouldBlock));
    }
    st.sys.files.insert(p.clone(), format!("{}\n", std::process::id()).into_bytes());
    Ok(Box::new(SimLock { host: host.clone(), path: p }))
}

/// A held simulated lock; released on drop.
#[derive(Debug)]
struct SimLock {
    host: MockHost,
    path: PathBuf,
}

impl HeldLock for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.host.state().sys.locks.remove(&self.path);
    }
}
