//! Binding devices to vfio-pci through `driver_override`, transactionally.
//!
//! A bind is planned first ([`plan_bind`]): which functions (one, a slot, or a whole
//! IOMMU group), what each is bound to now, and the exact writes that will move it. The
//! plan is then executed ([`execute`]):
//!
//! 1. the prior state of every device (driver, `driver_override`, `sriov_numvfs`, the
//!    owner of `/dev/vfio/N`) is written to the journal [`JOURNAL`] before anything
//!    changes, so that a crash leaves enough for [`restore`];
//! 2. `modprobe vfio-pci` if the driver is not registered; per device:
//!    `sriov_numvfs` to 0 when VFs are on, `driver_override`, `driver/unbind`,
//!    `drivers_probe`; then `chown` of `/dev/vfio/N` for `--user`;
//! 3. the result is verified (the `driver` link names the target, `/dev/vfio/N` exists);
//! 4. if any step or the verification fails, every device is put back as the journal
//!    recorded it and its journal entry is dropped.
//!
//! Guards refuse a device the host itself uses (the boot display, a NIC with routes, a
//! storage controller with mounted filesystems) unless forced.
//!
//! Everything that changes bindings or the journal ([`bind`], [`execute`], [`restore`],
//! [`unbind`]) holds the host lock ([`crate::host::lock`]) while it runs, so that two
//! runs at once cannot interleave their journal updates.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::host::devices::{group_members, is_bridge_class};
use crate::host::filter::AddressFilter;
use crate::host::lock::HostLock;
use crate::host::{
    current_driver, device_path, driver_override, iommu_group, parse_hex, pci_addresses, read_opt,
    resolve_link, write_text,
};
use crate::hostfs::HostFs;
use crate::pci::PciAddress;

/// The journal of devices moved by `bind`, with their prior state.
pub const JOURNAL: &str = "/run/vfiotool/journal.json";

/// The owner of a device node before `bind --user` changed it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeOwner {
    /// The node (`/dev/vfio/5`).
    pub path: String,
    /// Owner user id before.
    pub uid: u32,
    /// Owner group id before.
    pub gid: u32,
}

/// What a device looked like before `bind` moved it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JournalEntry {
    /// The device.
    pub address: String,
    /// The driver it was moved to.
    pub target: String,
    /// The driver it had.
    pub driver: Option<String>,
    /// Its `driver_override` before.
    pub driver_override: Option<String>,
    /// Its enabled VFs before (`None`: not SR-IOV capable).
    pub sriov_numvfs: Option<u16>,
    /// The owner of its group's node before `--user`.
    pub node_owner: Option<NodeOwner>,
}

/// Reads the journal (empty when there is none).
///
/// Entries are checked before anything acts on them: the address must parse, driver
/// names must be plain names (no `/`, not `.` or `..`), and a node owner must name a
/// node under `/dev/vfio/`, so that a damaged or planted journal cannot steer
/// `restore` into writing or `chown`ing other files.
pub fn read_journal(fs: &dyn HostFs) -> Result<Vec<JournalEntry>> {
    let invalid = |reason: String| Error::Invalid {
        what: "journal",
        input: JOURNAL.into(),
        reason: format!("{reason}; fix or remove the file, then check the devices by hand"),
    };
    match fs.read(Path::new(JOURNAL)) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(vec![]),
        Ok(bytes) => {
            let entries: Vec<JournalEntry> =
                serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
            for e in &entries {
                check_entry(e).map_err(&invalid)?;
            }
            Ok(entries)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(Error::host("read", JOURNAL, e)),
    }
}

fn plain_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\0', '\n'])
}

fn check_entry(e: &JournalEntry) -> std::result::Result<(), String> {
    let a = &e.address;
    PciAddress::parse(a).map_err(|err| format!("entry {a:?}: {err}"))?;
    for d in [Some(&e.target), e.driver.as_ref(), e.driver_override.as_ref()].into_iter().flatten()
    {
        if !d.is_empty() && !plain_name(d) {
            return Err(format!("entry {a}: {d:?} is not a driver name"));
        }
    }
    if let Some(o) = &e.node_owner {
        let rest = o.path.strip_prefix("/dev/vfio/").unwrap_or("");
        if !plain_name(rest) {
            return Err(format!("entry {a}: {:?} is not a /dev/vfio node", o.path));
        }
    }
    Ok(())
}

fn write_journal(fs: &dyn HostFs, entries: &[JournalEntry]) -> Result<()> {
    let dir = Path::new(JOURNAL).parent().unwrap_or(Path::new("/run"));
    fs.create_dir_all(dir).map_err(|e| Error::host("create directory", dir, e))?;
    let text = serde_json::to_string_pretty(entries).unwrap_or_else(|_| "[]".into());
    write_text(fs, Path::new(JOURNAL), &text)
}

/// One change a bind makes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Step {
    /// Load a kernel module.
    Modprobe(String),
    /// Write a value to a file.
    Write {
        /// The file.
        path: PathBuf,
        /// The value.
        value: String,
    },
    /// Change the owner of a device node.
    Chown {
        /// The node.
        path: PathBuf,
        /// New owner.
        uid: u32,
        /// New group.
        gid: u32,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Modprobe(m) => write!(f, "modprobe {m}"),
            Step::Write { path, value } if value.is_empty() => {
                write!(f, "echo > {}", path.display())
            }
            Step::Write { path, value } => write!(f, "echo {value} > {}", path.display()),
            Step::Chown { path, uid, gid } => write!(f, "chown {uid}:{gid} {}", path.display()),
        }
    }
}

fn run_step(fs: &dyn HostFs, step: &Step) -> Result<()> {
    match step {
        Step::Modprobe(m) => fs.modprobe(m).map_err(|e| {
            Error::host("modprobe", m.as_str(), e)
                .with_hint("install the kernel's modules package or build with CONFIG_VFIO_PCI")
        }),
        Step::Write { path, value } => {
            let data = if value.is_empty() { "\n".to_string() } else { value.clone() };
            write_text(fs, path, &data)
        }
        Step::Chown { path, uid, gid } => {
            fs.chown(path, Some(*uid), Some(*gid)).map_err(|e| Error::host("chown", path, e))
        }
    }
}

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

/// Looks up a user in `/etc/passwd` (or takes a number): (uid, gid).
pub fn lookup_user(fs: &dyn HostFs, user: &str) -> Result<(u32, u32)> {
    let passwd = read_opt(fs, Path::new("/etc/passwd")).unwrap_or_default();
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 4 && f[0] == user {
            if let (Ok(u), Ok(g)) = (f[2].parse(), f[3].parse()) {
                return Ok((u, g));
            }
        }
    }
    if let Ok(uid) = user.parse::<u32>() {
        return Ok((uid, uid));
    }
    Err(Error::NotFound {
        what: format!("user {user:?} in /etc/passwd"),
        hint: Some("give an existing user name or a numeric uid".into()),
    })
}

/// Why the host needs a device (empty when it does not): the boot display, a network
/// interface with routes, a block device with mounted filesystems.
pub fn host_uses(fs: &dyn HostFs, a: PciAddress) -> Vec<String> {
    let mut why = vec![];
    let bdf = a.to_string();
    let under = |link: &Path| -> bool {
        fs.read_link(link)
            .map(|t| t.components().any(|c| c.as_os_str() == bdf.as_str()))
            .unwrap_or(false)
    };
    if read_opt(fs, &device_path(a).join("boot_vga")).as_deref() == Some("1") {
        why.push("it is the boot display (boot_vga is 1); the host console would go dark".into());
    }
    let routes = read_opt(fs, Path::new("/proc/net/route")).unwrap_or_default();
    for ifname in fs.read_dir(Path::new("/sys/class/net")).unwrap_or_default() {
        if !under(&Path::new("/sys/class/net").join(&ifname)) {
            continue;
        }
        let mine: Vec<Vec<&str>> = routes
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f.first() == Some(&ifname.as_str()))
            .collect();
        if mine.iter().any(|f| f.get(1) == Some(&"00000000")) {
            why.push(format!("network interface {ifname} carries the default route"));
        } else if !mine.is_empty() {
            why.push(format!("network interface {ifname} has an address (it has routes)"));
        }
    }
    let mounts = read_opt(fs, Path::new("/proc/mounts")).unwrap_or_default();
    for blk in fs.read_dir(Path::new("/sys/block")).unwrap_or_default() {
        if !under(&Path::new("/sys/block").join(&blk)) {
            continue;
        }
        let dev = format!("/dev/{blk}");
        let used: Vec<String> = mounts
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (src, dst) = (f.next()?, f.next()?);
                src.starts_with(&dev).then(|| format!("{src} on {dst}"))
            })
            .collect();
        if !used.is_empty() {
            why.push(format!("block device {blk} has mounted filesystems ({})", used.join(", ")));
        }
        let holders =
            fs.read_dir(&Path::new("/sys/block").join(&blk).join("holders")).unwrap_or_default();
        if !holders.is_empty() {
            why.push(format!("block device {blk} is held by {}", holders.join(", ")));
        }
    }
    why
}

fn numvfs(fs: &dyn HostFs, a: PciAddress) -> Option<u16> {
    read_opt(fs, &device_path(a).join("sriov_numvfs"))?.parse().ok()
}

fn is_bridge(fs: &dyn HostFs, a: PciAddress) -> bool {
    read_opt(fs, &device_path(a).join("class"))
        .and_then(|s| parse_hex(&s))
        .is_some_and(|c| is_bridge_class(c as u32))
}

/// An attribute of the prior state: `None` when it does not exist, an error when it
/// exists but cannot be read.
fn prior_attr(fs: &dyn HostFs, path: &Path) -> Result<Option<String>> {
    if !fs.exists(path) {
        return Ok(None);
    }
    fs.read_string(path).map(Some).map_err(|e| {
        Error::host("read", path, e).with_hint("the prior state must be known to be restored")
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

/// Plans a bind without changing anything (this is also the dry run).
pub fn plan_bind(fs: &dyn HostFs, req: &BindRequest) -> Result<BindPlan> {
    let target = req.driver.as_str();
    let vfio = target == "vfio-pci";
    let mut devs = select(fs, &req.address)?;
    let mut groups: Vec<u32> = devs.iter().filter_map(|a| iommu_group(fs, *a)).collect();
    groups.sort();
    groups.dedup();
    if req.group {
        for g in &groups {
            devs.extend(group_members(fs, *g).into_iter().filter(|a| !is_bridge(fs, *a)));
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
        steps: vec![],
        warnings: vec![],
    };
    for &a in &devs {
        let p = device_path(a);
        if is_bridge(fs, a) {
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
        if !fs.exists(&p.join("driver_override")) {
            return Err(Error::Unsupported {
                what: format!("driver_override on {a}"),
                hint: Some("this kernel predates driver_override (3.16); bind at boot with 'vfiotool persist'".into()),
            });
        }
        let driver = current_driver(fs, a);
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
        let p = device_path(a);
        let sriov_numvfs = prior_attr(fs, &p.join("sriov_numvfs"))?
            .map(|v| {
                v.parse().map_err(|_| Error::Invalid {
                    what: "sriov_numvfs",
                    input: v.clone(),
                    reason: format!("{a}: not a number"),
                })
            })
            .transpose()?;
        let driver_override =
            prior_attr(fs, &p.join("driver_override"))?.filter(|s| s != "(null)" && !s.is_empty());
        plan.devices.push(JournalEntry {
            address: a.to_string(),
            target: target.into(),
            driver,
            driver_override,
            sriov_numvfs,
            node_owner: None,
        });
    }
    if !fs.exists(&Path::new("/sys/bus/pci/drivers").join(target))
        || (vfio && !fs.exists(Path::new("/sys/module/vfio_pci")))
    {
        plan.steps.push(Step::Modprobe(target.into()));
    }
    for e in &plan.devices {
        let p = Path::new(crate::host::PCI_DEVICES).join(&e.address);
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
            let node = format!("/dev/vfio/{g}");
            let before = fs.metadata(Path::new(&node)).ok();
            for e in plan.devices.iter_mut().filter(|e| {
                PciAddress::parse(&e.address).ok().and_then(|a| iommu_group(fs, a)) == Some(*g)
            }) {
                e.node_owner = Some(NodeOwner {
                    path: node.clone(),
                    uid: before.map_or(0, |m| m.uid),
                    gid: before.map_or(0, |m| m.gid),
                });
            }
            plan.steps.push(Step::Chown { path: node.into(), uid, gid });
        }
    }
    if vfio && !req.group {
        for g in &groups {
            let moving: Vec<String> = plan.devices.iter().map(|e| e.address.clone()).collect();
            let held: Vec<String> = group_members(fs, *g)
                .into_iter()
                .filter(|m| !moving.contains(&m.to_string()) && !is_bridge(fs, *m))
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
        let a = PciAddress::parse(&e.address)?;
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
            let a = PciAddress::parse(&e.address)?;
            match iommu_group(fs, a) {
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
            let noiommu = format!("/dev/vfio/noiommu-{g}");
            let n = if fs.exists(Path::new(&noiommu)) { noiommu } else { format!("/dev/vfio/{g}") };
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

fn merge_journal(fs: &dyn HostFs, add: &[JournalEntry]) -> Result<()> {
    let mut all = read_journal(fs)?;
    all.retain(|e| !add.iter().any(|n| n.address == e.address));
    all.extend(add.iter().cloned());
    write_journal(fs, &all)
}

fn drop_journal(fs: &dyn HostFs, addresses: &[String]) -> Result<()> {
    let mut all = read_journal(fs)?;
    all.retain(|e| !addresses.contains(&e.address));
    write_journal(fs, &all)
}

/// Writes the journal and runs the first `n` steps of a plan, then stops, without
/// verifying or rolling back: the state a crash in the middle of a bind leaves.
pub fn execute_partially(fs: &dyn HostFs, plan: &BindPlan, n: usize) -> Result<()> {
    let _lock = HostLock::acquire(fs)?;
    if !plan.devices.is_empty() {
        merge_journal(fs, &plan.devices)?;
    }
    for s in plan.steps.iter().take(n) {
        run_step(fs, s)?;
    }
    Ok(())
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
        let a = PciAddress::parse(&e.address)?;
        let p = device_path(a);
        let override_now =
            prior_attr(fs, &p.join("driver_override"))?.filter(|s| s != "(null)" && !s.is_empty());
        let numvfs_now = prior_attr(fs, &p.join("sriov_numvfs"))?.and_then(|v| v.parse().ok());
        if current_driver(fs, a) != e.driver
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
    if !plan.devices.is_empty() {
        merge_journal(fs, &plan.devices)?;
    }
    let result = plan.steps.iter().try_for_each(|s| run_step(fs, s)).and_then(|_| verify(fs, plan));
    match result {
        Ok(dev_nodes) => Ok(BindOutcome { plan: plan.clone(), dev_nodes }),
        Err(e) => {
            let mut problems = vec![];
            for entry in plan.devices.iter().rev() {
                if let Err(r) = restore_entry(fs, entry) {
                    problems.push(r.to_string());
                }
            }
            let device = plan.devices.first().map(|e| e.address.clone()).unwrap_or_default();
            let reason = if problems.is_empty() {
                let addrs: Vec<String> = plan.devices.iter().map(|e| e.address.clone()).collect();
                match drop_journal(fs, &addrs) {
                    Ok(()) => format!("{e}; every change was rolled back"),
                    Err(j) => format!("{e}; every change was rolled back, but the journal could not be cleared ({j})"),
                }
            } else {
                format!(
                    "{e}; rollback incomplete ({}); run 'vfiotool restore --all' to finish",
                    problems.join("; ")
                )
            };
            Err(Error::BindFailed { device, driver: plan.driver.clone(), reason })
        }
    }
}

/// Plans and carries out a bind.
pub fn bind(fs: &dyn HostFs, req: &BindRequest) -> Result<BindOutcome> {
    let _lock = HostLock::acquire(fs)?;
    let plan = plan_bind(fs, req)?;
    execute_locked(fs, &plan)
}

/// Puts one device back as a journal entry recorded it.
pub fn restore_entry(fs: &dyn HostFs, e: &JournalEntry) -> Result<()> {
    let a = PciAddress::parse(&e.address)?;
    crate::host::require_device(fs, a)?;
    let p = device_path(a);
    let cur = current_driver(fs, a);
    if cur.is_some() && cur != e.driver {
        let unbind = p.join("driver/unbind");
        fs.write(&unbind, e.address.as_bytes()).map_err(|err| {
            let busy = err.raw_os_error() == Some(libc::EBUSY);
            let e2 = Error::host("write", &unbind, err);
            if busy {
                e2.with_hint("a VFIO user (a VM) holds the device open; stop it and retry")
            } else {
                e2
            }
        })?;
    }
    if driver_override(fs, a) != e.driver_override {
        write_text(fs, &p.join("driver_override"), e.driver_override.as_deref().unwrap_or("\n"))?;
    }
    if let Some(drv) = &e.driver {
        if current_driver(fs, a).as_deref() != Some(drv) {
            write_text(fs, Path::new("/sys/bus/pci/drivers_probe"), &e.address)?;
        }
        if current_driver(fs, a).is_none() {
            let bind = Path::new("/sys/bus/pci/drivers").join(drv).join("bind");
            if fs.exists(&bind) {
                write_text(fs, &bind, &e.address)?;
            }
        }
        if current_driver(fs, a).as_deref() != Some(drv) {
            return Err(Error::BindFailed {
                device: e.address.clone(),
                driver: drv.clone(),
                reason: format!(
                    "it is on {} after the restore; load the driver (modprobe {drv}) and run 'vfiotool restore {}'",
                    current_driver(fs, a).as_deref().unwrap_or("no driver"),
                    e.address
                ),
            });
        }
    }
    if let Some(n) = e.sriov_numvfs.filter(|n| *n > 0) {
        let now = numvfs(fs, a).unwrap_or(0);
        if now != n {
            let f = p.join("sriov_numvfs");
            if now != 0 {
                write_text(fs, &f, "0")?;
            }
            write_text(fs, &f, &n.to_string())?;
        }
    }
    if let Some(o) = &e.node_owner {
        let node = Path::new(&o.path);
        if let Ok(m) = fs.metadata(node) {
            if (m.uid, m.gid) != (o.uid, o.gid) {
                fs.chown(node, Some(o.uid), Some(o.gid))
                    .map_err(|err| Error::host("chown", node, err))?;
            }
        }
    }
    Ok(())
}

/// The changes [`restore_entry`] would make to put a device back as `e` recorded it,
/// judged from the state now (the dry run of `restore` and `unbind`). The kernel's probe
/// decides the driver, so the list ends with the probe that should bring `e.driver` back.
pub fn plan_restore_entry(fs: &dyn HostFs, e: &JournalEntry) -> Result<Vec<Step>> {
    let a = PciAddress::parse(&e.address)?;
    crate::host::require_device(fs, a)?;
    let p = device_path(a);
    let mut steps = vec![];
    let cur = current_driver(fs, a);
    if cur.is_some() && cur != e.driver {
        steps.push(Step::Write { path: p.join("driver/unbind"), value: e.address.clone() });
    }
    if driver_override(fs, a) != e.driver_override {
        steps.push(Step::Write {
            path: p.join("driver_override"),
            value: e.driver_override.clone().unwrap_or_default(),
        });
    }
    if e.driver.is_some() && cur != e.driver {
        steps.push(Step::Write {
            path: PathBuf::from("/sys/bus/pci/drivers_probe"),
            value: e.address.clone(),
        });
    }
    if let Some(n) = e.sriov_numvfs.filter(|n| *n > 0) {
        let now = numvfs(fs, a).unwrap_or(0);
        if now != n {
            let f = p.join("sriov_numvfs");
            if now != 0 {
                steps.push(Step::Write { path: f.clone(), value: "0".into() });
            }
            steps.push(Step::Write { path: f, value: n.to_string() });
        }
    }
    if let Some(o) = &e.node_owner {
        let node = Path::new(&o.path);
        if fs.metadata(node).is_ok_and(|m| (m.uid, m.gid) != (o.uid, o.gid)) {
            steps.push(Step::Chown { path: node.into(), uid: o.uid, gid: o.gid });
        }
    }
    Ok(steps)
}

/// The journal entries [`restore`] would act on (one device, or all with `None`), each
/// with the changes it would make.
pub fn plan_restore(
    fs: &dyn HostFs,
    address: Option<PciAddress>,
) -> Result<Vec<(JournalEntry, Vec<Step>)>> {
    read_journal(fs)?
        .into_iter()
        .filter(|e| address.is_none_or(|a| PciAddress::parse(&e.address).ok() == Some(a)))
        .map(|e| plan_restore_entry(fs, &e).map(|s| (e, s)))
        .collect()
}

/// The changes [`unbind`] would make, without making them.
pub fn plan_unbind(fs: &dyn HostFs, a: PciAddress) -> Result<Vec<Step>> {
    crate::host::require_device(fs, a)?;
    if let Some((_, steps)) = plan_restore(fs, Some(a))?.pop() {
        return Ok(steps);
    }
    let now = current_driver(fs, a);
    if now.as_deref() != Some("vfio-pci") && driver_override(fs, a).is_none() {
        return Err(Error::Invalid {
            what: "device to unbind",
            input: a.to_string(),
            reason: format!(
                "it is on {} and not in the journal: nothing to undo",
                now.as_deref().unwrap_or("no driver")
            ),
        });
    }
    let e = JournalEntry {
        address: a.to_string(),
        target: String::new(),
        driver: None,
        driver_override: None,
        sriov_numvfs: None,
        node_owner: None,
    };
    let mut steps = plan_restore_entry(fs, &e)?;
    steps.push(Step::Write {
        path: PathBuf::from("/sys/bus/pci/drivers_probe"),
        value: a.to_string(),
    });
    Ok(steps)
}

/// What `restore` did for one device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Restored {
    /// The device.
    pub address: String,
    /// The driver it is on now.
    pub driver: Option<String>,
}

/// Returns journaled devices (one, or all with `None`) to their prior state and clears
/// their journal entries. Entries that fail stay in the journal; the first error is
/// returned after every entry was tried.
pub fn restore(fs: &dyn HostFs, address: Option<PciAddress>) -> Result<Vec<Restored>> {
    let _lock = HostLock::acquire(fs)?;
    restore_locked(fs, address)
}

fn restore_locked(fs: &dyn HostFs, address: Option<PciAddress>) -> Result<Vec<Restored>> {
    let entries = read_journal(fs)?;
    let chosen: Vec<&JournalEntry> = entries
        .iter()
        .filter(|e| address.is_none_or(|a| PciAddress::parse(&e.address).ok() == Some(a)))
        .collect();
    let mut done = vec![];
    let mut first_err = None;
    for e in chosen {
        match restore_entry(fs, e) {
            Ok(()) => done.push(e.address.clone()),
            Err(err) => {
                first_err.get_or_insert(err);
            }
        }
    }
    if !done.is_empty() {
        drop_journal(fs, &done)?;
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok(done
        .into_iter()
        .map(|a| Restored {
            driver: PciAddress::parse(&a).ok().and_then(|p| current_driver(fs, p)),
            address: a,
        })
        .collect())
}

/// Unbinds a device from vfio-pci: back to its journaled state when there is one,
/// otherwise clears `driver_override` and lets the kernel probe its native driver.
pub fn unbind(fs: &dyn HostFs, a: PciAddress) -> Result<Restored> {
    crate::host::require_device(fs, a)?;
    let _lock = HostLock::acquire(fs)?;
    if read_journal(fs)?.iter().any(|e| PciAddress::parse(&e.address).ok() == Some(a)) {
        return restore_locked(fs, Some(a))?
            .pop()
            .ok_or_else(|| Error::NotFound { what: format!("journal entry of {a}"), hint: None });
    }
    let now = current_driver(fs, a);
    if now.as_deref() != Some("vfio-pci") && driver_override(fs, a).is_none() {
        return Err(Error::Invalid {
            what: "device to unbind",
            input: a.to_string(),
            reason: format!(
                "it is on {} and not in the journal: nothing to undo",
                now.as_deref().unwrap_or("no driver")
            ),
        });
    }
    let e = JournalEntry {
        address: a.to_string(),
        target: String::new(),
        driver: None,
        driver_override: None,
        sriov_numvfs: None,
        node_owner: None,
    };
    restore_entry(fs, &e)?;
    write_text(fs, Path::new("/sys/bus/pci/drivers_probe"), &a.to_string())?;
    Ok(Restored { address: a.to_string(), driver: current_driver(fs, a) })
}

/// The canonical sysfs directory of a device (following the bus symlink).
pub fn canonical_device_dir(fs: &dyn HostFs, a: PciAddress) -> Option<PathBuf> {
    let link = device_path(a);
    fs.read_link(&link).ok().map(|t| resolve_link(&link, &t))
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert_eq!(j.len(), 1);
        assert_eq!(j[0].driver.as_deref(), Some("igb"));
        assert_eq!(j[0].driver_override.as_deref(), Some("igb"));
        assert_eq!(j[0].sriov_numvfs, Some(2));
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
    fn the_journal_survives_a_crash_and_restore_finishes() {
        for n in 0..=5 {
            let h = host();
            let fs = h.fs();
            let before = snapshot(&h);
            let plan = plan_bind(&*fs, &BindRequest::vfio("0000:02:00.0")).unwrap();
            execute_partially(&*fs, &plan, n).unwrap();
            // A new process reads the journal from the host and puts things back.
            assert_eq!(read_journal(&*fs).unwrap().len(), 1);
            restore(&*fs, None).unwrap();
            assert_eq!(snapshot(&h), before, "crash after step {n}");
            assert!(read_journal(&*fs).unwrap().is_empty());
        }
    }

    #[test]
    fn unbind_of_an_open_device_is_reported_and_journal_kept() {
        let h = host();
        let fs = h.fs();
        bind(&*fs, &BindRequest::vfio("0000:00:04.0")).unwrap();
        h.set_device_open(a("0000:00:04.0"), true);
        let e = unbind(&*fs, a("0000:00:04.0")).unwrap_err().to_string();
        assert!(e.contains("holds the device open"), "{e}");
        assert_eq!(read_journal(&*fs).unwrap().len(), 1);
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
