//! SR-IOV: virtual functions of a physical function.
//!
//! Changing a PF's VF count removes its VFs (all of them when the count changes from a
//! non-zero value, since the kernel passes through 0). VFs bound to vfio-pci (a VM may
//! hold them) or used by the host are never removed without `force`; when forced, the
//! bind journal entries of the VFs that are gone are dropped and reported.

use crate::error::{Error, Result};
use crate::host::guards::host_uses;
use crate::host::journal::{read_journal, write_journal, JournalEntry};
use crate::host::lock::HostLock;
use crate::host::{device_path, read_opt, require_device, resolve_link, write_text, SysfsDevice};
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

/// Parses a VF count attribute (`sriov_totalvfs`, `sriov_numvfs`: a decimal number up to
/// 65535, white space around ignored) named `what` in the error. Pure; fuzzed.
pub fn parse_vf_count(text: &str, what: &str) -> Result<u16> {
    let s = text.trim();
    s.parse().map_err(|_| Error::Invalid {
        what: "sysfs attribute",
        input: s.chars().take(64).collect(),
        reason: format!("{what} is not a number"),
    })
}

/// Reads the SR-IOV state of a device; an error when it has no SR-IOV capability.
pub fn sriov_state(fs: &dyn HostFs, a: PciAddress) -> Result<SriovState> {
    require_device(fs, a)?;
    let dir = device_path(a);
    let total = read_opt(fs, &dir.join("sriov_totalvfs")).ok_or_else(|| Error::Unsupported {
        what: format!("SR-IOV on {a}"),
        hint: Some("the device has no sriov_totalvfs; only physical functions with the SR-IOV capability have VFs".into()),
    })?;
    let total_vfs = parse_vf_count(&total, "sriov_totalvfs")?;
    let num_vfs = parse_vf_count(
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

/// A VF that a change of its PF's VF count removes (for good, or to re-create it empty).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VfImpact {
    /// The VF.
    pub vf: PciAddress,
    /// Its driver now.
    pub driver: Option<String>,
    /// Why the host needs it ([`host_uses`]; empty when it does not).
    pub host_uses: Vec<String>,
    /// Whether a VF at this address exists again after the change (it is re-created,
    /// without its driver binding, when the count goes between two non-zero values).
    pub returns: bool,
}

impl VfImpact {
    /// Whether removing it takes something away: it is on vfio-pci (a VM may use it) or
    /// the host uses it.
    pub fn in_use(&self) -> bool {
        self.driver.as_deref() == Some("vfio-pci") || !self.host_uses.is_empty()
    }

    /// What uses it, for messages (`0000:02:10.0 (bound to vfio-pci)`).
    pub fn describe(&self) -> String {
        let mut why = vec![];
        if self.driver.as_deref() == Some("vfio-pci") {
            why.push("bound to vfio-pci".to_string());
        }
        why.extend(self.host_uses.iter().cloned());
        format!("{} ({})", self.vf, why.join("; "))
    }
}

/// The VFs that setting the count of `st`'s PF to `n` removes: every VF when the count
/// changes from a non-zero value (going between two non-zero counts passes through 0).
pub fn vfs_removed_by(fs: &dyn HostFs, st: &SriovState, n: u16) -> Vec<VfImpact> {
    if st.num_vfs == 0 || n == st.num_vfs {
        return vec![];
    }
    st.vfs
        .iter()
        .enumerate()
        .map(|(i, (vf, driver))| VfImpact {
            vf: *vf,
            driver: driver.clone(),
            host_uses: host_uses(fs, *vf),
            returns: i < n as usize,
        })
        .collect()
}

/// The error for VFs in use that a change would remove, naming them and the fix.
pub fn vfs_in_use_error(action: String, affected: &[VfImpact]) -> Error {
    let busy: Vec<&VfImpact> = affected.iter().filter(|v| v.in_use()).collect();
    let on_vfio: Vec<String> = busy
        .iter()
        .filter(|v| v.driver.as_deref() == Some("vfio-pci"))
        .map(|v| v.vf.to_string())
        .collect();
    let mut fix = vec![];
    if !on_vfio.is_empty() {
        fix.push(format!(
            "stop the VMs using them and unbind them from vfio-pci first ({})",
            on_vfio.join(", ")
        ));
    }
    if busy.iter().any(|v| !v.host_uses.is_empty()) {
        fix.push("move the host's use off them".into());
    }
    Error::VfsInUse {
        action,
        vfs: busy.iter().map(|v| v.describe()).collect(),
        fix: fix.join(" and "),
    }
}

/// What [`set_num_vfs`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SriovChange {
    /// The state after the change.
    pub state: SriovState,
    /// The VFs the change removed (or re-created).
    pub removed: Vec<VfImpact>,
    /// The bind journal entries dropped because their VF no longer exists.
    pub dropped: Vec<JournalEntry>,
}

/// Sets the number of VFs, bounded by `sriov_totalvfs`; going between two non-zero
/// counts passes through 0 as the kernel requires.
///
/// A change that removes VFs bound to vfio-pci or used by the host (see [`host_uses`])
/// is refused with [`Error::VfsInUse`] unless `force`; when forced, the bind journal
/// entries of VFs that no longer exist afterwards are dropped (under the host lock)
/// and returned, since no `restore` could ever put them back.
pub fn set_num_vfs(fs: &dyn HostFs, a: PciAddress, n: u16, force: bool) -> Result<SriovChange> {
    let st = sriov_state(fs, a)?;
    if n > st.total_vfs {
        return Err(Error::Invalid {
            what: "VF count",
            input: n.to_string(),
            reason: format!("{a} supports at most {} VFs (sriov_totalvfs)", st.total_vfs),
        });
    }
    if n == st.num_vfs {
        return Ok(SriovChange { state: st, removed: vec![], dropped: vec![] });
    }
    let removed = vfs_removed_by(fs, &st, n);
    if !force && removed.iter().any(VfImpact::in_use) {
        let action = if n == 0 {
            format!("disabling the VFs of {a}")
        } else {
            format!("changing the VF count of {a} from {} to {n} (through 0)", st.num_vfs)
        };
        return Err(vfs_in_use_error(action, &removed));
    }
    let f = device_path(a).join("sriov_numvfs");
    let hint = |e: Error| match e.errno() {
        Some(nix::errno::Errno::ENOENT) => e.with_hint(
            "the device needs a driver that supports SR-IOV; bind it first \
                 (vfio-pci creates VFs only when loaded with enable_sriov=1)",
        ),
        _ => e,
    };
    if st.num_vfs != 0 && n != 0 {
        write_text(fs, &f, "0").map_err(hint)?;
    }
    write_text(fs, &f, &n.to_string()).map_err(hint)?;
    let dropped = drop_vanished(fs, &removed)?;
    Ok(SriovChange { state: sriov_state(fs, a)?, removed, dropped })
}

/// Drops the journal entries of removed VFs that no longer exist.
fn drop_vanished(fs: &dyn HostFs, removed: &[VfImpact]) -> Result<Vec<JournalEntry>> {
    let gone: Vec<PciAddress> =
        removed.iter().map(|v| v.vf).filter(|vf| !SysfsDevice::new(fs, *vf).exists()).collect();
    if gone.is_empty() {
        return Ok(vec![]);
    }
    let _lock = HostLock::acquire(fs)?;
    let mut j = read_journal(fs)?;
    let dropped: Vec<JournalEntry> = j
        .devices
        .iter()
        .filter(|e| e.pci_address().is_ok_and(|x| gone.contains(&x)))
        .cloned()
        .collect();
    if !dropped.is_empty() {
        let addresses: Vec<String> = dropped.iter().map(|e| e.address.clone()).collect();
        j.remove_devices(&addresses);
        write_journal(fs, &j)?;
    }
    Ok(dropped)
}

/// Every SR-IOV capable device.
pub fn list_pfs(fs: &dyn HostFs) -> Result<Vec<SriovState>> {
    Ok(crate::host::pci_addresses(fs)?
        .into_iter()
        .filter(|a| fs.exists(&device_path(*a).join("sriov_totalvfs")))
        .filter_map(|a| sriov_state(fs, a).ok())
        .collect())
}

#[cfg(all(test, feature = "mock"))]
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
        let s = set_num_vfs(&*fs, a, 2, false).unwrap().state;
        assert_eq!((s.total_vfs, s.num_vfs, s.vfs.len()), (4, 2, 2));
        assert_eq!(s.vfs[0].0.to_string(), "0000:02:10.0");
        // 2 -> 3 goes through 0 (the kernel refuses a direct change).
        assert_eq!(set_num_vfs(&*fs, a, 3, false).unwrap().state.vfs.len(), 3);
        let e = set_num_vfs(&*fs, a, 5, false).unwrap_err().to_string();
        assert!(e.contains("at most 4"), "{e}");
        assert!(set_num_vfs(&*fs, PciAddress::parse("00:04.0").unwrap(), 1, false)
            .unwrap_err()
            .to_string()
            .contains("SR-IOV"));
        assert_eq!(list_pfs(&*fs).unwrap().len(), 1);
        set_num_vfs(&*fs, a, 0, false).unwrap();
        h.set_driver(a, None);
        let e = set_num_vfs(&*fs, a, 1, false).unwrap_err().to_string();
        assert!(e.contains("needs a driver"), "{e}");
    }

    #[test]
    fn vfs_in_use_are_not_removed_without_force_and_their_journal_goes_with_them() {
        use crate::host::bind::{bind, BindRequest};
        use crate::host::restore::restore;
        use crate::mock::sysfs::SimNet;
        let h = host().with_sys(|s| *s = crate::mock::SysState::intel_ready());
        let fs = h.fs();
        let a = PciAddress::parse("02:00.0").unwrap();
        let vf = |s: &str| PciAddress::parse(s).unwrap();
        set_num_vfs(&*fs, a, 3, false).unwrap();
        // VF 0 to vfio-pci, VF 1 carries the host's default route, VF 2 is free.
        bind(&*fs, &BindRequest::vfio("0000:02:10.0")).unwrap();
        h.state().sys.nets.push(SimNet {
            name: "eth9".into(),
            device: vf("0000:02:10.1"),
            default_route: true,
            ipv4: vec![],
        });
        let before = h.state().sys.writes.len();
        for n in [0, 1, 2] {
            let e = set_num_vfs(&*fs, a, n, false).unwrap_err();
            assert!(matches!(e, Error::VfsInUse { .. }), "{e}");
            let e = e.to_string();
            assert_eq!(e.lines().count(), 1, "{e}");
            assert!(
                e.contains("0000:02:10.0 (bound to vfio-pci)")
                    && e.contains(
                        "0000:02:10.1 (network interface eth9 carries the default route)"
                    )
                    && !e.contains("0000:02:10.2")
                    && e.contains("unbind them from vfio-pci first (0000:02:10.0)")
                    && e.contains("force the change"),
                "{e}"
            );
        }
        assert_eq!(h.state().sys.writes.len(), before, "nothing was written");
        assert_eq!(sriov_state(&*fs, a).unwrap().num_vfs, 3);
        // More VFs keep the ones there.
        assert!(set_num_vfs(&*fs, a, 3, false).unwrap().removed.is_empty());

        // Forced: the VFs go, and the journal entry of the one bound goes with them.
        h.state().sys.nets.clear();
        let c = set_num_vfs(&*fs, a, 0, true).unwrap();
        assert_eq!(c.state.num_vfs, 0);
        assert_eq!(c.removed.len(), 3);
        assert_eq!(c.dropped.len(), 1);
        assert_eq!(c.dropped[0].address, "0000:02:10.0");
        assert!(read_journal(&*fs).unwrap().is_empty());
        assert!(restore(&*fs, None).unwrap().is_empty());

        // A VF that comes back at the same address keeps its entry (restore can act on
        // it); only those gone for good are dropped.
        set_num_vfs(&*fs, a, 2, false).unwrap();
        bind(&*fs, &BindRequest::vfio("0000:02:10.0")).unwrap();
        bind(&*fs, &BindRequest::vfio("0000:02:10.1")).unwrap();
        let c = set_num_vfs(&*fs, a, 1, true).unwrap();
        let dropped: Vec<&str> = c.dropped.iter().map(|e| e.address.as_str()).collect();
        assert_eq!(dropped, vec!["0000:02:10.1"]);
        let j = read_journal(&*fs).unwrap();
        assert_eq!(j.devices.len(), 1);
        assert_eq!(j.devices[0].address, "0000:02:10.0");
        restore(&*fs, None).unwrap();
        assert!(read_journal(&*fs).unwrap().is_empty());
    }
}
