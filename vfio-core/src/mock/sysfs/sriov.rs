//! SR-IOV (`drivers/pci/iov.c`): a physical function's `sriov_totalvfs` and
//! `sriov_numvfs`, the virtual functions writing it creates and removes, and the
//! `virtfnN` and `physfn` links between them. `sriov_numvfs` is bounded by
//! `sriov_totalvfs` (`ERANGE`), needs a driver on the PF (`ENOENT`) and needs 0
//! between two non-zero values (`EBUSY`).

use std::io;

use super::{err, link, rw, text, word, DevicePart, Lookup, Node};
use crate::mock::{DeviceSpec, HostState, SimDevice};
use crate::pci::PciAddress;

/// What a write to an SR-IOV attribute does.
pub(super) enum Ctl {
    /// `sriov_numvfs` of a PF.
    NumVfs(PciAddress),
}

impl HostState {
    /// The address of VF `i` of `pf` (first VF offset 0x80, stride 1).
    pub(super) fn vf_address(pf: PciAddress, i: u16) -> Option<PciAddress> {
        let rid =
            ((pf.bus as u32) << 8 | (pf.device as u32) << 3 | pf.function as u32) + 0x80 + i as u32;
        if rid > 0xffff {
            return None;
        }
        PciAddress::new(pf.domain, (rid >> 8) as u8, ((rid >> 3) & 0x1f) as u8, (rid & 7) as u8)
    }

    /// Enables `n` VFs of `pf` (0 removes them), as writing `sriov_numvfs` does.
    pub(super) fn set_numvfs(&mut self, pf: PciAddress, n: u16) -> io::Result<()> {
        let Some(d) = self.devices.get(&pf) else { return Err(err(libc::ENODEV)) };
        let Some(sriov) = d.spec.sriov.clone() else { return Err(err(libc::ENOENT)) };
        let cur = self.numvfs(pf);
        if n > sriov.total_vfs {
            return Err(err(libc::ERANGE));
        }
        if n == cur {
            return Ok(());
        }
        if d.driver.is_none() {
            return Err(err(libc::ENOENT));
        }
        if n != 0 && cur != 0 {
            return Err(err(libc::EBUSY));
        }
        if n == 0 {
            for i in 0..cur {
                if let Some(va) = Self::vf_address(pf, i) {
                    self.set_driver(va, None);
                    self.devices.remove(&va);
                    self.sys.native_drivers.remove(&va);
                }
            }
            self.sys.numvfs.remove(&pf);
            return Ok(());
        }
        let mut next_group =
            self.devices.values().filter_map(|d| d.spec.iommu_group).max().map_or(0, |g| g + 1);
        let pfspec = d.spec.clone();
        // vfio-pci (with enable_sriov=1) captures its PF's VFs: `vfio_pci_bus_notifier`
        // sets their driver_override to vfio-pci, so they probe there.
        let pf_vfio = d.driver.as_deref() == Some("vfio-pci");
        for i in 0..n {
            let Some(va) = Self::vf_address(pf, i) else { return Err(err(libc::ENOSPC)) };
            let mut spec = DeviceSpec::at(va);
            spec.vendor = pfspec.vendor;
            spec.device = sriov.vf_device;
            spec.subsystem_vendor = pfspec.subsystem_vendor;
            spec.subsystem_device = pfspec.subsystem_device;
            spec.class = pfspec.class;
            spec.pcie = true;
            spec.flr = true;
            spec.driver = sriov.vf_driver.clone();
            if pfspec.iommu_group.is_some() {
                spec.iommu_group = Some(next_group);
                next_group += 1;
            }
            let dev = SimDevice {
                driver: None,
                driver_override: pf_vfio.then(|| "vfio-pci".to_string()),
                config: spec.config_image(),
                vfio_index: None,
                spec,
            };
            self.devices.insert(va, dev);
            if let Some(drv) = &sriov.vf_driver {
                self.sys.native_drivers.insert(va, drv.clone());
                self.set_driver(va, Some(if pf_vfio { "vfio-pci" } else { drv }));
            }
        }
        self.sys.numvfs.insert(pf, n);
        Ok(())
    }

    /// The PF whose enabled VF `a` is.
    pub(crate) fn vf_parent(&self, a: PciAddress) -> Option<PciAddress> {
        self.sys
            .numvfs
            .iter()
            .find_map(|(pf, n)| (0..*n).any(|i| Self::vf_address(*pf, i) == Some(a)).then_some(*pf))
    }

    /// How many VFs of `pf` are enabled.
    pub(super) fn numvfs(&self, pf: PciAddress) -> u16 {
        self.sys.numvfs.get(&pf).copied().unwrap_or(0)
    }
}

/// A function's SR-IOV attributes and links in its directory.
pub(super) const DEVICE: DevicePart = DevicePart { entries, node: device_node };

fn entries(st: &HostState, a: PciAddress) -> Vec<String> {
    let mut v = vec![];
    if st.devices.get(&a).is_some_and(|d| d.spec.sriov.is_some()) {
        v.extend(["sriov_totalvfs", "sriov_numvfs"].map(String::from));
        v.extend((0..st.numvfs(a)).map(|i| format!("virtfn{i}")));
    }
    if st.vf_parent(a).is_some() {
        v.push("physfn".into());
    }
    v
}

fn device_node(st: &HostState, a: PciAddress, rest: &[&str]) -> Lookup {
    let sriov = st.devices.get(&a)?.spec.sriov.as_ref();
    Some(match rest {
        ["sriov_totalvfs"] => sriov.map(|s| text(s.total_vfs)),
        ["sriov_numvfs"] => sriov.map(|_| rw(st.numvfs(a), Ctl::NumVfs(a))),
        [v] if v.starts_with("virtfn") => virtfn(st, a, &v["virtfn".len()..]),
        ["physfn"] => st.vf_parent(a).map(|pf| link(format!("../{pf}"))),
        _ => return None,
    })
}

/// `virtfnN` of `pf`: a link to VF `N` while it is enabled.
fn virtfn(st: &HostState, pf: PciAddress, n: &str) -> Option<Node> {
    let i: u16 = n.parse().ok()?;
    if i >= st.numvfs(pf) {
        return None;
    }
    let va = HostState::vf_address(pf, i)?;
    Some(link(format!("../{va}")))
}

pub(super) fn store(st: &mut HostState, ctl: Ctl, data: &[u8]) -> io::Result<()> {
    match ctl {
        Ctl::NumVfs(a) => {
            let n: u16 = word(data).parse().map_err(|_| err(libc::EINVAL))?;
            st.set_numvfs(a, n)
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::hostfs::HostFs;
    use crate::mock::sysfs::tests::{host, p};

    #[test]
    fn sriov_numvfs_follows_the_kernel_rules() {
        let h = host();
        let fs = h.fs();
        let n = p("/sys/bus/pci/devices/0000:02:00.0/sriov_numvfs");
        assert_eq!(
            fs.read_string(p("/sys/bus/pci/devices/0000:02:00.0/sriov_totalvfs")).unwrap(),
            "4"
        );
        assert_eq!(fs.write(n, b"5").unwrap_err().raw_os_error(), Some(libc::ERANGE));
        fs.write(n, b"2").unwrap();
        assert_eq!(fs.read_string(n).unwrap(), "2");
        let vf = fs.read_link(p("/sys/bus/pci/devices/0000:02:00.0/virtfn1")).unwrap();
        assert_eq!(vf, p("../0000:02:10.1"));
        assert_eq!(
            fs.read_string(p("/sys/bus/pci/devices/0000:02:00.0/virtfn1/device")).unwrap(),
            "0x10ca"
        );
        assert!(fs.exists(p("/sys/bus/pci/devices/0000:02:10.1/physfn")));
        assert_eq!(
            fs.read_link(p("/sys/bus/pci/devices/0000:02:10.0/driver")).unwrap(),
            p("../../../bus/pci/drivers/igbvf")
        );
        assert_eq!(fs.write(n, b"3").unwrap_err().raw_os_error(), Some(libc::EBUSY));
        fs.write(n, b"0").unwrap();
        assert!(!fs.exists(p("/sys/bus/pci/devices/0000:02:10.0")));
        // Needs a PF driver.
        fs.write(p("/sys/bus/pci/devices/0000:02:00.0/driver/unbind"), b"0000:02:00.0").unwrap();
        assert_eq!(fs.write(n, b"1").unwrap_err().raw_os_error(), Some(libc::ENOENT));
    }
}
