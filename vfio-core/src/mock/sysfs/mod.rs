//! The simulated sysfs, procfs, `/dev` and `/etc` of a [`MockHost`].
//!
//! [`SimFs`] serves, from the shared [`HostState`], the tree Linux shows under
//! `/sys/bus/pci`, `/sys/devices`, `/sys/kernel/iommu_groups`, `/sys/class/iommu`,
//! `/sys/module`, `/dev/vfio`, `/proc` and plain files elsewhere, and reacts to writes the
//! way the kernel does (`drivers/base/bus.c`, `drivers/pci/pci-driver.c`,
//! `drivers/pci/pci-sysfs.c`, `drivers/pci/iov.c`, `drivers/vfio/mdev/`):
//!
//! - `driver/unbind` releases the driver (`ENODEV` when the device is not bound to it;
//!   `EBUSY` while the device is open through VFIO, where Linux would block);
//! - `driver_override` only records the name (it never unbinds);
//! - `drivers_probe` binds a driverless device to its override if set, else to its
//!   native driver when that driver is registered;
//! - `drivers/X/bind` binds a device that X matches (the override wins over the id
//!   tables; `ENODEV` otherwise) and that has no driver yet (`EBUSY` otherwise);
//!   `new_id` adds a dynamic id and probes;
//! - `sriov_numvfs` is bounded by `sriov_totalvfs` (`ERANGE`), needs a driver
//!   (`ENOENT`), needs 0 between two non-zero values (`EBUSY`), and creates or removes
//!   the VF functions; unbinding a PF driver disables its VFs;
//! - `rom` reads only after `1` was written to it (`EINVAL` otherwise);
//! - `mdev_supported_types/T/create` takes a UUID, `remove` takes `1`; every parent
//!   (PCI or virtual) is a link in `/sys/class/mdev_bus`.
//!
//! Host-level facts (modules, command line, IOMMUs, mounts, routes, files) are described
//! by [`SysState`], reachable as [`HostState::sys`]. Faults are injected with
//! [`MockHost::inject`] (see [`Fault`](crate::mock::Fault)).
//!
//! Every path is answered by one subsystem module, asked in turn (`SUBSYSTEMS`): PCI
//! functions (`pci`), the driver core (`drivers`), SR-IOV (`sriov`), IOMMU groups and
//! the VFIO nodes (`iommu`), mediated devices (`mdev`), interfaces and disks (`class`),
//! procfs and modules (`proc`); what none claims is a plain file (`files`). A device's
//! own directory is shared the same way (`DEVICE_PARTS`). A module serves both the
//! reads and the writes of its files: a writable attribute carries the module's own
//! `Ctl`, which the module's `store` carries out.

mod class;
mod drivers;
mod files;
mod iommu;
mod mdev;
mod pci;
mod proc;
mod sriov;
mod state;
#[cfg(test)]
pub(super) mod tests;

pub use state::{SimBlock, SimIommu, SimMdevParent, SimNet, SimParent, SysState};

use std::fmt::Display;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::fault::check_fs;
use super::{FaultOp, HostState, MockHost};
use crate::hostfs::{normalize, not_regular, too_large, HeldLock, HostFs, NodeKind, NodeMeta};
use crate::pci::PciAddress;

impl MockHost {
    /// The simulated filesystem of this host.
    pub fn fs(&self) -> Arc<SimFs> {
        Arc::new(SimFs { host: self.clone() })
    }
}

/// The simulated filesystem view of a [`MockHost`]; see the module documentation.
#[derive(Debug, Clone)]
pub struct SimFs {
    host: MockHost,
}

/// What a canonical path is.
enum Node {
    Dir(Vec<String>),
    Link(PathBuf),
    File(Attr, u32),
    Char(u32),
}

/// A file and how it reads and writes.
enum Attr {
    Text(String),
    WriteOnly(Ctl),
    Rw(String, Ctl),
    Config(PciAddress),
    Rom(PciAddress),
    Resource,
    Plain(PathBuf),
}

/// The kernel reaction to a write, by the subsystem that reacts.
enum Ctl {
    Pci(pci::Ctl),
    Driver(drivers::Ctl),
    Sriov(sriov::Ctl),
    Mdev(mdev::Ctl),
    Module(proc::Ctl),
}

/// Wraps each subsystem's `Ctl` into [`Ctl`].
macro_rules! ctl_from {
    ($($module:ident => $variant:ident),*) => {$(
        impl From<$module::Ctl> for Ctl {
            fn from(c: $module::Ctl) -> Self {
                Ctl::$variant(c)
            }
        }
    )*};
}

ctl_from!(pci => Pci, drivers => Driver, sriov => Sriov, mdev => Mdev, proc => Module);

impl Ctl {
    fn store(self, st: &mut HostState, data: &[u8]) -> io::Result<()> {
        match self {
            Ctl::Pci(c) => pci::store(st, c, data),
            Ctl::Driver(c) => drivers::store(st, c, data),
            Ctl::Sriov(c) => sriov::store(st, c, data),
            Ctl::Mdev(c) => mdev::store(st, c, data),
            Ctl::Module(c) => proc::store(st, c, data),
        }
    }
}

/// A subsystem's answer for a path: `None` when the path is not its own (the next one
/// is asked), `Some(None)` when it is its own but absent now.
type Lookup = Option<Option<Node>>;

/// The subsystems, asked in turn for a path (split into its components); the first
/// that claims it answers. `iommu` and `mdev` come before `pci`: `/sys/devices/virtual`
/// holds the IOMMU units and the virtual mdev parents, every other `/sys/devices/ROOT`
/// is a PCI root.
const SUBSYSTEMS: [fn(&HostState, &[&str]) -> Lookup; 7] =
    [skeleton, iommu::node, mdev::node, pci::node, drivers::node, class::node, proc::node];

/// One subsystem's part of a PCI device's directory.
struct DevicePart {
    /// The names it adds to the directory.
    entries: fn(&HostState, PciAddress) -> Vec<String>,
    /// What a path below the directory is (`rest` is never empty).
    node: fn(&HostState, PciAddress, &[&str]) -> Lookup,
}

/// The parts of a PCI device's directory, asked in turn like [`SUBSYSTEMS`].
const DEVICE_PARTS: [DevicePart; 5] =
    [pci::DEVICE, sriov::DEVICE, iommu::DEVICE, mdev::DEVICE, class::DEVICE];

/// What a canonical path is now, if anything.
fn node_at(st: &HostState, p: &Path) -> Option<Node> {
    let s = p.to_str()?;
    let parts: Vec<&str> = s.split('/').filter(|x| !x.is_empty()).collect();
    SUBSYSTEMS.iter().find_map(|f| f(st, &parts)).unwrap_or_else(|| files::plain(st, p))
}

/// What a path in the directory of device `a` (which exists) is; `rest` is the path
/// below the directory.
fn device_node(st: &HostState, a: PciAddress, rest: &[&str]) -> Option<Node> {
    if rest.is_empty() {
        let mut v: Vec<String> = DEVICE_PARTS.iter().flat_map(|p| (p.entries)(st, a)).collect();
        v.sort();
        return Some(Node::Dir(v));
    }
    DEVICE_PARTS.iter().find_map(|p| (p.node)(st, a, rest)).flatten()
}

/// The directories above the subsystems' own.
fn skeleton(_: &HostState, parts: &[&str]) -> Lookup {
    let names: &[&str] = match parts {
        [] => &["sys", "proc", "dev", "etc", "run", "usr", "var"],
        ["sys"] => &["bus", "devices", "kernel", "class", "module", "block"],
        ["sys", "bus"] => &["pci", "mdev"],
        ["sys", "class"] => &["iommu", "mdev_bus", "net"],
        _ => return None,
    };
    Some(Some(dir(names)))
}

fn err(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// These names, sorted, each once.
fn names(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.sort();
    v.dedup();
    v
}

/// A directory with these names.
fn dir(list: &[&str]) -> Node {
    Node::Dir(names(list))
}

/// A read-only one-line attribute.
fn text(value: impl Display) -> Node {
    Node::File(Attr::Text(format!("{value}\n")), 0o444)
}

/// A read-write one-line attribute; writes go to `ctl`.
fn rw(value: impl Display, ctl: impl Into<Ctl>) -> Node {
    Node::File(Attr::Rw(format!("{value}\n"), ctl.into()), 0o644)
}

/// A write-only attribute; writes go to `ctl`.
fn write_only(ctl: impl Into<Ctl>) -> Node {
    Node::File(Attr::WriteOnly(ctl.into()), 0o200)
}

/// A symbolic link to `target`.
fn link(target: impl Into<PathBuf>) -> Node {
    Node::Link(target.into())
}

/// The written text with surrounding white space removed.
fn word(data: &[u8]) -> String {
    String::from_utf8_lossy(data).trim().to_string()
}

/// The device at `s`, when `s` is an address and the device exists.
fn device_at(st: &HostState, s: &str) -> Option<PciAddress> {
    PciAddress::parse(s).ok().filter(|a| st.devices.contains_key(a))
}

/// The PCI root a device is under (`pci0000:00`).
fn root_name(a: PciAddress) -> String {
    format!("pci{:04x}:{:02x}", a.domain, a.bus)
}

/// A device's directory relative to `/sys` (`devices/pci0000:00/0000:00:04.0`).
fn device_dir(a: PciAddress) -> String {
    format!("devices/{}/{a}", root_name(a))
}

fn normalize_keep(p: &Path) -> Vec<String> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// Whether a normalized path belongs to the kernel's filesystems (sysfs, procfs,
/// devtmpfs), where no regular file can be created.
fn is_kernel_path(p: &Path) -> bool {
    p.starts_with("/sys") || p.starts_with("/proc") || p.starts_with("/dev")
}

/// Resolves symbolic links along `path` (the last one only when `follow_last`).
fn resolve(st: &HostState, path: &Path, follow_last: bool) -> io::Result<PathBuf> {
    let mut todo: Vec<String> = normalize_keep(path);
    todo.reverse();
    let mut cur = PathBuf::from("/");
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            cur.pop();
            continue;
        }
        cur.push(&c);
        let last = todo.is_empty();
        match node_at(st, &cur) {
            Some(Node::Link(t)) if !last || follow_last => {
                hops += 1;
                if hops > 40 {
                    return Err(err(libc::ELOOP));
                }
                cur.pop();
                let mut more = normalize_keep(&t);
                if t.is_absolute() {
                    cur = PathBuf::from("/");
                }
                more.reverse();
                todo.extend(more);
            }
            Some(Node::Dir(_)) => {}
            Some(_) if last => {}
            Some(_) => return Err(err(libc::ENOTDIR)),
            None => return Err(err(libc::ENOENT)),
        }
    }
    Ok(cur)
}

fn read_attr(st: &HostState, attr: &Attr) -> io::Result<Vec<u8>> {
    match attr {
        Attr::Text(s) | Attr::Rw(s, _) => Ok(s.clone().into_bytes()),
        Attr::WriteOnly(_) => Err(err(libc::EACCES)),
        Attr::Config(a) => Ok(pci::read_config(st, *a)),
        Attr::Rom(a) => pci::read_rom(st, *a),
        Attr::Resource => Err(err(libc::EIO)),
        Attr::Plain(p) => files::read(st, p),
    }
}

fn write_attr(st: &mut HostState, attr: Attr, data: &[u8]) -> io::Result<()> {
    match attr {
        Attr::Plain(p) => {
            files::write(st, p, data);
            Ok(())
        }
        Attr::WriteOnly(c) | Attr::Rw(_, c) => c.store(st, data),
        Attr::Rom(a) => {
            pci::write_rom(st, a, data);
            Ok(())
        }
        Attr::Config(_) => Err(err(libc::EPERM)),
        Attr::Text(_) | Attr::Resource => Err(err(libc::EACCES)),
    }
}

impl HostFs for SimFs {
    fn read_limited(&self, path: &Path, max: usize) -> io::Result<Vec<u8>> {
        let mut st = self.host.state();
        check_fs(&mut st, FaultOp::Read, path)?;
        let real = resolve(&st, path, true)?;
        let data = match node_at(&st, &real) {
            Some(Node::File(a, _)) => read_attr(&st, &a)?,
            Some(Node::Dir(_)) => return Err(err(libc::EISDIR)),
            Some(Node::Char(_)) => return Err(not_regular(path, NodeKind::CharDevice)),
            _ => return Err(err(libc::ENOENT)),
        };
        if data.len() > max {
            return Err(too_large(path, max));
        }
        Ok(data)
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let all = self.read(path)?;
        let start = (offset as usize).min(all.len());
        let n = (all.len() - start).min(buf.len());
        buf[..n].copy_from_slice(&all[start..start + n]);
        Ok(n)
    }

    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut st = self.host.state();
        check_fs(&mut st, FaultOp::Write, path)?;
        let real = match resolve(&st, path, true) {
            Ok(r) => r,
            Err(e)
                if e.raw_os_error() == Some(libc::ENOENT) && is_kernel_path(&normalize(path)) =>
            {
                return Err(err(libc::EACCES));
            }
            Err(e) => return Err(e),
        };
        let res = match node_at(&st, &real) {
            Some(Node::File(attr, _)) => write_attr(&mut st, attr, data),
            Some(Node::Dir(_)) => Err(err(libc::EISDIR)),
            _ => Err(err(libc::EACCES)),
        };
        if res.is_ok() {
            st.sys.writes.push(path.to_path_buf());
            iommu::forget_removed_nodes(&mut st);
        }
        res
    }

    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        let st = self.host.state();
        let real = resolve(&st, path, false)?;
        match node_at(&st, &real) {
            Some(Node::Link(t)) => Ok(t),
            Some(_) => Err(err(libc::EINVAL)),
            None => Err(err(libc::ENOENT)),
        }
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let st = self.host.state();
        let real = resolve(&st, path, true)?;
        match node_at(&st, &real) {
            Some(Node::Dir(mut v)) => {
                v.sort();
                v.dedup();
                Ok(v)
            }
            Some(_) => Err(err(libc::ENOTDIR)),
            None => Err(err(libc::ENOENT)),
        }
    }

    fn metadata(&self, path: &Path) -> io::Result<NodeMeta> {
        let st = self.host.state();
        let real = resolve(&st, path, false)?;
        let node = node_at(&st, &real).ok_or_else(|| err(libc::ENOENT))?;
        let (kind, mode) = match node {
            Node::Dir(_) => (NodeKind::Dir, 0o755),
            Node::Link(_) => (NodeKind::Symlink, 0o777),
            Node::File(_, m) => (NodeKind::File, m),
            Node::Char(m) => (NodeKind::CharDevice, st.sys.modes.get(&real).copied().unwrap_or(m)),
        };
        let (uid, gid) = st.sys.owners.get(&real).copied().unwrap_or((0, 0));
        Ok(NodeMeta { kind, mode, uid, gid })
    }

    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        let mut st = self.host.state();
        check_fs(&mut st, FaultOp::Chown, path)?;
        let real = resolve(&st, path, false)?;
        match node_at(&st, &real) {
            None => return Err(err(libc::ENOENT)),
            Some(Node::Link(_)) => return Err(err(libc::ELOOP)),
            Some(_) => {}
        }
        let cur = st.sys.owners.get(&real).copied().unwrap_or((0, 0));
        st.sys.owners.insert(real, (uid.unwrap_or(cur.0), gid.unwrap_or(cur.1)));
        Ok(())
    }

    fn create_dir_all(&self, path: &Path, _mode: u32) -> io::Result<()> {
        files::create_dir_all(&mut self.host.state(), path)
    }

    fn replace_file(&self, path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
        let mut st = self.host.state();
        check_fs(&mut st, FaultOp::Write, path)?;
        files::replace(&mut st, path, data, mode)
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn HeldLock>> {
        files::lock(&self.host, path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        files::remove(&mut self.host.state(), path)
    }

    fn modprobe(&self, module: &str) -> io::Result<()> {
        proc::modprobe(&mut self.host.state(), module)
    }
}
