//! Mediated devices as sysfs shows them: an instance is a UUID, written to a type's
//! `create` and listed under `/sys/bus/mdev/devices`; its parents are listed under
//! `/sys/class/mdev_bus`.
//!
//! [`is_uuid`] is pure, so that both the host layer (which checks a UUID before writing
//! it) and the simulated sysfs (which refuses a malformed one as the kernel does) use the
//! same rule. [`SysfsMdev`] reads what VFIO needs to open an instance: its IOMMU group
//! (a virtual one, `/dev/vfio/N`) and its device cdev.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::hostfs::{link_name, HostFs};

/// `/sys/bus/mdev/devices`: every mdev instance, by UUID.
pub const MDEV_DEVICES: &str = "/sys/bus/mdev/devices";

/// `/sys/class/mdev_bus`: every device that offers mdev types (PCI or not), as a link
/// named after the device.
pub const MDEV_BUS: &str = "/sys/class/mdev_bus";

/// Whether `s` is a UUID in its 8-4-4-4-12 hexadecimal form (how mdev instances are
/// named).
pub fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// An instance's UUID as the kernel names it (lower case), or the refusal of anything
/// that is not a UUID.
pub fn parse_uuid(s: &str) -> Result<String> {
    if is_uuid(s) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(Error::Invalid {
            what: "UUID",
            input: s.chars().take(64).collect(),
            reason:
                "expected 8-4-4-4-12 hexadecimal digits, e.g. 83b8f4f2-509f-382f-3c1e-e6bfe0fa1001"
                    .into(),
        })
    }
}

/// One mdev instance's directory (`/sys/bus/mdev/devices/UUID`) seen through a host view.
#[derive(Debug, Clone)]
pub struct SysfsMdev<'a> {
    fs: &'a dyn HostFs,
    uuid: String,
}

impl<'a> SysfsMdev<'a> {
    /// The instance `uuid` (which may not exist; see [`SysfsMdev::exists`]); anything but
    /// a UUID is refused, so that the name is always one plain path component.
    pub fn new(fs: &'a dyn HostFs, uuid: &str) -> Result<Self> {
        Ok(SysfsMdev { fs, uuid: parse_uuid(uuid)? })
    }

    /// Its UUID, in lower case.
    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    /// `/sys/bus/mdev/devices/UUID`.
    pub fn path(&self) -> PathBuf {
        Path::new(MDEV_DEVICES).join(&self.uuid)
    }

    /// Whether the instance exists.
    pub fn exists(&self) -> bool {
        self.fs.exists(&self.path())
    }

    /// The mdev driver bound to it (`mtty`, `nvidia-vgpu-vfio`); without one it is no
    /// VFIO device.
    pub fn driver(&self) -> Option<String> {
        link_name(self.fs, &self.path().join("driver"))
    }

    /// Its type id (`mtty-2`), from the `mdev_type` link.
    pub fn type_id(&self) -> Option<String> {
        link_name(self.fs, &self.path().join("mdev_type"))
    }

    /// Its IOMMU group: a virtual group vfio makes for each instance (`/dev/vfio/N`).
    pub fn iommu_group(&self) -> Option<u32> {
        link_name(self.fs, &self.path().join("iommu_group"))?.parse().ok()
    }

    /// `N` of its VFIO cdev (`vfio-dev/vfioN`), when the kernel has VFIO_DEVICE_CDEV.
    pub fn vfio_cdev(&self) -> Option<u32> {
        vfio_cdev_in(self.fs, &self.path())
    }
}

/// `N` of the `vfio-dev/vfioN` entry in a device's directory.
pub(crate) fn vfio_cdev_in(fs: &dyn HostFs, dir: &Path) -> Option<u32> {
    fs.read_dir(&dir.join("vfio-dev"))
        .ok()?
        .iter()
        .find_map(|n| n.strip_prefix("vfio")?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_five_groups_of_hex_digits() {
        assert!(is_uuid("83b8f4f2-509f-382f-3c1e-e6bfe0fa1001"));
        assert!(is_uuid("83B8F4F2-509F-382F-3C1E-E6BFE0FA1001"));
        assert!(!is_uuid("83b8f4f2-509f-382f-3c1e"));
        assert!(!is_uuid("83b8f4f2-509f-382f-3c1e-e6bfe0fa100"));
        assert!(!is_uuid("83b8f4f2-509f-382f-3c1e-e6bfe0fa100g"));
        assert!(!is_uuid("nope"));
        assert_eq!(
            parse_uuid("83B8F4F2-509F-382F-3C1E-E6BFE0FA1001").unwrap(),
            "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001"
        );
        let e = parse_uuid("../../x").unwrap_err().to_string();
        assert!(e.starts_with("invalid UUID \"../../x\": expected 8-4-4-4-12"), "{e}");
    }
}
