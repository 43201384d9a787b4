//! PCI devices as sysfs shows them.

use crate::error::Result;
use crate::host::pci_addresses;
use crate::host::pci_ids::PciIds;
use crate::hostfs::{HostFs, SysfsDevice};
use crate::pci::PciAddress;

/// One PCI function.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PciDevice {
    /// Its address.
    pub address: PciAddress,
    /// Vendor id.
    pub vendor: u16,
    /// Device id.
    pub device: u16,
    /// Subsystem vendor id.
    pub subsystem_vendor: u16,
    /// Subsystem device id.
    pub subsystem_device: u16,
    /// 24-bit class code.
    pub class: u32,
    /// Vendor name from pci.ids.
    pub vendor_name: Option<String>,
    /// Device name from pci.ids.
    pub device_name: Option<String>,
    /// Class name from pci.ids.
    pub class_name: Option<String>,
    /// The driver bound now.
    pub driver: Option<String>,
    /// `driver_override`, when set.
    pub driver_override: Option<String>,
    /// IOMMU group.
    pub iommu_group: Option<u32>,
    /// Whether it is a PCI-to-PCI or CardBus bridge (header type 1 or 2), which keeps
    /// its driver without keeping its group from VFIO.
    pub pci_bridge: bool,
    /// Whether its group holds nothing else but bridges (`None` without a group).
    pub isolated: Option<bool>,
    /// Other members of its group that are not bridges.
    pub group_peers: Vec<PciAddress>,
}

impl PciDevice {
    /// `vvvv:dddd:cccc` (class and subclass), as OpenNebula's table shows it.
    pub fn ids(&self) -> String {
        format!("{:04x}:{:04x}:{:04x}", self.vendor, self.device, self.class >> 8)
    }

    /// "Vendor Device" names, or the numeric ids.
    pub fn name(&self) -> String {
        match (&self.vendor_name, &self.device_name) {
            (Some(v), Some(d)) => format!("{v} {d}"),
            (Some(v), None) => format!("{v} device {:04x}", self.device),
            _ => format!("{:04x}:{:04x}", self.vendor, self.device),
        }
    }

    /// Whether this is a bridge (class 06xx: host, PCI-to-PCI, CardBus...).
    pub fn is_bridge(&self) -> bool {
        is_bridge_class(self.class)
    }
}

pub use crate::hostfs::is_bridge_class;

/// Reads one device's ids, names, driver and group.
pub fn read_device(fs: &dyn HostFs, a: PciAddress, ids: &PciIds) -> Result<PciDevice> {
    crate::host::require_device(fs, a)?;
    let dev = SysfsDevice::new(fs, a);
    let (vendor, device, class) =
        (dev.hex("vendor")? as u16, dev.hex("device")? as u16, dev.hex("class")? as u32);
    let sv = dev.hex("subsystem_vendor").unwrap_or(0) as u16;
    let sd = dev.hex("subsystem_device").unwrap_or(0) as u16;
    let group = dev.iommu_group();
    let group_peers = match group {
        Some(g) => group_members(fs, g)
            .into_iter()
            .filter(|m| *m != a && !SysfsDevice::new(fs, *m).is_bridge())
            .collect(),
        None => vec![],
    };
    Ok(PciDevice {
        address: a,
        vendor,
        device,
        subsystem_vendor: sv,
        subsystem_device: sd,
        class,
        vendor_name: ids.vendor(vendor).map(str::to_string),
        device_name: ids.device(vendor, device).map(str::to_string),
        class_name: ids.class(class).map(str::to_string),
        driver: dev.driver(),
        driver_override: dev.driver_override(),
        iommu_group: group,
        pci_bridge: dev.is_pci_bridge(),
        isolated: group.map(|_| group_peers.is_empty()),
        group_peers,
    })
}

/// The members of an IOMMU group, sorted.
pub fn group_members(fs: &dyn HostFs, group: u32) -> Vec<PciAddress> {
    let p = format!("/sys/kernel/iommu_groups/{group}/devices");
    let mut v: Vec<PciAddress> = fs
        .read_dir(std::path::Path::new(&p))
        .unwrap_or_default()
        .iter()
        .filter_map(|n| PciAddress::parse(n).ok().filter(|a| a.to_string() == *n))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// A listing that goes on past entries it cannot read, naming each one it skipped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Scan<T> {
    /// What could be read.
    pub items: Vec<T>,
    /// What was skipped, each as "what: why".
    pub skipped: Vec<String>,
}

/// Every PCI device of the host, sorted by address. A device whose attributes cannot be
/// read (a damaged or hostile tree) is skipped and named, not fatal to the listing.
pub fn list_devices(fs: &dyn HostFs, ids: &PciIds) -> Result<Scan<PciDevice>> {
    let mut scan = Scan { items: vec![], skipped: vec![] };
    for a in pci_addresses(fs)? {
        match read_device(fs, a, ids) {
            Ok(d) => scan.items.push(d),
            Err(e) => scan.skipped.push(format!("{a}: {e}")),
        }
    }
    Ok(scan)
}

#[cfg(all(test, feature = "mock"))]
mod tests {
    use super::*;
    use crate::mock::{DeviceSpec, MockHost};

    #[test]
    fn reads_ids_driver_group_and_isolation() {
        let h = MockHost::new([
            DeviceSpec::bridge("0000:00:1c.0").group(2).driver("pcieport"),
            DeviceSpec::nvme("0000:01:00.0").driver("nvme").group(2),
            DeviceSpec::edu("0000:02:00.0").group(3),
            DeviceSpec::edu("0000:02:00.1").group(3).driver("edu"),
            DeviceSpec::edu("0000:03:00.0"),
        ]);
        let fs = h.fs();
        let ids = PciIds::parse("1b36  Red Hat, Inc.\n\t0010  QEMU NVM Express Controller\n");
        let devs = list_devices(&*fs, &ids).unwrap().items;
        assert_eq!(devs.len(), 5);
        let nvme = &devs[1];
        assert_eq!(nvme.ids(), "1b36:0010:0108");
        assert_eq!(nvme.name(), "Red Hat, Inc. QEMU NVM Express Controller");
        assert_eq!(nvme.driver.as_deref(), Some("nvme"));
        assert_eq!((nvme.iommu_group, nvme.isolated), (Some(2), Some(true)));
        assert_eq!(devs[2].isolated, Some(false));
        assert_eq!(devs[2].group_peers, vec![PciAddress::parse("02:00.1").unwrap()]);
        assert_eq!(devs[2].name(), "1234:11e8");
        assert_eq!((devs[4].iommu_group, devs[4].isolated), (None, None));
        assert!(read_device(&*fs, PciAddress::parse("09:00.0").unwrap(), &ids).is_err());
    }
}
