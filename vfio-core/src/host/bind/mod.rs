//! Binding devices to vfio-pci through `driver_override`, transactionally.
//!
//! A bind is planned first ([`plan_bind`]): which functions (one, a slot, or a whole
//! IOMMU group), what each is bound to now, and the exact [`Step`]s that will move it.
//! The plan is then executed ([`execute`]) under the host lock:
//!
//! 1. the prior state of every device (driver, `driver_override`, `sriov_numvfs`) and the
//!    owner of every group node `--user` changes are added to the journal
//!    ([`crate::host::journal`]) before anything changes, so that a crash leaves enough
//!    for [`restore`](crate::host::restore::restore);
//! 2. the steps run: `modprobe vfio-pci` if needed; per device `sriov_numvfs` to 0 when
//!    VFs are on, `driver_override`, `driver/unbind`, `drivers_probe`; then `chown` of
//!    `/dev/vfio/N` for `--user`;
//! 3. the result is verified (the `driver` link names the target, `/dev/vfio/N` exists);
//! 4. if any step or the verification fails, every device and node is put back as it
//!    was before this run and the journal is put back as it was.
//!
//! Guards ([`crate::host::guards`]) refuse a device the host itself uses unless forced,
//! and a PF whose VFs (which the bind removes) are on vfio-pci or used by the host; the
//! plan warns about every VF a bind removes.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::host::devices::group_members;
use crate::host::filter::AddressFilter;
use crate::host::guards::host_uses;
use crate::host::journal::{read_journal, write_journal, JournalEntry, NodeOwner};
use crate::host::lock::HostLock;
use crate::host::restore::{plan_restore_entry, plan_restore_node};
use crate::host::sriov::{vfs_in_use_error, vfs_removed_by};
use crate::host::steps::{run_steps, Step};
use crate::host::{current_driver, iommu_group, pci_addresses, read_opt, SysfsDevice};
use crate::hostfs::HostFs;
use crate::pci::PciAddress;

pub use crate::host::journal::JOURNAL;

/// What to bind.
#[derive(Debug, Clone)]
pub struct BindRequest {
    /// A function (`0000:01:00.0`, `01:00.0`) or a slot (`01:00`: all its functions).
    pub address: String,
    /// The driver to bind to (`vfio-pci`).
    pub driver: String,
    /// Bind every member of the devices' IOMMU groups (bridges excepted).
    pub group: bool,
    /// Give `/dev/vfio/N` to this user (a name from /etc/passwd, or a number).
    pub user: Option<String>,
    /// Bind even devices the host uses.
    pub force: bool,
}

impl BindRequest {
    /// Binding `address` to vfio-pci, with no options.
    pub fn vfio(address: &str) -> Self {
        BindRequest {
            address: address.into(),
            driver: "vfio-pci".into(),
            group: false,
            user: None,
            force: false,
        }
    }
}

/// A planned bind: the prior state and the exact steps.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BindPlan {
    /// The driver devices are moved to.
    pub driver: String,
    /// The devices that will move, with their prior state (the journal entries).
    pub devices: Vec<JournalEntry>,
    /// Devices already bound to the driver (left alone).
    pub already: Vec<PciAddress>,
    /// The IOMMU groups involved.
    pub groups: Vec<u32>,
    /// The owners of the group nodes `--user` changes, before the change.
    pub nodes: Vec<NodeOwner>,
    /// The changes, in order.
    pub steps: Vec<Step>,
    /// Things worth knowing (a group still held by host drivers...).
    pub warnings: Vec<String>,
}

/// What a finished bind did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BindOutcome {
    /// The plan that was carried out.
    pub plan: BindPlan,
    /// The group nodes now present (`/dev/vfio/N`).
    pub dev_nodes: Vec<String>,
}

/// Finds a user in `/etc/passwd` text: (uid, gid). Pure; fuzzed.
pub fn parse_passwd_user(passwd: &str, user: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.splitn(5, ':').collect();
        if f.len() >= 4 && f[0] == user {
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        } else {
            None
        }
    })
}

/// Looks up a user in `/etc/passwd` (or takes a number): (uid, gid).
pub fn lookup_user(fs: &dyn HostFs, user: &str) -> Result<(u32, u32)> {
    let passwd = read_opt(fs, Path::new("/etc/passwd")).unwrap_or_default();
    if let Some(ids) = parse_passwd_user(&passwd, user) {
        return Ok(ids);
    }
    if let Ok(uid) = user.parse::<u32>() {
        return Ok((uid, uid));
    }
    Err(Error::NotFound {
        what: format!("user {user:?} in /etc/passwd"),
        hint: Some("give an existing user name or a numeric uid".into()),
    })
}

/// The functions an address or slot names.
pub fn select(fs: &dyn HostFs, address: &str) -> Result<Vec<PciAddress>> {
    let f = AddressFilter::parse(address)?;
    let v: Vec<PciAddress> = pci_addresses(fs)?.into_iter().filter(|a| f.matches(*a)).collect();
    if v.is_empty() {
        return Err(Error::NotFound {
            what: format!("PCI device {address}"),
            hint: Some("the devices present are under /sys/bus/pci/devices".into()),
        });
    }
    Ok(v)
}

/// Whether a driver name can name a directory of `/sys/bus/pci/drivers`.
fn check_driver_name(d: &str) -> Result<()> {
    if d.is_empty()
        || d == "."
        || d == ".."
        || d.len() > 255
        || !d.chars().all(|c| c.is_ascii_graphic() && c != '/')
    {
        return Err(Error::Invalid {
            what: "driver name",
            input: d.chars().take(64).collect(),
            reason: "a driver is a plain name such as vfio-pci or pci-stub".into(),
        });
    }
    Ok(())
}

/// Plans a bind without changing anything (this is also the dry run).
pub fn plan_bind(fs: &dyn HostFs, req: &BindRequest) -> Result<BindPlan> {
    let target = req.driver.as_str();
    check_driver_name(target)?;
    let vfio = target == "vfio-pci";
    let mut devs = select(fs, &req.address)?;
    let mut groups: Vec<u32> = devs.iter().filter_map(|a| iommu_group(fs, *a)).collect();
    groups.sort();
    groups.dedup();
    if req.group {
        for g in &groups {
            devs.extend(
                group_members(fs, *g).into_iter().filter(|a| !SysfsDevice::new(fs, *a).is_bridge()),
            );
        }
        devs.sort();
        devs.dedup();
    }
    let user = req.user.as_deref().map(|u| lookup_user(fs, u)).transpose()?;
    let mut plan = BindPlan {
        driver: target.into(),
        devices: vec![],
        already: vec![],
        groups: groups.clone(),
        nodes: vec![],
        steps: vec![],
        warnings: vec![],
    };
    for &a in &devs {
        let dev = SysfsDevice::new(fs, a);
        if dev.is_bridge() {
            return Err(Error::Unsupported {
                what: format!("binding the bridge {a} to {target}"),
                hint: Some("vfio-pci takes endpoints only; bridges stay on pcieport".into()),
            });
        }
        if vfio && iommu_group(fs, a).is_none() {
            // Some IOMMUs (virtio-iommu, firmware-described ones) give a device its group
            // only when a driver probes it: with an IOMMU active, or in no-IOMMU mode, the
            // group appears when vfio-pci takes the device (checked after the bind).
            if !iommu_active(fs) && !noiommu_enabled(fs) {
                return Err(Error::Unsupported {
                    what: format!("VFIO for {a}, which has no IOMMU group"),
                    hint: Some("enable the IOMMU first (the doctor checks say how)".into()),
                });
            }
            if user.is_some() {
                return Err(Error::Unsupported {
                    what: format!("a user for {a}, which has no IOMMU group yet"),
                    hint: Some(format!(
                        "its group appears when vfio-pci takes it: bind {a} first, then bind it \
                         again for the user"
                    )),
                });
            }
            plan.warnings.push(format!(
                "{a} has no IOMMU group yet: the IOMMU gives it one when vfio-pci takes it"
            ));
        }
        if !dev.has("driver_override") {
            return Err(Error::Unsupported {
                what: format!("driver_override on {a}"),
                hint: Some(
                    "this kernel predates driver_override (3.16); bind at boot instead (persist)"
                        .into(),
                ),
            });
        }
        let driver = dev.driver();
        if driver.as_deref() == Some(target) {
            plan.already.push(a);
            continue;
        }
        if !req.force {
            let why = host_uses(fs, a);
            if !why.is_empty() {
                return Err(Error::InUse { device: a.to_string(), reason: why.join("; ") });
            }
        }
        // The prior state must be read, not guessed: an attribute that exists but cannot
        // be read fails the plan rather than journaling "none" (restore would then lose
        // the override or the VFs).
        let sriov_numvfs = dev
            .text_if_present("sriov_numvfs")?
            .map(|v| {
                v.parse().map_err(|_| Error::Invalid {
                    what: "sriov_numvfs",
                    input: v.clone(),
                    reason: format!("{a}: not a number"),
                })
            })
            .transpose()?;
        if sriov_numvfs.unwrap_or(0) > 0 {
            // Binding sets sriov_numvfs to 0: every VF disappears with its binding.
            let st = crate::host::sriov::sriov_state(fs, a)?;
            let removed = vfs_removed_by(fs, &st, 0);
            if !req.force && removed.iter().any(|v| v.in_use()) {
                let action = format!("binding {a} to {target} (which sets its sriov_numvfs to 0)");
                return Err(vfs_in_use_error(action, &removed));
            }
            let names: Vec<String> = removed
                .iter()
                .map(|v| if v.in_use() { v.describe() } else { v.vf.to_string() })
                .collect();
            plan.warnings.push(format!(
                "binding {a} sets its sriov_numvfs to 0: its {} VFs disappear ({}) until it is \
                 unbound or restored",
                st.num_vfs,
                names.join(", ")
            ));
        }
        let driver_override =
            dev.text_if_present("driver_override")?.filter(|s| s != "(null)" && !s.is_empty());
        plan.devices.push(JournalEntry {
            address: a.to_string(),
            target: target.into(),
            driver,
            driver_override,
            sriov_numvfs,
        });
    }
    if !fs.exists(&Path::new("/sys/bus/pci/drivers").join(target))
        || (vfio && !fs.exists(Path::new("/sys/module/vfio_pci")))
    {
        plan.steps.push(Step::Modprobe(target.into()));
    }
    for e in &plan.devices {
        let p: PathBuf = Path::new(crate::host::PCI_DEVICES).join(&e.address);
        if e.sriov_numvfs.unwrap_or(0) > 0 {
            plan.steps.push(Step::Write { path: p.join("sriov_numvfs"), value: "0".into() });
        }
        plan.steps.push(Step::Write { path: p.join("driver_override"), value: target.into() });
        if e.driver.is_some() {
            plan.steps
                .push(Step::Write { path: p.join("driver/unbind"), value: e.address.clone() });
        }
        plan.steps.push(Step::Write {
            path: "/sys/bus/pci/drivers_probe".into(),
            value: e.address.clone(),
        });
    }
    if let Some((uid, gid)) = user {
        if !vfio {
            return Err(Error::Invalid {
                what: "bind request",
                input: "user".into(),
                reason: "only group nodes of vfio-pci (/dev/vfio/N) can be given to a user".into(),
            });
        }
        for g in &groups {
            let node = group_node(fs, *g);
            let before = fs.metadata(Path::new(&node)).ok();
            // A node that appears with the bind is the kernel's: root's.
            plan.nodes.push(NodeOwner {
                path: node.clone(),
                uid: before.map_or(0, |m| m.uid),
                gid: before.map_or(0, |m| m.gid),
            });
            plan.steps.push(Step::Chown { path: node.into(), uid, gid });
        }
    }
    if vfio && !req.group {
        for g in &groups {
            let moving: Vec<String> = plan.devices.iter().map(|e| e.address.clone()).collect();
            let held: Vec<String> = group_members(fs, *g)
                .into_iter()
                .filter(|m| {
                    !moving.contains(&m.to_string()) && !SysfsDevice::new(fs, *m).is_bridge()
                })
                .filter_map(|m| {
                    let d = current_driver(fs, m)?;
                    (!crate::host::groups::HARMLESS_DRIVERS.contains(&d.as_str()))
                        .then(|| format!("{m} ({d})"))
                })
                .collect();
            if !held.is_empty() {
                plan.warnings.push(format!(
                    "IOMMU group {g} also holds {}: VFIO cannot open the group until they are bound too (bind the whole group)",
                    held.join(", ")
                ));
            }
        }
    }
    Ok(plan)
}

/// Whether an IOMMU is active (`/sys/class/iommu` lists one).
fn iommu_active(fs: &dyn HostFs) -> bool {
    fs.read_dir(Path::new("/sys/class/iommu")).is_ok_and(|v| !v.is_empty())
}

/// Whether vfio's unsafe no-IOMMU mode is on.
fn noiommu_enabled(fs: &dyn HostFs) -> bool {
    fs.read_string(Path::new("/sys/module/vfio/parameters/enable_unsafe_noiommu_mode"))
        .is_ok_and(|v| v == "Y" || v == "1")
}

fn verify(fs: &dyn HostFs, plan: &BindPlan) -> Result<Vec<String>> {
    for e in &plan.devices {
        let a = e.pci_address()?;
        let now = current_driver(fs, a);
        if now.as_deref() != Some(plan.driver.as_str()) {
            return Err(Error::BindFailed {
                device: e.address.clone(),
                driver: plan.driver.clone(),
                reason: format!(
                    "the driver link names {} after drivers_probe",
                    now.as_deref().unwrap_or("no driver")
                ),
            });
        }
    }
    let mut nodes = vec![];
    if plan.driver == "vfio-pci" {
        // The groups now: a device may have got its group only when vfio-pci took it.
        let mut groups = plan.groups.clone();
        for e in &plan.devices {
            match iommu_group(fs, e.pci_address()?) {
                Some(g) => groups.push(g),
                None => {
                    return Err(Error::BindFailed {
                        device: e.address.clone(),
                        driver: plan.driver.clone(),
                        reason: "it has no IOMMU group on vfio-pci".into(),
                    })
                }
            }
        }
        groups.sort();
        groups.dedup();
        for g in &groups {
            let n = group_node(fs, *g);
            if !fs.exists(Path::new(&n)) {
                return Err(Error::BindFailed {
                    device: plan.devices.first().map(|e| e.address.clone()).unwrap_or_default(),
                    driver: plan.driver.clone(),
                    reason: format!("{n} did not appear"),
                });
            }
            nodes.push(n);
        }
    }
    Ok(nodes)
}

/// The node of a group: `/dev/vfio/noiommu-N` in no-IOMMU mode, else `/dev/vfio/N`.
fn group_node(fs: &dyn HostFs, g: u32) -> String {
    let noiommu = format!("/dev/vfio/noiommu-{g}");
    if fs.exists(Path::new(&noiommu)) {
        noiommu
    } else {
        format!("/dev/vfio/{g}")
    }
}

/// Carries out a plan: journal, steps, verification; rolls back on any failure.
///
/// The plan may have been made before the lock was taken (by a caller that showed it
/// first): under the lock, each device's prior state is read again, and a plan the host
/// no longer matches (another run moved a device meanwhile) is refused before anything
/// changes.
pub fn execute(fs: &dyn HostFs, plan: &BindPlan) -> Result<BindOutcome> {
    let _lock = HostLock::acquire(fs)?;
    check_current(fs, plan)?;
    execute_locked(fs, plan)
}

/// Whether every device of a plan is still in the prior state the plan recorded.
fn check_current(fs: &dyn HostFs, plan: &BindPlan) -> Result<()> {
    for e in &plan.devices {
        let dev = SysfsDevice::new(fs, e.pci_address()?);
        let override_now =
            dev.text_if_present("driver_override")?.filter(|s| s != "(null)" && !s.is_empty());
        let numvfs_now = dev.text_if_present("sriov_numvfs")?.and_then(|v| v.parse().ok());
        if dev.driver() != e.driver
            || override_now != e.driver_override
            || numvfs_now != e.sriov_numvfs
        {
            return Err(Error::BindFailed {
                device: e.address.clone(),
                driver: plan.driver.clone(),
                reason: "the device changed since the plan was made (another process?); \
                         nothing was changed: plan and bind again"
                    .into(),
            });
        }
    }
    Ok(())
}

fn execute_locked(fs: &dyn HostFs, plan: &BindPlan) -> Result<BindOutcome> {
    let before = read_journal(fs)?;
    let mut journal = before.clone();
    journal.add_devices(&plan.devices);
    for n in &plan.nodes {
        journal.add_node(n.clone());
    }
    if journal != before {
        write_journal(fs, &journal)?;
    }
    let result = run_steps(fs, &plan.steps).and_then(|_| verify(fs, plan));
    match result {
        Ok(dev_nodes) => Ok(BindOutcome { plan: plan.clone(), dev_nodes }),
        Err(e) => Err(rollback(fs, plan, &before, e)),
    }
}

/// Puts every device and node of a failed plan back as it was before this run, and the
/// journal as it was; the error says whether that worked.
fn rollback(
    fs: &dyn HostFs,
    plan: &BindPlan,
    before: &crate::host::journal::Journal,
    e: Error,
) -> Error {
    let mut problems = vec![];
    for entry in plan.devices.iter().rev() {
        if let Err(r) = plan_restore_entry(fs, entry).and_then(|s| run_steps(fs, &s)) {
            problems.push(r.to_string());
        }
    }
    for o in &plan.nodes {
        if let Some(step) = plan_restore_node(fs, o) {
            if let Err(r) = run_steps(fs, &[step]) {
                problems.push(r.to_string());
            }
        }
    }
    let device = plan.devices.first().map(|e| e.address.clone()).unwrap_or_default();
    let reason = if problems.is_empty() {
        match write_journal(fs, before) {
            Ok(()) => format!("{e}; every change was rolled back"),
            Err(j) => format!(
                "{e}; every change was rolled back, but the journal could not be put back ({j})"
            ),
        }
    } else {
        format!(
            "{e}; rollback incomplete ({}); restore every journaled device to finish",
            problems.join("; ")
        )
    };
    Error::BindFailed { device, driver: plan.driver.clone(), reason }
}

/// Plans and carries out a bind.
pub fn bind(fs: &dyn HostFs, req: &BindRequest) -> Result<BindOutcome> {
    let _lock = HostLock::acquire(fs)?;
    let plan = plan_bind(fs, req)?;
    execute_locked(fs, &plan)
}

#[cfg(all(test, feature = "mock"))]
mod tests;
