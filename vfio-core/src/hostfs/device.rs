//! One PCI device as sysfs shows it: the single place that reads a device's attributes.
//!
//! Every fact about a device that the VFIO objects, the host layer and vfiotool use
//! (driver, `driver_override`, IOMMU group, cdev, ids, class, bridge or not, SR-IOV
//! counts, reset methods, config space, BAR resources, the option ROM, boot VGA, the
//! interfaces and disks below it) is read here, through [`HostFs`], so two callers can
//! never disagree about what "a bridge" or "its driver" is.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::hostfs::HostFs;
use crate::pci::config::{parse_sysfs_resource, ResourceLine};
use crate::pci::PciAddress;
use crate::rom::{MAX_ROM_BYTES, ROM_READ_CHUNK};

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
        super::mdev::vfio_cdev_in(self.fs, &self.path())
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

    /// The VFs the device supports (`sriov_totalvfs`; `None`: not an SR-IOV physical
    /// function, or unreadable).
    pub fn sriov_totalvfs(&self) -> Option<u16> {
        self.text("sriov_totalvfs")?.parse().ok()
    }

    /// The reset methods in the kernel's order of preference (`reset_method`); empty when
    /// resets are disabled, `None` when the kernel has no such file.
    pub fn reset_methods(&self) -> Option<Vec<String>> {
        self.text("reset_method").map(|s| s.split_whitespace().map(str::to_string).collect())
    }

    /// The config space as the `config` attribute gives it (all of it for root, the
    /// first 64 bytes for other users).
    pub fn config(&self) -> Result<Vec<u8>> {
        let p = self.attr_path("config");
        self.fs
            .read(&p)
            .map_err(|e| Error::host("read", &p, e).with_hint("run as root to read config space"))
    }

    /// The vendor and device id, from the first four bytes of `config` (readable without
    /// root).
    pub fn config_ids(&self) -> Result<(u16, u16)> {
        let p = self.attr_path("config");
        let mut b = [0u8; 4];
        let n = self.fs.read_at(&p, 0, &mut b).map_err(|e| Error::host("read", &p, e))?;
        if n < 4 {
            return Err(Error::Invalid {
                what: "config space",
                input: p.display().to_string(),
                reason: format!("only {n} bytes"),
            });
        }
        Ok((u16::from_le_bytes([b[0], b[1]]), u16::from_le_bytes([b[2], b[3]])))
    }

    /// The address ranges of its BARs, ROM and bridge windows (`resource`, one line per
    /// resource); `None` when absent, unreadable or malformed.
    pub fn resources(&self) -> Option<Vec<ResourceLine>> {
        parse_sysfs_resource(&self.text("resource")?).ok()
    }

    /// Whether it has an expansion ROM BAR (sysfs shows a `rom` attribute).
    pub fn has_rom(&self) -> bool {
        self.has("rom")
    }

    /// Reads its option ROM through sysfs, as `echo 1 > rom; cat rom; echo 0 > rom`:
    /// writes "1" to `rom` (enabling the ROM BAR), reads it in [`ROM_READ_CHUNK`] chunks
    /// up to [`MAX_ROM_BYTES`], and writes "0" back, also when the read fails. The
    /// kernel returns the images up to the one marked last. Needs root; errors name the
    /// way out (a hidden or shadowed ROM reads as `EIO`).
    pub fn read_rom(&self) -> Result<Vec<u8>> {
        let path = self.attr_path("rom");
        if !self.fs.exists(&path) {
            return Err(Error::NotFound {
                what: format!("ROM of {} ({})", self.address, path.display()),
                hint: Some(
                    "the device has no expansion ROM BAR; use the vendor's ROM file instead".into(),
                ),
            });
        }
        self.fs.write(&path, b"1").map_err(|e| {
            Error::host("enable ROM (write \"1\")", &path, e)
                .with_hint("run as root; the file is writable by root only")
        })?;
        let result = self.read_rom_chunks(&path);
        let disable = self.fs.write(&path, b"0");
        let data = result?;
        disable.map_err(|e| {
            Error::host("disable ROM (write \"0\")", &path, e)
                .with_hint(format!("the ROM BAR may still be enabled: echo 0 > {}", path.display()))
        })?;
        Ok(data)
    }

    fn read_rom_chunks(&self, path: &Path) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        let mut buf = vec![0u8; ROM_READ_CHUNK];
        while (data.len() as u64) < MAX_ROM_BYTES {
            let n = self.fs.read_at(path, data.len() as u64, &mut buf).map_err(|e| {
                let hint = if e.raw_os_error() == Some(libc::EIO) {
                    "the kernel found no valid ROM (no 55 AA signature): the ROM is hidden or \
                     shadowed, as on the boot GPU; dump it with the card in another slot or \
                     use the vendor's ROM file"
                } else {
                    "is the device powered (not in D3cold)? check dmesg"
                };
                Error::host("read ROM", path, e).with_hint(hint)
            })?;
            if n == 0 {
                break;
            }
            data.extend_from_slice(&buf[..n]);
        }
        Ok(data)
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

#[cfg(all(test, feature = "mock"))]
mod tests {
    use super::*;
    use crate::kernel::Errno;
    use crate::mock::{DeviceSpec, Fault, FaultOp, MockHost};

    fn a(s: &str) -> PciAddress {
        PciAddress::parse(s).unwrap()
    }

    #[test]
    fn reads_reset_methods_sriov_config_and_resources() {
        let h = MockHost::new([
            DeviceSpec::igb("0000:02:00.0").driver("igb"),
            DeviceSpec::nvme("0000:01:00.0").driver("nvme"),
            DeviceSpec::edu("0000:00:04.0"),
            DeviceSpec::bridge("0000:00:1c.0").driver("pcieport"),
        ]);
        let fs = h.fs();
        let nic = SysfsDevice::new(&*fs, a("0000:02:00.0"));
        assert_eq!((nic.sriov_totalvfs(), nic.sriov_numvfs()), (Some(4), Some(0)));
        assert_eq!(nic.config_ids().unwrap(), (0x8086, 0x10c9));
        let nvme = SysfsDevice::new(&*fs, a("0000:01:00.0"));
        assert_eq!(nvme.reset_methods(), Some(vec!["flr".to_string(), "bus".to_string()]));
        assert_eq!(nvme.config().unwrap()[..4], [0x36, 0x1b, 0x10, 0x00]);
        let res = nvme.resources().unwrap();
        assert_eq!(res[0].size(), 16 << 10, "{res:?}");
        assert_eq!(res[1].size(), 0, "{res:?}");
        let edu = SysfsDevice::new(&*fs, a("0000:00:04.0"));
        assert_eq!((edu.sriov_totalvfs(), edu.sriov_numvfs()), (None, None));
        assert_eq!(edu.reset_methods(), Some(vec!["bus".to_string()]));
        assert!(!edu.has_rom());
        let bridge = SysfsDevice::new(&*fs, a("0000:00:1c.0"));
        assert_eq!(bridge.reset_methods(), None);
        let gone = SysfsDevice::new(&*fs, a("0000:09:00.0"));
        let e = gone.config().unwrap_err().to_string();
        assert!(e.contains("run as root to read config space"), "{e}");
        assert!(gone.config_ids().is_err());
        assert_eq!(gone.resources(), None);
    }

    #[test]
    fn read_rom_enables_reads_and_disables() {
        let rom: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut edu = DeviceSpec::edu("0000:00:04.0");
        edu.rom = Some(rom.clone());
        let h = MockHost::new([edu, DeviceSpec::edu("0000:00:05.0")]);
        let fs = h.fs();
        let dev = SysfsDevice::new(&*fs, a("0000:00:04.0"));
        assert!(dev.has_rom());
        assert_eq!(dev.read_rom().unwrap(), rom);
        let path = dev.attr_path("rom");
        assert_eq!(h.state().sys.writes, [path.clone(), path.clone()]);
        assert!(h.state().sys.rom_enabled.is_empty(), "disabled again");

        // A failed read still disables the ROM, and says what to do.
        h.inject(Fault::fs(FaultOp::Read).path(&path).errno(Errno::EIO));
        let e = dev.read_rom().unwrap_err().to_string();
        assert!(e.contains("read ROM") && e.contains("hidden or shadowed"), "{e}");
        assert_eq!(h.state().sys.writes.len(), 4);
        assert!(h.state().sys.rom_enabled.is_empty(), "disabled after the failure");
        h.inject(Fault::fs(FaultOp::Read).path(&path).errno(Errno::EINVAL));
        let e = dev.read_rom().unwrap_err().to_string();
        assert!(e.contains("D3cold"), "{e}");

        // No ROM BAR: nothing is written.
        let e = SysfsDevice::new(&*fs, a("0000:00:05.0")).read_rom().unwrap_err().to_string();
        assert!(e.contains("no expansion ROM BAR"), "{e}");
        assert_eq!(h.state().sys.writes.len(), 6);
    }
}
