//! The boot-time configuration that puts devices on vfio-pci at every boot, kept in
//! marked blocks of the files it shares with the user.
//!
//! # Two ways to claim a device at boot
//!
//! - **By id** (the default): `options vfio-pci ids=VVVV:DDDD,...` in
//!   [`MODPROBE_CONF`] makes vfio-pci claim every device with those ids when it loads,
//!   and `softdep DRIVER pre: vfio-pci` loads vfio-pci before the native driver so that
//!   it wins the race. It works from the initramfs on, for any driver, but it is per id:
//!   a second device with the same `vendor:device` (a second NVMe of the same model
//!   holding the root filesystem) is taken too. `persist` names every such device, and
//!   refuses when the host uses one of them unless `--force`.
//! - **By address** (`--per-device`): a udev rule in [`UDEV_RULES`] writes `vfio-pci`
//!   to the `driver_override` of exactly the named functions when their `add` event is
//!   processed, as `driverctl` does, then asks the kernel to probe the device
//!   (`drivers_probe`), so vfio-pci takes it whether it was loaded before the rule ran or
//!   is loaded after it (the override keeps the native driver away in both cases). Other
//!   devices with the same ids stay on their drivers. The limit: a native driver that is
//!   built into the kernel, or loaded in an initramfs that does not carry the rule, binds
//!   the device before udev runs; use ids for those. No `softdep` is written, as the
//!   override, not the load order, keeps the native driver off the device.
//!
//! Both need the VFIO modules, listed in [`MODULES_CONF`]. VF counts (`--numvfs PF=N`)
//! are udev rules too: `sriov_numvfs` is written on the PF's `add` event and again on
//! its `bind` event, since a PF whose driver is a module has no driver yet when its
//! `add` event is processed and the kernel only creates VFs through a bound driver.
//!
//! # The files and their blocks
//!
//! Everything vfiotool writes lives between [`BEGIN`] and [`END`] lines; the rest of
//! each file is the user's and is kept byte for byte. A file without a block gets one
//! appended; a block left empty is removed, and a file that held nothing but the block
//! is deleted. Before an existing file is replaced or deleted, its previous content is
//! written next to it as `FILE.vfiotool-bak` (a name modprobe, systemd and udev do not
//! read), with the original's permissions. Every file is written with
//! [`HostFs::replace_file`] (atomic), under the host lock.
//!
//! The block is data: what is persisted ([`Persisted`]) is parsed back from it
//! (`# device` lines name each device claimed by id; the `ids=` and `softdep` lines
//! follow from them), so `--list` and `--remove` work from the files alone, and writing
//! the same request twice gives the same bytes. A line inside a block that vfiotool
//! would not have written is never dropped silently: planning a change refuses until it
//! is moved out of the block.
//!
//! The text functions ([`split_block`], [`merge_block`], [`Persisted::parse`] and the
//! renderers) are pure, and fuzzed.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::host::devices::read_device;
use crate::host::guards::host_uses;
use crate::host::lock::HostLock;
use crate::host::pci_ids::PciIds;
use crate::host::sriov::sriov_state;
use crate::host::{current_driver, SysfsDevice};
use crate::host::{doctor::initramfs_command, journal::read_journal, pci_addresses};
use crate::hostfs::HostFs;
use crate::pci::PciAddress;

mod blocks;
mod content;

pub use blocks::{merge_block, split_block, BlockError, Split};
pub use content::{is_module_name, numvfs_rule, override_rule, IdDevice, Persisted};

/// The modprobe configuration file (`options vfio-pci ids=`, `softdep`).
pub const MODPROBE_CONF: &str = "/etc/modprobe.d/vfio.conf";
/// The modules-load configuration file (the VFIO modules).
pub const MODULES_CONF: &str = "/etc/modules-load.d/vfio.conf";
/// The udev rules (per-device `driver_override`, `sriov_numvfs`). Numbered below
/// `80-drivers.rules`, which loads the native drivers, so the override is set first.
pub const UDEV_RULES: &str = "/etc/udev/rules.d/61-vfiotool.rules";
/// The files vfiotool manages, in the order they are written.
pub const MANAGED_FILES: [&str; 3] = [MODULES_CONF, MODPROBE_CONF, UDEV_RULES];

/// The line opening vfiotool's block.
pub const BEGIN: &str = "# BEGIN vfiotool persist";
/// The line closing vfiotool's block.
pub const END: &str = "# END vfiotool persist";
/// Appended to a file's name for the copy of its previous content.
pub const BACKUP_SUFFIX: &str = ".vfiotool-bak";

/// The largest configuration file read.
const FILE_CAP: usize = 1 << 20;

const MODPROBE_HEADER: &str =
    "# vfio-pci claims these devices by vendor:device id at boot (vfiotool persist --list).";
const MODULES_HEADER: &str =
    "# The VFIO modules, for the devices vfiotool persist put on vfio-pci.";
const RULES_HEADER: &str = "# Set at boot by vfiotool persist (vfiotool persist --list).";
const MODULES: [&str; 3] = ["vfio", "vfio_iommu_type1", "vfio_pci"];

// ---------------------------------------------------------------------------------------
// The host: reading, planning, writing
// ---------------------------------------------------------------------------------------

/// One managed file as it is now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ManagedFile {
    /// Its path.
    pub path: PathBuf,
    /// Its content (`None`: it does not exist).
    pub text: Option<String>,
    /// Its permission bits (0644 when absent or unreadable).
    pub mode: u32,
    /// Its block's lines (`None`: no block).
    pub block: Option<String>,
}

/// The managed files and what their blocks hold.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PersistedState {
    /// What is persisted.
    pub persisted: Persisted,
    /// The files, in [`MANAGED_FILES`] order.
    pub files: Vec<ManagedFile>,
    /// Lines inside a block that vfiotool did not write: (file, line).
    pub foreign: Vec<(String, String)>,
}

/// Reads one managed file (`None` when absent).
fn read_managed(fs: &dyn HostFs, path: &str) -> Result<ManagedFile> {
    let p = Path::new(path);
    let bytes = match fs.read_limited(p, FILE_CAP) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            let too_big = e.kind() == io::ErrorKind::FileTooLarge;
            let err = Error::host("read", p, e);
            return Err(if too_big {
                err.with_hint("only small configuration files are edited; move it aside")
            } else {
                err
            });
        }
    };
    let text = bytes
        .map(|b| {
            String::from_utf8(b).map_err(|_| Error::Invalid {
                what: "configuration file",
                input: path.into(),
                reason: "it is not UTF-8 text; fix it or move it aside, then run again".into(),
            })
        })
        .transpose()?;
    let block = match &text {
        Some(t) => split_block(t)
            .map_err(|e| Error::Invalid {
                what: "configuration file",
                input: path.into(),
                reason: format!(
                    "{e} ('{BEGIN}' and '{END}' must pair up once); fix the markers by hand (the previous version may be in {path}{BACKUP_SUFFIX})"
                ),
            })?
            .block
            .map(str::to_string),
        None => None,
    };
    let mode = match &text {
        Some(_) => fs.metadata(p).map(|m| m.mode & 0o7777).unwrap_or(0o644),
        None => 0o644,
    };
    Ok(ManagedFile { path: p.into(), text, mode, block })
}

/// Reads the managed files and what vfiotool's blocks in them hold.
pub fn read_persisted(fs: &dyn HostFs) -> Result<PersistedState> {
    let files: Vec<ManagedFile> =
        MANAGED_FILES.iter().map(|p| read_managed(fs, p)).collect::<Result<_>>()?;
    let block = |path: &str| files.iter().find(|f| f.path == Path::new(path))?.block.as_deref();
    let (mut persisted, foreign) =
        Persisted::parse(block(MODPROBE_CONF), block(MODULES_CONF), block(UDEV_RULES));
    persisted.normalize();
    let foreign = foreign.into_iter().map(|(f, l)| (f.to_string(), l)).collect();
    Ok(PersistedState { persisted, files, foreign })
}

/// One file change: the content before and after.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileChange {
    /// The file.
    pub path: PathBuf,
    /// Its content now (`None`: absent).
    pub old: Option<String>,
    /// Its content after (`None`: deleted).
    pub new: Option<String>,
    /// The permission bits it is written with (the original's, else 0644).
    pub mode: u32,
}

impl FileChange {
    /// Where the previous content is kept (`FILE.vfiotool-bak`).
    pub fn backup_path(&self) -> PathBuf {
        backup_path(&self.path)
    }
}

/// `FILE.vfiotool-bak`.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(BACKUP_SUFFIX);
    s.into()
}

/// What `persist` (or `persist --remove`) would write and run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PersistPlan {
    /// The devices this run adds (by id or by address).
    pub devices: Vec<PciAddress>,
    /// The addresses this run removes.
    pub removed: Vec<PciAddress>,
    /// The VF counts this run sets.
    pub numvfs: Vec<(PciAddress, u16)>,
    /// Everything persisted once the plan is carried out.
    pub persisted: Persisted,
    /// The ids claimed (`ids=`) once the plan is carried out.
    pub ids: Vec<String>,
    /// Native driver modules that load after vfio-pci (`softdep`).
    pub softdeps: Vec<String>,
    /// The files that change, in the order they are written.
    pub files: Vec<FileChange>,
    /// The managed files that stay as they are.
    pub unchanged: Vec<PathBuf>,
    /// Other devices with the claimed ids, which `ids=` takes too.
    pub also_claimed: Vec<PciAddress>,
    /// Things worth knowing (a device taken although the host uses it, a line of the
    /// user's that also configures vfio-pci...).
    pub warnings: Vec<String>,
    /// Commands to run afterwards.
    pub after: Vec<String>,
}

/// What to persist.
#[derive(Debug, Clone, Default)]
pub struct PersistRequest {
    /// Devices to put on vfio-pci at boot. Empty: those on vfio-pci now, unless VF
    /// counts are given, in which case only those.
    pub devices: Vec<PciAddress>,
    /// Claim them by address (udev `driver_override`) instead of by id.
    pub per_device: bool,
    /// VF counts to set at boot, per PF.
    pub numvfs: Vec<(PciAddress, u16)>,
    /// Persist even devices the host uses (and ids that claim such devices).
    pub force: bool,
}

/// Parses `PF=N` (`0000:02:00.0=4`), the syntax of `--numvfs`.
pub fn parse_numvfs(s: &str) -> Result<(PciAddress, u16)> {
    let bad = |reason: String| Error::Invalid { what: "VF count", input: s.into(), reason };
    let (pf, n) = s.split_once('=').ok_or_else(|| {
        bad("write PF=N, the physical function's address and the count, e.g. 0000:02:00.0=4".into())
    })?;
    let pf = PciAddress::parse(pf.trim()).map_err(|_| {
        bad(format!("{pf:?} is not a PCI address; write PF=N, e.g. 0000:02:00.0=4"))
    })?;
    let n = n
        .trim()
        .parse::<u16>()
        .map_err(|_| bad(format!("{n:?} is not a count (0 to 65535); write PF=N, e.g. {pf}=4")))?;
    Ok((pf, n))
}

/// The changes that turn the files into ones whose blocks hold `next`.
fn changes(state: &PersistedState, next: &Persisted) -> Result<(Vec<FileChange>, Vec<PathBuf>)> {
    let mut files = vec![];
    let mut unchanged = vec![];
    for f in &state.files {
        let path = f.path.to_string_lossy();
        let inner = next.render(&path);
        let new = merge_block(f.text.as_deref(), inner.as_deref()).map_err(|e| Error::Invalid {
            what: "configuration file",
            input: path.to_string(),
            reason: format!("{e}; fix the markers by hand"),
        })?;
        if new == f.text {
            unchanged.push(f.path.clone());
        } else {
            files.push(FileChange { path: f.path.clone(), old: f.text.clone(), new, mode: f.mode });
        }
    }
    Ok((files, unchanged))
}

/// Refuses to plan over lines in a block that vfiotool did not write.
fn refuse_foreign(state: &PersistedState) -> Result<()> {
    match state.foreign.first() {
        None => Ok(()),
        Some((file, line)) => Err(Error::Invalid {
            what: "line in vfiotool's block",
            input: line.chars().take(120).collect(),
            reason: format!(
                "{file} has it between '{BEGIN}' and '{END}', where vfiotool did not write it; move it outside the block (vfiotool rewrites the block) and run again"
            ),
        }),
    }
}

/// Lines outside the block that also configure vfio-pci (they would fight the block).
fn outside_warnings(state: &PersistedState) -> Vec<String> {
    let mut v = vec![];
    for f in &state.files {
        let Some(text) = &f.text else { continue };
        let Ok(split) = split_block(text) else { continue };
        for l in split.outside().lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            let words: Vec<&str> = l.split_whitespace().collect();
            let fights = match words.as_slice() {
                ["options", m, ..] => matches!(*m, "vfio-pci" | "vfio_pci"),
                ["install" | "blacklist", m, ..] => matches!(*m, "vfio-pci" | "vfio_pci"),
                _ => l.contains("driver_override") || l.contains("sriov_numvfs"),
            };
            if fights {
                v.push(format!(
                    "{} also has, outside vfiotool's block: '{l}'; it may fight the block (for modprobe options the last line wins); remove it or keep it in mind",
                    f.path.display()
                ));
            }
        }
    }
    v
}

fn plan_from(
    fs: &dyn HostFs,
    state: &PersistedState,
    next: Persisted,
    devices: Vec<PciAddress>,
    removed: Vec<PciAddress>,
    numvfs: Vec<(PciAddress, u16)>,
) -> Result<PersistPlan> {
    let (files, unchanged) = changes(state, &next)?;
    let mut after = vec![];
    if !files.is_empty() {
        after.push(initramfs_command(fs).to_string());
        after.push("reboot".into());
        if !devices.is_empty() {
            let v: Vec<String> = devices.iter().map(|a| a.to_string()).collect();
            after.push(format!("ls /sys/bus/pci/drivers/vfio-pci  (should list {})", v.join(" ")));
        }
        for (a, n) in &numvfs {
            after.push(format!("cat /sys/bus/pci/devices/{a}/sriov_numvfs  (should read {n})"));
        }
    }
    Ok(PersistPlan {
        devices,
        removed,
        numvfs,
        ids: next.ids(),
        softdeps: next.softdeps(),
        persisted: next,
        files,
        unchanged,
        also_claimed: vec![],
        warnings: outside_warnings(state),
        after,
    })
}

/// Plans persisting `req` on top of what the files hold (this is also the dry run).
pub fn plan_persist(fs: &dyn HostFs, req: &PersistRequest) -> Result<PersistPlan> {
    let state = read_persisted(fs)?;
    refuse_foreign(&state)?;
    let ids_db = PciIds::default();
    let all = pci_addresses(fs)?;
    let mut chosen: Vec<PciAddress> = if req.devices.is_empty() && req.numvfs.is_empty() {
        all.iter()
            .copied()
            .filter(|a| current_driver(fs, *a).as_deref() == Some("vfio-pci"))
            .collect()
    } else {
        req.devices.clone()
    };
    chosen.sort();
    chosen.dedup();
    if chosen.is_empty() && req.numvfs.is_empty() {
        return Err(Error::NotFound {
            what: "devices to persist".into(),
            hint: Some(
                "bind them to vfio-pci first, or name them (PersistRequest::devices)".into(),
            ),
        });
    }
    let mut warnings = vec![];
    // The devices: they exist, and the host does not need them (unless forced).
    let journal = read_journal(fs).unwrap_or_default();
    let mut adds = vec![];
    for &a in &chosen {
        let d = read_device(fs, a, &ids_db)?;
        let mut why = vec![];
        if SysfsDevice::new(fs, a).is_bridge() {
            why.push(
                "it is a bridge (class 06xx): the devices behind it would lose their path to the host; vfio-pci takes endpoints only"
                    .to_string(),
            );
        }
        why.extend(host_uses(fs, a));
        if !why.is_empty() {
            if !req.force {
                return Err(Error::InUse { device: a.to_string(), reason: why.join("; ") });
            }
            warnings.push(format!(
                "{a} is persisted although the host uses it (forced): {}",
                why.join("; ")
            ));
        }
        let native = journal
            .devices
            .iter()
            .find(|e| e.address == a.to_string())
            .and_then(|e| e.driver.clone())
            .or(d.driver.clone())
            .filter(|n| n != "vfio-pci" && is_module_name(n));
        adds.push(IdDevice {
            address: a,
            vendor: d.vendor,
            device: d.device,
            native,
            display: d.class >> 8 == 0x0300,
        });
    }
    // The VF counts: SR-IOV PFs, within sriov_totalvfs.
    let mut numvfs: Vec<(PciAddress, u16)> = vec![];
    for &(pf, n) in &req.numvfs {
        if let Some((_, m)) = numvfs.iter().find(|(p, _)| *p == pf) {
            if *m != n {
                return Err(Error::Invalid {
                    what: "VF count",
                    input: format!("{pf}={n}"),
                    reason: format!("{pf} is given twice ({m} and {n}); give one count per PF"),
                });
            }
            continue;
        }
        let st = sriov_state(fs, pf)?;
        if n == 0 {
            return Err(Error::Invalid {
                what: "VF count",
                input: format!("{pf}=0"),
                reason: format!("no VFs is what every boot starts with; to drop a persisted count, remove {pf} from what is persisted"),
            });
        }
        if n > st.total_vfs {
            return Err(Error::Invalid {
                what: "VF count",
                input: format!("{pf}={n}"),
                reason: format!("{pf} supports at most {} VFs (sriov_totalvfs)", st.total_vfs),
            });
        }
        numvfs.push((pf, n));
    }
    // The next content of the blocks.
    let before = state.persisted.clone();
    let mut next = before.clone();
    for add in &adds {
        let a = add.address;
        if req.per_device {
            next.by_id.retain(|d| d.address != a);
            next.by_address.push(a);
        } else {
            let old_native =
                next.by_id.iter().find(|d| d.address == a).and_then(|d| d.native.clone());
            next.by_address.retain(|x| *x != a);
            next.by_id.retain(|d| d.address != a);
            let mut add = add.clone();
            add.native = add.native.or(old_native);
            next.by_id.push(add);
        }
    }
    next.numvfs.retain(|(a, _)| !numvfs.iter().any(|(p, _)| p == a));
    next.numvfs.extend(numvfs.iter().copied());
    next.normalize();
    // ids= takes every device with a claimed id: name them, and refuse new ids that
    // would take one the host uses.
    let ids = next.ids();
    let old_ids = before.ids();
    let mine: BTreeSet<PciAddress> =
        next.by_id.iter().map(|d| d.address).chain(next.by_address.iter().copied()).collect();
    let mut also = vec![];
    for &a in &all {
        if mine.contains(&a) {
            continue;
        }
        let Ok(d) = read_device(fs, a, &ids_db) else { continue };
        let id = format!("{:04x}:{:04x}", d.vendor, d.device);
        if !ids.contains(&id) {
            continue;
        }
        also.push(a);
        if old_ids.contains(&id) {
            continue;
        }
        let mut why = host_uses(fs, a);
        if SysfsDevice::new(fs, a).is_bridge() {
            why.push("it is a bridge".into());
        }
        if why.is_empty() {
            continue;
        }
        let by = next
            .by_id
            .iter()
            .find(|x| x.id() == id)
            .map(|x| x.address.to_string())
            .unwrap_or_default();
        let reason = format!(
            "{}; ids={id} would also claim it at boot (the same vendor:device as {by}); persist by address (PersistRequest::per_device) to claim {by} alone",
            why.join("; ")
        );
        if !req.force {
            return Err(Error::InUse { device: a.to_string(), reason });
        }
        warnings.push(format!("{a} is claimed too although the host uses it (forced): {reason}"));
    }
    let mut plan = plan_from(fs, &state, next, chosen, vec![], numvfs)?;
    plan.also_claimed = also;
    warnings.append(&mut plan.warnings);
    plan.warnings = warnings;
    Ok(plan)
}

/// Plans removing `addresses` (everything vfiotool persisted when empty) from the blocks.
pub fn plan_remove(fs: &dyn HostFs, addresses: &[PciAddress]) -> Result<PersistPlan> {
    let state = read_persisted(fs)?;
    refuse_foreign(&state)?;
    let known = state.persisted.addresses();
    let removed: Vec<PciAddress> = if addresses.is_empty() {
        known.iter().copied().collect()
    } else {
        let mut v = addresses.to_vec();
        v.sort();
        v.dedup();
        if let Some(a) = v.iter().find(|a| !known.contains(a)) {
            return Err(Error::NotFound {
                what: format!("{a} in what vfiotool persisted"),
                hint: Some("read_persisted gives the devices and VF counts persisted".into()),
            });
        }
        v
    };
    let mut next = state.persisted.clone();
    next.by_id.retain(|d| !removed.contains(&d.address));
    next.by_address.retain(|a| !removed.contains(a));
    next.numvfs.retain(|(a, _)| !removed.contains(a));
    plan_from(fs, &state, next, vec![], removed, vec![])
}

/// Carries out a plan's file changes (on a dry-run view this only records them): for
/// each file that changes, the previous content goes to `FILE.vfiotool-bak`, then the
/// file is replaced or deleted.
pub fn write_persist(fs: &dyn HostFs, plan: &PersistPlan) -> Result<()> {
    let denied = |e: Error| match e.errno() {
        Some(nix::errno::Errno::EACCES) | Some(nix::errno::Errno::EPERM) => {
            e.with_hint("changing the boot configuration needs root")
        }
        _ => e,
    };
    for f in &plan.files {
        if let Some(dir) = f.path.parent() {
            if f.new.is_some() {
                fs.create_dir_all(dir, 0o755)
                    .map_err(|e| denied(Error::host("create directory", dir, e)))?;
            }
        }
        if let Some(old) = &f.old {
            let b = f.backup_path();
            fs.replace_file(&b, old.as_bytes(), f.mode)
                .map_err(|e| denied(Error::host("write", &b, e)))?;
        }
        match &f.new {
            Some(text) => fs
                .replace_file(&f.path, text.as_bytes(), f.mode)
                .map_err(|e| denied(Error::host("write", &f.path, e)))?,
            None => {
                fs.remove_file(&f.path).map_err(|e| denied(Error::host("remove", &f.path, e)))?
            }
        }
    }
    Ok(())
}

/// Plans and writes a persist request under the host lock.
pub fn persist(fs: &dyn HostFs, req: &PersistRequest) -> Result<PersistPlan> {
    let _lock = HostLock::acquire(fs)?;
    let plan = plan_persist(fs, req)?;
    write_persist(fs, &plan)?;
    Ok(plan)
}

/// Plans and writes a removal under the host lock.
pub fn remove(fs: &dyn HostFs, addresses: &[PciAddress]) -> Result<PersistPlan> {
    let _lock = HostLock::acquire(fs)?;
    let plan = plan_remove(fs, addresses)?;
    write_persist(fs, &plan)?;
    Ok(plan)
}

#[cfg(all(test, feature = "mock"))]
mod tests;
