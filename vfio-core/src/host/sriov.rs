//! SR-IOV: virtual functions of a physical function.

use std::path::Path;

use crate::error::{Error, Result};
use crate::host::{device_path, read_opt, require_device, resolve_link, write_text};
use crate::hostfs::HostFs;
use crate::pci::PciAddress;

/// The SR-IOV state of a physical function.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SriovState {
    /// The physical function.
    pub address: PciAddress,
    /// `sriov_totalvfs`.
    pub total_vfs: u16,
    /// `sriov_numvfs`.
    pub num_vfs: u16,
    /// The enabled VFs (from the `virtfnN` links), with their drivers.
    pub vfs: Vec<(PciAddress, Option<String>)>,
}

/// Reads the SR-IOV state of a device; an error when it has no SR-IOV capability.
pub fn sriov_state(fs: &dyn HostFs, a: PciAddress) -> Result<SriovState> {
    require_device(fs, a)?;
    let dir = device_path(a);
    let total = read_opt(fs, &dir.join("sriov_totalvfs")).ok_or_else(|| Error::Unsupported {
        what: format!("SR-IOV on {a}"),
        hint: Some("the device has no sriov_totalvfs; only physical functions with the SR-IOV capability have VFs".into()),
    })?;
    let parse = |s: &str, what: &str| -> Result<u16> {
        s.parse().map_err(|_| Error::Invalid {
            what: "sysfs attribute",
            input: s.into(),
            reason: format!("{what} is not a number"),
        })
    };
    let total_vfs = parse(&total, "sriov_totalvfs")?;
    let num_vfs = parse(
        &read_opt(fs, &dir.join("sriov_numvfs")).unwrap_or_else(|| "0".into()),
        "sriov_numvfs",
    )?;
    let mut vfs = vec![];
    for i in 0..num_vfs {
        let link = dir.join(format!("virtfn{i}"));
        if let Ok(t) = fs.read_link(&link) {
            let target = resolve_link(&link, &t);
            if let Some(va) =
                target.file_name().and_then(|n| PciAddress::parse(&n.to_string_lossy()).ok())
            {
                vfs.push((va, crate::host::current_driver(fs, va)));
            }
        }
    }
    Ok(SriovState { address: a, total_vfs, num_vfs, vfs })
}

/// Sets the number of VFs, bounded by `sriov_totalvfs`; going between two non-zero
/// counts passes through 0 as the kernel requires.
pub fn set_num_vfs(fs: &dyn HostFs, a: PciAddress, n: u16) -> Result<SriovState> {
    let st = sriov_state(fs, a)?;
    if n > st.total_vfs {
        return Err(Error::Invalid {
            what: "VF count",
            input: n.to_string(),
            reason: format!("{a} supports at most {} VFs (sriov_totalvfs)", st.total_vfs),
        });
    }
    if n == st.num_vfs {
        return Ok(st);
    }
    let f = device_path(a).join("sriov_numvfs");
    let hint = |e: Error| match e.errno() {
        Some(nix::errno::Errno::ENOENT) => {
            e.with_hint("the device needs a driver that supports SR-IOV; bind it first")
        }
        _ => e,
    };
    if st.num_vfs != 0 && n != 0 {
        write_text(fs, &f, "0").map_err(hint)?;
    }
    write_text(fs, &f, &n.to_string()).map_err(hint)?;
    sriov_state(fs, a)
}

/// Every SR-IOV capable device.
pub fn list_pfs(fs: &dyn HostFs) -> Result<Vec<SriovState>> {
    Ok(crate::host::pci_addresses(fs)?
        .into_iter()
        .filter(|a| fs.exists(&device_path(*a).join("sriov_totalvfs")))
        .filter_map(|a| sriov_state(fs, a).ok())
        .collect())
}

/// Whether a path exists (re-exported for callers that build paths).
pub fn has_sriov(fs: &dyn HostFs, a: PciAddress) -> bool {
    fs.exists(&Path::new(&device_path(a)).join("sriov_totalvfs"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::{DeviceSpec, MockHost, SriovSpec};

    fn host() -> MockHost {
        let mut nic = DeviceSpec::new("0000:02:00.0").driver("igb").group(3);
        nic.vendor = 0x8086;
        nic.class = 0x020000;
        nic.pcie = true;
        nic.sriov = Some(SriovSpec { total_vfs: 4, vf_device: 0x10ca, vf_driver: None });
        MockHost::new([nic, DeviceSpec::edu("0000:00:04.0").driver("edu")])
    }

    #[test]
    fn sets_lists_and_bounds_vfs() {
        let h = host();
        let fs = h.fs();
        let a = PciAddress::parse("02:00.0").unwrap();
        let s = set_num_vfs(&*fs, a, 2).unwrap();
        assert_eq!((s.total_vfs, s.num_vfs, s.vfs.len()), (4, 2, 2));
        assert_eq!(s.vfs[0].0.to_string(), "0000:02:10.0");
        // 2 -> 3 goes through 0 (the kernel refuses a direct change).
        assert_eq!(set_num_vfs(&*fs, a, 3).unwrap().vfs.len(), 3);
        let e = set_num_vfs(&*fs, a, 5).unwrap_err().to_string();
        assert!(e.contains("at most 4"), "{e}");
        assert!(set_num_vfs(&*fs, PciAddress::parse("00:04.0").unwrap(), 1)
            .unwrap_err()
            .to_string()
            .contains("SR-IOV"));
        assert_eq!(list_pfs(&*fs).unwrap().len(), 1);
        set_num_vfs(&*fs, a, 0).unwrap();
        h.set_driver(a, None);
        let e = set_num_vfs(&*fs, a, 1).unwrap_err().to_string();
        assert!(e.contains("needs a driver"), "{e}");
    }
}
