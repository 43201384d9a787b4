//! One PCI device as sysfs shows it: the single place that reads a device's attributes.
//!
//! Every fact about a device that the host layer, the VFIO objects and vfiotool use
//! (driver, `driver_override`, IOMMU group, ids, class, SR-IOV counts, boot VGA, the
//! interfaces and disks below it) is read here, through [`HostFs`], so two callers can
//! never disagree about what "a bridge" or "its driver" is.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::host::{link_name, parse_hex, PCI_DEVICES};
use crate::hostfs::HostFs;
use crate::pci::PciAddress;

/// A device's sysfs directory seen through a host view.
#[derive(Debug, Clone, Copy)]
pub struct SysfsDevice<'a> {
    fs: &'a dyn HostFs,
    address: PciAddress,
}

/// Whether a class code is a bridge (class 06xx: host, PCI-to-PCI, CardBus...); bridges
/// do not stop a group from being used and are never bound.
pub fn is_bridge_class(class: u32) -> bool {
    class >> 16 == 0x06
}

impl<'a> SysfsDevice<'a> {
    /// The device at `address` (which may not exist; see [`SysfsDevice::exists`]).
    pub fn new(fs: &'a dyn HostFs, address: PciAddress) -> Self {
        SysfsDevice { fs, address }
    }

    /// Its address.
    pub fn address(&self) -> PciAddress {
        self.address
    }

    /// `/sys/bus/pci/devices/BDF`.
    pub fn path(&self) -> PathBuf {
        Path::new(PCI_DEVICES).join(self.address.to_string())
    }

    /// The path of one of its attributes.
    pub fn attr_path(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    /// Whether the device exists.
    pub fn exists(&self) -> bool {
        self.fs.exists(&self.path())
    }

    /// Whether an attribute exists.
    pub fn has(&self, name: &str) -> bool {
        self.fs.exists(&self.attr_path(name))
    }

    /// A trimmed text attribute, `None` when it is absent or unreadable.
    pub fn text(&self, name: &str) -> Option<String> {
        self.fs.read_string(&self.attr_path(name)).ok()
    }

    /// A text attribute that must be readable when it exists: `Ok(None)` when absent, an
    /// error when it exists but cannot be read (the prior state of a bind must be known,
    /// not guessed).
    pub fn text_if_present(&self, name: &str) -> Result<Option<String>> {
        let p = self.attr_path(name);
        if !self.fs.exists(&p) {
            return Ok(None);
        }
        self.fs.read_string(&p).map(Some).map_err(|e| {
            Error::host("read", &p, e).with_hint("the prior state must be known to be restored")
        })
    }

    /// A hexadecimal attribute (`vendor`, `device`, `class`), as an error naming the file
    /// when it is absent or not hexadecimal.
    pub fn hex(&self, name: &str) -> Result<u64> {
        let p = self.attr_path(name);
        let s = self.fs.read_string(&p).map_err(|e| Error::host("read", &p, e))?;
        parse_hex(&s).ok_or_else(|| Error::Invalid {
            what: "sysfs attribute",
            input: s.chars().take(64).collect(),
            reason: format!("{} is not hexadecimal", p.display()),
        })
    }

    /// The 24-bit class code, `None` when unreadable.
    pub fn class(&self) -> Option<u32> {
        self.hex("class").ok().map(|c| c as u32)
    }

    /// Whether it is a bridge.
    pub fn is_bridge(&self) -> bool {
        self.class().is_some_and(is_bridge_class)
    }

    /// The driver bound now.
    pub fn driver(&self) -> Option<String> {
        link_name(self.fs, &self.attr_path("driver"))
    }

    /// `driver_override` (`None` when it reads `(null)`, is empty or absent).
    pub fn driver_override(&self) -> Option<String> {
        self.text("driver_override").filter(|s| s != "(null)" && !s.is_empty())
    }

    /// The IOMMU group.
    pub fn iommu_group(&self) -> Option<u32> {
        link_name(self.fs, &self.attr_path("iommu_group"))?.parse().ok()
    }

    /// Enabled VFs (`None`: not SR-IOV capable or unreadable).
    pub fn sriov_numvfs(&self) -> Option<u16> {
        self.text("sriov_numvfs")?.parse().ok()
    }

    /// Whether this is the boot display.
    pub fn boot_vga(&self) -> bool {
        self.text("boot_vga").as_deref() == Some("1")
    }

    /// The entries of a class directory (`/sys/class/net`, `/sys/block`) whose device
    /// sits below this device (a NIC's interfaces, a controller's disks).
    pub fn class_members(&self, class_dir: &str) -> Vec<String> {
        let bdf = self.address.to_string();
        self.fs
            .read_dir(Path::new(class_dir))
            .unwrap_or_default()
            .into_iter()
            .filter(|n| {
                self.fs
                    .read_link(&Path::new(class_dir).join(n))
                    .is_ok_and(|t| t.components().any(|c| c.as_os_str() == bdf.as_str()))
            })
            .collect()
    }
}
