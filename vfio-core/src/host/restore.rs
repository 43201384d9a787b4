//! Putting devices back: `restore` (from the journal) and `unbind` (from the journal,
//! or back to the native driver). Each is planned as [`Step`]s from the state now and
//! carried out by the one executor, so `--dry-run` shows exactly what runs.
//!
//! A journal entry whose device no longer exists (a VF removed with its PF's
//! `sriov_numvfs`, a hot-unplugged card) cannot be restored and never will: `restore`
//! drops it and says so instead of failing on it forever.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::host::journal::{read_journal, write_journal, Journal, JournalEntry, NodeOwner};
use crate::host::lock::HostLock;
use crate::host::steps::{run_steps, Step};
use crate::host::SysfsDevice;
use crate::hostfs::{HostFs, NodeKind};
use crate::pci::PciAddress;

/// What `restore` or `unbind` did for one device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Restored {
    /// The device.
    pub address: String,
    /// The driver it is on now.
    pub driver: Option<String>,
    /// Why nothing was done, when nothing could be (the device is gone).
    pub note: Option<String>,
}

/// The changes that put a device back as `e` recorded it, judged from the state now.
pub fn plan_restore_entry(fs: &dyn HostFs, e: &JournalEntry) -> Result<Vec<Step>> {
    let a = e.pci_address()?;
    crate::host::require_device(fs, a)?;
    let dev = SysfsDevice::new(fs, a);
    let mut steps = vec![];
    let cur = dev.driver();
    let set_override = |steps: &mut Vec<Step>, v: &Option<String>| {
        steps.push(Step::Write {
            path: dev.attr_path("driver_override"),
            value: v.clone().unwrap_or_default(),
        })
    };
    if cur == e.driver {
        if dev.driver_override() != e.driver_override {
            set_override(&mut steps, &e.driver_override);
        }
    } else {
        if cur.is_some() {
            steps.push(Step::Write {
                path: dev.attr_path("driver/unbind"),
                value: e.address.clone(),
            });
        }
        // An override naming another driver keeps the probe from binding the prior
        // driver (it was set after that driver took the device): it is cleared for the
        // probe and written back after.
        let blocks =
            e.driver.is_some() && e.driver_override.is_some() && e.driver_override != e.driver;
        let during = if blocks { None } else { e.driver_override.clone() };
        if dev.driver_override() != during {
            set_override(&mut steps, &during);
        }
        if let Some(drv) = &e.driver {
            steps.push(Step::Write {
                path: PathBuf::from("/sys/bus/pci/drivers_probe"),
                value: e.address.clone(),
            });
            steps.push(Step::BindIfUnbound { address: a, driver: drv.clone() });
        }
        steps.push(Step::Expect { address: a, driver: e.driver.clone() });
        if during != e.driver_override {
            set_override(&mut steps, &e.driver_override);
        }
    }
    if let Some(n) = e.sriov_numvfs.filter(|n| *n > 0) {
        let now = dev.sriov_numvfs().unwrap_or(0);
        if now != n {
            if now != 0 {
                steps.push(Step::Write { path: dev.attr_path("sriov_numvfs"), value: "0".into() });
            }
            steps.push(Step::Write { path: dev.attr_path("sriov_numvfs"), value: n.to_string() });
        }
    }
    Ok(steps)
}

/// The change that gives a group node back its recorded owner (none when the node is
/// gone, is not a device node, or already has that owner).
pub fn plan_restore_node(fs: &dyn HostFs, o: &NodeOwner) -> Option<Step> {
    let path = PathBuf::from(&o.path);
    let m = fs.metadata(&path).ok()?;
    (m.kind == NodeKind::CharDevice && (m.uid, m.gid) != (o.uid, o.gid)).then_some(Step::Chown {
        path,
        uid: o.uid,
        gid: o.gid,
    })
}

/// What a restore of one device (or all with `None`) acts on: the device entries and
/// the node owners that go with them. A node is given back when no journaled device of
/// its group stays behind.
fn select(
    j: &Journal,
    fs: &dyn HostFs,
    which: Option<PciAddress>,
) -> (Vec<JournalEntry>, Vec<NodeOwner>) {
    let entries: Vec<JournalEntry> = j
        .devices
        .iter()
        .filter(|e| which.is_none_or(|a| e.pci_address().ok() == Some(a)))
        .cloned()
        .collect();
    let nodes = match which {
        None => j.nodes.clone(),
        Some(a) => {
            let group = SysfsDevice::new(fs, a).iommu_group();
            let others_in_group = |g: u32| {
                j.devices.iter().any(|e| {
                    e.pci_address()
                        .ok()
                        .is_some_and(|b| b != a && SysfsDevice::new(fs, b).iommu_group() == Some(g))
                })
            };
            j.nodes
                .iter()
                .filter(|o| o.group().is_some_and(|g| Some(g) == group && !others_in_group(g)))
                .cloned()
                .collect()
        }
    };
    (entries, nodes)
}

/// One planned device of a restore: its entry and its steps (`None` when the device is
/// gone and its entry is only dropped).
pub type RestorePlan = Vec<(JournalEntry, Option<Vec<Step>>)>;

/// The journal entries [`restore`] would act on, each with the changes it would make,
/// and the node owner changes after them.
pub fn plan_restore(
    fs: &dyn HostFs,
    which: Option<PciAddress>,
) -> Result<(RestorePlan, Vec<Step>)> {
    let j = read_journal(fs)?;
    let (entries, nodes) = select(&j, fs, which);
    let mut plan = vec![];
    for e in entries {
        let gone = e.pci_address().is_ok_and(|a| !SysfsDevice::new(fs, a).exists());
        let steps = if gone { None } else { Some(plan_restore_entry(fs, &e)?) };
        plan.push((e, steps));
    }
    let chowns = nodes.iter().filter_map(|o| plan_restore_node(fs, o)).collect();
    Ok((plan, chowns))
}

/// Returns journaled devices (one, or all with `None`) to their prior state, gives the
/// group nodes back their owners, and clears what was restored from the journal. Entries
/// that fail stay in the journal; the first error is returned after every entry was
/// tried. Entries of devices that no longer exist are dropped with a note.
pub fn restore(fs: &dyn HostFs, which: Option<PciAddress>) -> Result<Vec<Restored>> {
    let _lock = HostLock::acquire(fs)?;
    restore_locked(fs, which)
}

pub(crate) fn restore_locked(fs: &dyn HostFs, which: Option<PciAddress>) -> Result<Vec<Restored>> {
    let mut j = read_journal(fs)?;
    let before = j.clone();
    let (entries, nodes) = select(&j, fs, which);
    let mut done = vec![];
    let mut out = vec![];
    let mut first_err = None;
    for e in &entries {
        let Ok(a) = e.pci_address() else { continue };
        if !SysfsDevice::new(fs, a).exists() {
            done.push(e.address.clone());
            out.push(Restored {
                address: e.address.clone(),
                driver: None,
                note: Some("the device no longer exists; its journal entry was dropped".into()),
            });
            continue;
        }
        match plan_restore_entry(fs, e).and_then(|s| run_steps(fs, &s)) {
            Ok(()) => {
                done.push(e.address.clone());
                out.push(Restored {
                    address: e.address.clone(),
                    driver: SysfsDevice::new(fs, a).driver(),
                    note: None,
                });
            }
            Err(err) => {
                first_err.get_or_insert(err);
            }
        }
    }
    j.remove_devices(&done);
    if first_err.is_none() {
        for o in &nodes {
            if let Some(step) = plan_restore_node(fs, o) {
                if let Err(e) = run_steps(fs, &[step]) {
                    first_err.get_or_insert(e);
                    continue;
                }
            }
            j.nodes.retain(|n| n.path != o.path);
        }
    }
    if j != before {
        write_journal(fs, &j)?;
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// The changes [`unbind`] would make, without making them.
pub fn plan_unbind(fs: &dyn HostFs, a: PciAddress) -> Result<Vec<Step>> {
    crate::host::require_device(fs, a)?;
    let j = read_journal(fs)?;
    if let Some(e) = j.entry(a) {
        let mut steps = plan_restore_entry(fs, e)?;
        let (_, nodes) = select(&j, fs, Some(a));
        steps.extend(nodes.iter().filter_map(|o| plan_restore_node(fs, o)));
        return Ok(steps);
    }
    native_unbind_steps(fs, a)
}

/// Unbinding a device nobody journaled: off vfio-pci, override cleared, probe.
fn native_unbind_steps(fs: &dyn HostFs, a: PciAddress) -> Result<Vec<Step>> {
    let dev = SysfsDevice::new(fs, a);
    let now = dev.driver();
    if now.as_deref() != Some("vfio-pci") && dev.driver_override().is_none() {
        return Err(Error::Invalid {
            what: "device to unbind",
            input: a.to_string(),
            reason: format!(
                "it is on {} and not in the journal: nothing to undo",
                now.as_deref().unwrap_or("no driver")
            ),
        });
    }
    let mut steps = vec![];
    if now.is_some() {
        steps.push(Step::Write { path: dev.attr_path("driver/unbind"), value: a.to_string() });
    }
    if dev.driver_override().is_some() {
        steps.push(Step::Write { path: dev.attr_path("driver_override"), value: String::new() });
    }
    steps.push(Step::Write {
        path: PathBuf::from("/sys/bus/pci/drivers_probe"),
        value: a.to_string(),
    });
    Ok(steps)
}

/// Unbinds a device from vfio-pci: back to its journaled state when there is one,
/// otherwise clears `driver_override` and lets the kernel probe its native driver.
pub fn unbind(fs: &dyn HostFs, a: PciAddress) -> Result<Restored> {
    crate::host::require_device(fs, a)?;
    let _lock = HostLock::acquire(fs)?;
    if read_journal(fs)?.entry(a).is_some() {
        return restore_locked(fs, Some(a))?
            .pop()
            .ok_or_else(|| Error::NotFound { what: format!("journal entry of {a}"), hint: None });
    }
    run_steps(fs, &native_unbind_steps(fs, a)?)?;
    Ok(Restored { address: a.to_string(), driver: SysfsDevice::new(fs, a).driver(), note: None })
}
