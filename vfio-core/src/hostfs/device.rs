//! One PCI device as sysfs shows it: the single place that reads a device's attributes.
//!
//! Every fact about a device that the VFIO objects, the host layer and vfiotool use
//! (driver, `driver_override`, IOMMU group, cdev, ids, class, bridge or not, SR-IOV
//! counts, boot VGA, the interfaces and disks below it) is read here, through
//! [`HostFs`], so two callers can never disagree about what "a bridge" or "its driver"
//! is.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::hostfs::HostFs;
use crate::pci::PciAddress;

/// `/sys/bus/pci/devices`.
pub const PCI_DEVICES: &str = "/sys/bus/pci/devices";

/// The last component of a symlink's target (`../../../bus/pci/drivers/nvme` → `nvme`).
pub fn link_name(fs: &dyn HostFs, path: &Path) -> Option<String> {
    let t = fs.read_link(path).ok()?;
    t.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// Parses a hexadecimal attribute (`0x8086`).
pub fn parse_hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
}

/// A device's sysfs directory seen through a host view.
#[derive(Debug, Clone, Copy)]
pub struct SysfsDevice<'a> {
    fs: &'a dyn HostFs,
    address: PciAddress,
}

/// Drivers that never keep a group from VFIO: VFIO's own, and the kernel's drivers that
/// manage their own DMA (`driver_managed_dma`: pci-stub, pcieport).
pub const DMA_SAFE_DRIVERS: [&str; 3] = ["vfio-pci", "pci-stub", "pcieport"];

/// Whether a class code is a bridge (class 06xx: host, ISA, PCI-to-PCI, CardBus...):
/// system devices that are never bound to vfio-pci.
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

    /// Whether it is a bridge (class 06xx), a system device never bound to vfio-pci and
    /// never counted as a blocker of its group. The kernel's viability rule lets bridges
    /// keep their drivers (pcieport manages its own DMA); a host or ISA bridge with a
    /// driver would still block a group in the kernel, which [`SysfsDevice::is_pci_bridge`]
    /// tells apart.
    pub fn is_bridge(&self) -> bool {
        self.class().is_some_and(is_bridge_class)
    }

    /// Whether it is a PCI-to-PCI or CardBus bridge: header type 1 or 2 (config byte
    /// 0x0e, readable without root), or class 0604/0607 when config space is unreadable.
    pub fn is_pci_bridge(&self) -> bool {
        match self.fs.read_limited(&self.attr_path("config"), 4096) {
            Ok(c) if c.len() > 0x0e => c[0x0e] & 0x7f != 0,
            _ => self.class().is_some_and(|c| matches!(c >> 8, 0x0604 | 0x0607)),
        }
    }

    /// Whether this member keeps its IOMMU group from VFIO: it has a driver that is not
    /// DMA-safe and it is not a PCI-to-PCI bridge.
    pub fn blocks_group(&self) -> Option<String> {
        let d = self.driver()?;
        (!DMA_SAFE_DRIVERS.contains(&d.as_str()) && !self.is_pci_bridge()).then_some(d)
    }

    /// `N` of the device's VFIO cdev (`vfio-dev/vfioN`), when it has one.
    pub fn vfio_cdev(&self) -> Option<u32> {
        self.fs
            .read_dir(&self.attr_path("vfio-dev"))
            .ok()?
            .iter()
            .find_map(|n| n.strip_prefix("vfio")?.parse().ok())
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
