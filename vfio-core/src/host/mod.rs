//! The host layer: what a person does by hand to prepare a host for PCI passthrough,
//! as pure logic over the [`HostFs`] seam.
//!
//! - [`pci_ids`]: the `pci.ids` database (names for ids);
//! - [`devices`]: PCI devices as sysfs shows them; [`filter`]: lspci-style selection;
//! - [`groups`]: IOMMU groups and whether each can be handed to VFIO;
//! - [`bind`]: transactional binding to vfio-pci with a journal, guards and rollback;
//! - [`doctor`]: host checks with exact fixes for this host's boot loader;
//! - [`sriov`], [`mdev`]: virtual functions and mediated devices;
//! - [`persist`]: the boot-time configuration; [`snapshot`]: capture a host's tree,
//!   with [`redact`] leaving identifying content out.

pub mod bind;
pub mod devices;
pub mod doctor;
pub mod filter;
pub mod groups;
pub mod guards;
pub mod journal;
pub mod lock;
pub mod mdev;
pub mod pci_ids;
pub mod persist;
pub mod redact;
pub mod restore;
pub mod snapshot;
pub mod sriov;
pub mod steps;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::hostfs::HostFs;
pub use crate::hostfs::{SysfsDevice, PCI_DEVICES};
use crate::pci::PciAddress;

/// The sysfs directory of a device (`/sys/bus/pci/devices/BDF`).
pub fn device_path(a: PciAddress) -> PathBuf {
    Path::new(PCI_DEVICES).join(a.to_string())
}

/// Reads a text attribute if it exists and is readable.
pub(crate) fn read_opt(fs: &dyn HostFs, path: &Path) -> Option<String> {
    fs.read_string(path).ok()
}

/// A failed change to the host as an [`Error::Host`], saying so when root is needed.
pub(crate) fn change_error(op: &'static str, path: &Path, e: std::io::Error) -> Error {
    let denied = e.kind() == std::io::ErrorKind::PermissionDenied;
    let err = Error::host(op, path, e);
    if denied {
        err.with_hint("changing the host needs root")
    } else {
        err
    }
}

/// Writes an attribute, as an [`Error::Host`] on failure.
pub(crate) fn write_text(fs: &dyn HostFs, path: &Path, data: &str) -> Result<()> {
    fs.write(path, data.as_bytes()).map_err(|e| change_error("write", path, e))
}

pub use crate::hostfs::parse_hex;

/// Joins a symlink's target to the directory holding the link, resolving `..`.
pub(crate) fn resolve_link(link: &Path, target: &Path) -> PathBuf {
    let base = if target.is_absolute() {
        PathBuf::from("/")
    } else {
        link.parent().unwrap_or(Path::new("/")).to_path_buf()
    };
    crate::hostfs::normalize(&base.join(target))
}

/// The driver a device is bound to now ([`SysfsDevice::driver`]).
pub fn current_driver(fs: &dyn HostFs, a: PciAddress) -> Option<String> {
    SysfsDevice::new(fs, a).driver()
}

/// The device's `driver_override` ([`SysfsDevice::driver_override`]).
pub fn driver_override(fs: &dyn HostFs, a: PciAddress) -> Option<String> {
    SysfsDevice::new(fs, a).driver_override()
}

/// The IOMMU group of a device ([`SysfsDevice::iommu_group`]).
pub fn iommu_group(fs: &dyn HostFs, a: PciAddress) -> Option<u32> {
    SysfsDevice::new(fs, a).iommu_group()
}

/// Every PCI address under `/sys/bus/pci/devices`, sorted. Only canonical names
/// (`0000:00:04.0`, as the kernel writes them) count: anything else in the directory is
/// not a device of this host, and a loosely parsed name would list one device twice.
pub fn pci_addresses(fs: &dyn HostFs) -> Result<Vec<PciAddress>> {
    let names = fs.read_dir(Path::new(PCI_DEVICES)).map_err(|e| {
        Error::host("read directory", PCI_DEVICES, e)
            .with_hint("is sysfs mounted? for a captured tree, root the host view at it")
    })?;
    let mut v: Vec<PciAddress> = names
        .iter()
        .filter_map(|n| PciAddress::parse(n).ok().filter(|a| a.to_string() == *n))
        .collect();
    v.sort();
    v.dedup();
    Ok(v)
}

/// Checks that a device exists, as a typed error naming the fix.
pub fn require_device(fs: &dyn HostFs, a: PciAddress) -> Result<()> {
    if fs.exists(&device_path(a)) {
        Ok(())
    } else {
        Err(Error::NotFound {
            what: format!("PCI device {a}"),
            hint: Some("the devices present are under /sys/bus/pci/devices".into()),
        })
    }
}

#[cfg(all(test, feature = "mock"))]
mod tests {
    use super::*;

    #[test]
    fn write_errors_say_when_root_is_needed() {
        let dir = tempfile::tempdir().unwrap();
        let fs = crate::hostfs::RealFs::new(dir.path());
        let e = write_text(&fs, Path::new("/no/such/dir/file"), "1").unwrap_err().to_string();
        assert!(e.starts_with("write /no/such/dir/file") && !e.contains("sudo"), "{e}");
        let h = crate::mock::MockHost::new([]);
        let e =
            write_text(&*h.fs(), Path::new("/sys/bus/pci/nosuch"), "1").unwrap_err().to_string();
        assert!(e.contains("changing the host needs root"), "{e}");
    }
}
