//! IOMMU groups and whether each can be handed to VFIO now.
//!
//! A group is usable by VFIO only when every member is bound to a VFIO driver
//! (`vfio-pci`), to `pci-stub`, or to nothing; bridges (class 06xx, `pcieport`) do not
//! stop it. This mirrors the kernel's viability rule.

use std::path::Path;

use crate::error::{Error, Result};
use crate::host::devices::{read_device, PciDevice, Scan};
use crate::host::pci_ids::PciIds;
use crate::hostfs::HostFs;

/// Drivers that never stop a group from being used.
pub use crate::hostfs::DMA_SAFE_DRIVERS as HARMLESS_DRIVERS;

/// One IOMMU group.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IommuGroup {
    /// Group number.
    pub id: u32,
    /// Its members.
    pub members: Vec<PciDevice>,
    /// Members whose attributes could not be read ("address: why"); the group counts as
    /// not viable while any is left, since its driver is unknown.
    pub unreadable: Vec<String>,
    /// Members bound to host drivers, with the driver: these keep VFIO out.
    pub blockers: Vec<(String, String)>,
    /// Whether VFIO can use the group now.
    pub viable: bool,
    /// Whether `/dev/vfio/N` exists.
    pub dev_node: bool,
    /// What to do to make it usable, when it is not.
    pub advice: Option<String>,
}

impl IommuGroup {
    /// The error explaining why the group cannot be used, when it cannot.
    pub fn not_viable_error(&self) -> Option<Error> {
        let (first, _) = self.blockers.first()?;
        Some(Error::GroupNotViable {
            group: self.id,
            first: first.clone(),
            blockers: self.blockers.clone(),
        })
    }
}

/// Whether a member with this driver keeps the group from VFIO.
pub fn member_blocks(d: &PciDevice) -> bool {
    match d.driver.as_deref() {
        None => false,
        Some(drv) => !d.pci_bridge && !HARMLESS_DRIVERS.contains(&drv),
    }
}

/// Reads one group.
pub fn read_group(fs: &dyn HostFs, id: u32, ids: &PciIds) -> Result<IommuGroup> {
    let dir = format!("/sys/kernel/iommu_groups/{id}/devices");
    let names = fs.read_dir(Path::new(&dir)).map_err(|e| {
        Error::host("read directory", &dir, e)
            .with_hint("the groups are under /sys/kernel/iommu_groups")
    })?;
    let mut members = vec![];
    let mut unreadable = vec![];
    for n in names {
        let Ok(a) = crate::pci::PciAddress::parse(&n) else { continue };
        if a.to_string() != n {
            continue;
        }
        match read_device(fs, a, ids) {
            Ok(d) => members.push(d),
            Err(e) => unreadable.push(format!("{a}: {e}")),
        }
    }
    let blockers: Vec<(String, String)> = members
        .iter()
        .filter(|d| member_blocks(d))
        .map(|d| (d.address.to_string(), d.driver.clone().unwrap_or_default()))
        .collect();
    let viable = blockers.is_empty() && unreadable.is_empty();
    let endpoints = members.iter().filter(|d| !d.is_bridge()).count();
    let advice = (!viable).then(|| {
        if blockers.is_empty() {
            return format!("check the members that could not be read: {}", unreadable.join("; "));
        }
        let list: Vec<String> = blockers.iter().map(|(a, d)| format!("{a} ({d})")).collect();
        if endpoints == 1 {
            format!("bind {} to vfio-pci (now on {})", blockers[0].0, blockers[0].1)
        } else {
            format!(
                "bind the whole group to vfio-pci (a group bind of {}); members held by host drivers: {}",
                blockers[0].0,
                list.join(", ")
            )
        }
    });
    Ok(IommuGroup {
        id,
        dev_node: fs.exists(Path::new(&format!("/dev/vfio/{id}"))),
        members,
        unreadable,
        blockers,
        viable,
        advice,
    })
}

/// Every IOMMU group, by number (empty when no IOMMU is active); a group that cannot be
/// read is skipped and named.
pub fn list_groups(fs: &dyn HostFs, ids: &PciIds) -> Result<Scan<IommuGroup>> {
    let mut nums: Vec<u32> = fs
        .read_dir(Path::new("/sys/kernel/iommu_groups"))
        .unwrap_or_default()
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    nums.sort();
    nums.dedup();
    let mut scan = Scan { items: vec![], skipped: vec![] };
    for g in nums {
        match read_group(fs, g, ids) {
            Ok(group) => scan.items.push(group),
            Err(e) => scan.skipped.push(format!("group {g}: {e}")),
        }
    }
    Ok(scan)
}

#[cfg(all(test, feature = "mock"))]
mod tests {
    use super::*;
    use crate::mock::{DeviceSpec, MockHost};

    #[test]
    fn bridges_and_vfio_members_do_not_block_host_drivers_do() {
        let h = MockHost::new([
            DeviceSpec::bridge("0000:00:1c.0").group(1).driver("pcieport"),
            DeviceSpec::edu("0000:01:00.0").group(1).driver("vfio-pci"),
            DeviceSpec::edu("0000:02:00.0").group(2).driver("vfio-pci"),
            DeviceSpec::edu("0000:02:00.1").group(2).driver("snd_hda_intel"),
            DeviceSpec::edu("0000:03:00.0").group(3),
        ])
        .with_sys(|s| s.load_vfio());
        let fs = h.fs();
        let g = list_groups(&*fs, &PciIds::default()).unwrap().items;
        assert_eq!(
            g.iter().map(|g| (g.id, g.viable)).collect::<Vec<_>>(),
            vec![(1, true), (2, false), (3, true)]
        );
        assert!(g[0].dev_node && g[1].dev_node && !g[2].dev_node);
        assert_eq!(g[1].blockers, vec![("0000:02:00.1".to_string(), "snd_hda_intel".to_string())]);
        assert!(g[1].advice.as_deref().unwrap().contains("a group bind of 0000:02:00.1"));
        h.set_driver(crate::PciAddress::parse("03:00.0").unwrap(), Some("e1000e"));
        let g3 = read_group(&*fs, 3, &PciIds::default()).unwrap();
        assert_eq!(g3.advice.as_deref(), Some("bind 0000:03:00.0 to vfio-pci (now on e1000e)"));
        let e = g[1].not_viable_error().unwrap().to_string();
        assert!(e.contains("IOMMU group 2 is not viable"), "{e}");
        assert!(g[0].not_viable_error().is_none());
        assert!(read_group(&*fs, 9, &PciIds::default()).is_err());
    }

    #[test]
    fn no_iommu_means_no_groups() {
        let h = MockHost::new([DeviceSpec::edu("0000:00:04.0")]);
        assert!(list_groups(&*h.fs(), &PciIds::default()).unwrap().items.is_empty());
    }
}
