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
            hint: Some("run 'vfiotool list' to see the devices present".into()),
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
                    hint: Some("enable the IOMMU first; run 'vfiotool doctor'".into()),
                });
            }
            if user.is_some() {
                return Err(Error::Unsupported {
                    what: format!("--user for {a}, which has no IOMMU group yet"),
                    hint: Some(format!(
                        "its group appears when vfio-pci takes it: run 'vfiotool bind {a}', then \
                         the same command with --user"
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
                hint: Some("this kernel predates driver_override (3.16); bind at boot with 'vfiotool persist'".into()),
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
                what: "option",
                input: "--user".into(),
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
                    "IOMMU group {g} also holds {}: VFIO cannot open the group until they are bound too (use --group)",
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
                reason: "the device changed since the plan was made (another vfiotool run?); \
                         nothing was changed: run the command again"
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
            "{e}; rollback incomplete ({}); run 'vfiotool restore --all' to finish",
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
mod tests {
    use super::*;
    use crate::host::journal::read_journal;
    use crate::host::restore::{restore, unbind};
    use crate::mock::sysfs::{SimBlock, SimNet};
    use crate::mock::{DeviceSpec, FaultOp, MockHost, SriovSpec, SysState};

    fn a(s: &str) -> PciAddress {
        PciAddress::parse(s).unwrap()
    }

    fn sriov_nic(addr: &str, group: u32) -> DeviceSpec {
        let mut nic = DeviceSpec::new(addr).driver("igb").group(group);
        nic.vendor = 0x8086;
        nic.device = 0x10c9;
        nic.class = 0x020000;
        nic.pcie = true;
        nic.sriov =
            Some(SriovSpec { total_vfs: 4, vf_device: 0x10ca, vf_driver: Some("igbvf".into()) });
        nic
    }

    /// A host with an SR-IOV NIC (2 VFs on, an override set), an edu device, a GPU
    /// slot sharing a group with its audio function, and devices the host uses.
    fn host() -> MockHost {
        let mut vga = DeviceSpec::new("0000:05:00.0").driver("nouveau").group(7);
        vga.class = 0x030000;
        let mut audio = DeviceSpec::new("0000:05:00.1").driver("snd_hda_intel").group(7);
        audio.class = 0x040300;
        let mut boot = DeviceSpec::new("0000:00:02.0").driver("i915").group(0);
        boot.class = 0x030000;
        let h = MockHost::new([
            boot,
            DeviceSpec::edu("0000:00:04.0").driver("edu").group(1),
            sriov_nic("0000:02:00.0", 3),
            DeviceSpec::nvme("0000:04:00.0").driver("nvme").group(4),
            sriov_nic("0000:06:00.0", 8),
            DeviceSpec::bridge("0000:00:1c.0").driver("pcieport").group(7),
            vga,
            audio,
        ])
        .with_sys(|s| {
            *s = SysState::intel_ready();
            s.boot_vga = Some(a("0000:00:02.0"));
            s.blocks.push(SimBlock { name: "nvme0n1".into(), device: a("0000:04:00.0") });
            s.mounts.push("/dev/nvme0n1p1 / ext4 rw,relatime 0 0".into());
            s.nets.push(SimNet {
                name: "eth0".into(),
                device: a("0000:06:00.0"),
                default_route: true,
                ipv4: vec!["192.168.0.2/24".into()],
            });
        });
        let fs = h.fs();
        fs.write(Path::new("/sys/bus/pci/devices/0000:02:00.0/sriov_numvfs"), b"2").unwrap();
        h.state().devices.get_mut(&a("0000:02:00.0")).unwrap().driver_override = Some("igb".into());
        h
    }

    type Snapshot = Vec<(PciAddress, Option<String>, Option<String>, u16)>;

    fn snapshot(h: &MockHost) -> Snapshot {
        let st = h.state();
        st.devices
            .iter()
            .map(|(a, d)| {
                (
                    *a,
                    d.driver.clone(),
                    d.driver_override.clone(),
                    st.sys.numvfs.get(a).copied().unwrap_or(0),
                )
            })
            .collect()
    }

    #[test]
    fn binds_through_override_and_probe_and_restores() {
        let h = host();
        let fs = h.fs();
        let before = snapshot(&h);
        let out = bind(&*fs, &BindRequest::vfio("0000:02:00.0")).unwrap();
        assert_eq!(out.dev_nodes, vec!["/dev/vfio/3"]);
        assert!(out.plan.steps.contains(&Step::Modprobe("vfio-pci".into())));
        assert_eq!(current_driver(&*fs, a("0000:02:00.0")).as_deref(), Some("vfio-pci"));
        let j = read_journal(&*fs).unwrap();
        assert_eq!(j.devices.len(), 1);
        assert_eq!(j.devices[0].driver.as_deref(), Some("igb"));
        assert_eq!(j.devices[0].driver_override.as_deref(), Some("igb"));
        assert_eq!(j.devices[0].sriov_numvfs, Some(2));
        // Binding again is a no-op.
        let again = plan_bind(&*fs, &BindRequest::vfio("02:00.0")).unwrap();
        assert!(again.devices.is_empty() && again.already == vec![a("0000:02:00.0")]);
        let r = restore(&*fs, Some(a("0000:02:00.0"))).unwrap();
        assert_eq!(r[0].driver.as_deref(), Some("igb"));
        assert_eq!(snapshot(&h), before);
        assert!(read_journal(&*fs).unwrap().is_empty());
    }

    #[test]
    fn a_failure_at_every_write_rolls_everything_back() {
        let probe = host();
        let before = snapshot(&probe);
        let fs = probe.fs();
        let n0 = probe.state().sys.writes.len();
        bind(&*fs, &BindRequest { user: Some("qemu".into()), ..BindRequest::vfio("0000:02:00.0") })
            .unwrap();
        let writes = probe.state().sys.writes.len() - n0;
        assert!(writes >= 5, "journal, numvfs, override, unbind, probe: {writes}");
        for k in 1..=writes as u32 {
            let h = host();
            let fs = h.fs();
            h.inject_fault(FaultOp::Write, None, k, libc::EIO);
            let e = bind(
                &*fs,
                &BindRequest { user: Some("qemu".into()), ..BindRequest::vfio("0000:02:00.0") },
            )
            .unwrap_err()
            .to_string();
            if k > 1 {
                assert!(e.contains("rolled back"), "write {k}: {e}");
            }
            assert_eq!(snapshot(&h), before, "write {k}: {e}");
            assert!(read_journal(&*fs).unwrap().is_empty(), "write {k}");
        }
        // A group bind: a failure on the second device puts the first one back too.
        let probe = host();
        let fs = probe.fs();
        let req = BindRequest { group: true, ..BindRequest::vfio("0000:05:00.1") };
        let n0 = probe.state().sys.writes.len();
        bind(&*fs, &req).unwrap();
        let writes = probe.state().sys.writes.len() - n0;
        assert!(writes >= 7, "journal + 3 writes per device: {writes}");
        for k in 1..=writes as u32 {
            let h = host();
            let fs = h.fs();
            h.inject_fault(FaultOp::Write, None, k, libc::EIO);
            assert!(bind(&*fs, &req).is_err(), "write {k}");
            assert_eq!(snapshot(&h), before, "group bind, write {k}");
            assert!(read_journal(&*fs).unwrap().is_empty(), "write {k}");
        }
        // The chown failing also rolls back.
        let h = host();
        let fs = h.fs();
        h.inject_fault(FaultOp::Chown, None, 1, libc::EPERM);
        assert!(bind(
            &*fs,
            &BindRequest { user: Some("qemu".into()), ..BindRequest::vfio("0000:02:00.0") }
        )
        .is_err());
        assert_eq!(snapshot(&h), before);
    }

    #[test]
    fn user_gets_the_group_node_and_gives_it_back() {
        let h = host();
        let fs = h.fs();
        bind(&*fs, &BindRequest { user: Some("qemu".into()), ..BindRequest::vfio("0000:00:04.0") })
            .unwrap();
        let m = fs.metadata(Path::new("/dev/vfio/1")).unwrap();
        assert_eq!((m.uid, m.gid), (107, 111));
        assert!(bind(
            &*fs,
            &BindRequest { user: Some("nobody-here".into()), ..BindRequest::vfio("0000:02:00.0") }
        )
        .is_err());
        restore(&*fs, None).unwrap();
        assert_eq!(current_driver(&*fs, a("0000:00:04.0")).as_deref(), Some("edu"));
    }

    #[test]
    fn guards_refuse_host_devices_unless_forced() {
        let h = host();
        let fs = h.fs();
        for (dev, what) in [
            ("0000:00:02.0", "boot display"),
            ("0000:04:00.0", "mounted"),
            ("0000:06:00.0", "default route"),
        ] {
            let e = plan_bind(&*fs, &BindRequest::vfio(dev)).unwrap_err();
            assert!(matches!(e, Error::InUse { .. }), "{dev}: {e}");
            assert!(e.to_string().contains(what), "{dev}: {e}");
            assert!(plan_bind(&*fs, &BindRequest { force: true, ..BindRequest::vfio(dev) }).is_ok());
        }
        let e = plan_bind(&*fs, &BindRequest::vfio("0000:00:1c.0")).unwrap_err();
        assert!(e.to_string().contains("bridge"), "{e}");
        assert!(plan_bind(&*fs, &BindRequest::vfio("0000:09:00.0")).is_err());
    }

    #[test]
    fn binding_a_pf_names_the_vfs_it_removes_and_refuses_vfs_in_use() {
        let h = host();
        let fs = h.fs();
        // 02:00.0 has 2 VFs (on igbvf): a warning names them.
        let plan = plan_bind(&*fs, &BindRequest::vfio("0000:02:00.0")).unwrap();
        let w = plan.warnings.iter().find(|w| w.contains("sriov_numvfs")).unwrap();
        assert!(w.contains("its 2 VFs disappear (0000:02:10.0, 0000:02:10.1)"), "{w}");
        // One VF on vfio-pci, the other carrying the host's route: refused, naming both.
        bind(&*fs, &BindRequest::vfio("0000:02:10.0")).unwrap();
        h.state().sys.nets.push(SimNet {
            name: "eth7".into(),
            device: a("0000:02:10.1"),
            default_route: false,
            ipv4: vec!["10.0.0.7/24".into()],
        });
        let e = plan_bind(&*fs, &BindRequest::vfio("0000:02:00.0")).unwrap_err();
        assert!(matches!(e, Error::VfsInUse { .. }), "{e}");
        let e = e.to_string();
        assert!(
            e.starts_with("binding 0000:02:00.0 to vfio-pci (which sets its sriov_numvfs to 0) would remove VFs in use: 0000:02:10.0 (bound to vfio-pci), 0000:02:10.1 (network interface eth7 has an address")
                && e.contains("vfiotool unbind 0000:02:10.0")
                && e.ends_with("or pass --force to remove them anyway"),
            "{e}"
        );
        // Forced: planned, with the VFs in use named in the warning.
        let plan =
            plan_bind(&*fs, &BindRequest { force: true, ..BindRequest::vfio("0000:02:00.0") })
                .unwrap();
        let w = plan.warnings.iter().find(|w| w.contains("sriov_numvfs")).unwrap();
        assert!(w.contains("0000:02:10.0 (bound to vfio-pci)"), "{w}");
        // A PF without VFs on: no such warning.
        let plan = plan_bind(&*fs, &BindRequest::vfio("0000:00:04.0")).unwrap();
        assert!(plan.warnings.iter().all(|w| !w.contains("sriov_numvfs")));
    }

    #[test]
    fn slot_and_group_binds() {
        let h = host();
        let fs = h.fs();
        // One function of the GPU: bound, with a warning about its group.
        let plan = plan_bind(&*fs, &BindRequest::vfio("0000:05:00.1")).unwrap();
        assert_eq!(plan.devices.len(), 1);
        assert!(plan.warnings[0].contains("0000:05:00.0 (nouveau)"), "{:?}", plan.warnings);
        // The slot: both functions.
        let out = bind(&*fs, &BindRequest::vfio("05:00")).unwrap();
        assert_eq!(out.plan.devices.len(), 2);
        assert!(out.plan.warnings.is_empty());
        restore(&*fs, None).unwrap();
        // The group: both functions, not the bridge.
        let out =
            bind(&*fs, &BindRequest { group: true, ..BindRequest::vfio("0000:05:00.1") }).unwrap();
        let moved: Vec<&str> = out.plan.devices.iter().map(|e| e.address.as_str()).collect();
        assert_eq!(moved, vec!["0000:05:00.0", "0000:05:00.1"]);
        assert_eq!(current_driver(&*fs, a("0000:00:1c.0")).as_deref(), Some("pcieport"));
        let g = crate::host::groups::read_group(&*fs, 7, &Default::default()).unwrap();
        assert!(g.viable);
    }

    #[test]
    fn dry_run_plans_without_changing_anything() {
        let h = host();
        let fs = h.fs();
        let before = snapshot(&h);
        let plan = plan_bind(&*fs, &BindRequest::vfio("0000:02:00.0")).unwrap();
        let text: Vec<String> = plan.steps.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            text,
            vec![
                "modprobe vfio-pci",
                "echo 0 > /sys/bus/pci/devices/0000:02:00.0/sriov_numvfs",
                "echo vfio-pci > /sys/bus/pci/devices/0000:02:00.0/driver_override",
                "echo 0000:02:00.0 > /sys/bus/pci/devices/0000:02:00.0/driver/unbind",
                "echo 0000:02:00.0 > /sys/bus/pci/drivers_probe",
            ]
        );
        assert_eq!(snapshot(&h), before);
        assert!(!fs.exists(Path::new(JOURNAL)));
        assert!(!fs.exists(Path::new("/sys/module/vfio_pci")));
    }

    #[test]
    fn unbind_of_an_open_device_is_reported_and_journal_kept() {
        let h = host();
        let fs = h.fs();
        bind(&*fs, &BindRequest::vfio("0000:00:04.0")).unwrap();
        h.set_device_open(a("0000:00:04.0"), true);
        let e = unbind(&*fs, a("0000:00:04.0")).unwrap_err().to_string();
        assert!(e.contains("holds the device open"), "{e}");
        assert_eq!(read_journal(&*fs).unwrap().devices.len(), 1);
        h.set_device_open(a("0000:00:04.0"), false);
        assert_eq!(unbind(&*fs, a("0000:00:04.0")).unwrap().driver.as_deref(), Some("edu"));
        // Without a journal: back to the native driver.
        h.set_driver(a("0000:00:04.0"), Some("vfio-pci"));
        assert_eq!(unbind(&*fs, a("0000:00:04.0")).unwrap().driver.as_deref(), Some("edu"));
        // A device on its own driver, not journaled, is left alone.
        let e = unbind(&*fs, a("0000:00:04.0")).unwrap_err().to_string();
        assert!(e.contains("it is on edu and not in the journal"), "{e}");
        assert_eq!(current_driver(&*fs, a("0000:00:04.0")).as_deref(), Some("edu"));
    }

    #[test]
    fn missing_module_or_iommu_is_a_clear_error() {
        let h = host().with_sys(|s| s.available_modules.clear());
        let fs = h.fs();
        let before = snapshot(&h);
        let e = bind(&*fs, &BindRequest::vfio("0000:00:04.0")).unwrap_err().to_string();
        assert!(e.contains("modprobe") && e.contains("rolled back"), "{e}");
        assert_eq!(snapshot(&h), before);
        // No IOMMU registered and no no-IOMMU mode: no group can ever appear.
        let h = MockHost::new([DeviceSpec::edu("0000:00:04.0").driver("edu")])
            .with_sys(|s| s.iommus.clear());
        let e = plan_bind(&*h.fs(), &BindRequest::vfio("0000:00:04.0")).unwrap_err().to_string();
        assert!(e.contains("no IOMMU group"), "{e}");
        // An IOMMU that attaches devices at probe (virtio-iommu): the group comes with
        // vfio-pci, so the bind is planned.
        let h = MockHost::new([DeviceSpec::edu("0000:00:04.0").driver("edu")])
            .with_sys(|s| *s = SysState::intel_ready());
        let plan = plan_bind(&*h.fs(), &BindRequest::vfio("0000:00:04.0"));
        assert!(plan.is_ok(), "{plan:?}");
        // No IOMMU but vfio's no-IOMMU mode: the no-IOMMU group is made at probe.
        let h = MockHost::new([DeviceSpec::edu("0000:00:04.0").driver("edu")]).with_sys(|s| {
            s.iommus.clear();
            s.load_vfio();
            s.module_params
                .insert(("vfio".into(), "enable_unsafe_noiommu_mode".into()), "Y".into());
        });
        let plan = plan_bind(&*h.fs(), &BindRequest::vfio("0000:00:04.0"));
        assert!(plan.is_ok(), "{plan:?}");
    }

    /// virtio-iommu gives a driverless device its group only when vfio-pci probes it (seen
    /// in the VM lab): with an IOMMU active the bind goes ahead and finds the group after.
    #[test]
    fn a_group_that_appears_at_probe_time_is_found_after_the_bind() {
        let mut edu = DeviceSpec::edu("0000:00:04.0").group(3);
        edu.group_at_probe = true;
        let with_iommu = MockHost::new([edu.clone()]).with_sys(|s| *s = SysState::intel_ready());
        let fs = with_iommu.fs();
        assert_eq!(iommu_group(&*fs, a("0000:00:04.0")), None);
        let plan = plan_bind(&*fs, &BindRequest::vfio("0000:00:04.0")).unwrap();
        assert!(plan.warnings.iter().any(|w| w.contains("no IOMMU group yet")), "{plan:?}");
        let out = bind(&*fs, &BindRequest::vfio("0000:00:04.0")).unwrap();
        assert_eq!(out.dev_nodes, vec!["/dev/vfio/3"]);
        restore(&*fs, Some(a("0000:00:04.0"))).unwrap();
        assert_eq!(iommu_group(&*fs, a("0000:00:04.0")), None);
        // --user cannot be planned before the group exists: a clear error, nothing done.
        let mut req = BindRequest::vfio("0000:00:04.0");
        req.user = Some("0".into());
        let e = bind(&*fs, &req).unwrap_err().to_string();
        assert!(e.contains("then the same command with --user"), "{e}");
        // Without an IOMMU (and without no-IOMMU mode) it is refused as before.
        let without = MockHost::new([edu]).with_sys(|s| s.load_vfio());
        let e = plan_bind(&*without.fs(), &BindRequest::vfio("0000:00:04.0")).unwrap_err();
        assert!(e.to_string().contains("enable the IOMMU first"), "{e}");
    }
}
