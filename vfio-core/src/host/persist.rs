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
// Pure text: blocks
// ---------------------------------------------------------------------------------------

/// A file cut around vfiotool's block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split<'a> {
    /// The text before the [`BEGIN`] line (all of it when there is no block).
    pub before: &'a str,
    /// The lines between the markers; `None` when the file has no block.
    pub block: Option<&'a str>,
    /// The text after the [`END`] line (after its newline).
    pub after: &'a str,
}

impl Split<'_> {
    /// The user's part of the file: everything outside the block.
    pub fn outside(&self) -> String {
        format!("{}{}", self.before, self.after)
    }
}

/// Why a file's markers cannot be read: a line number (1-based) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockError {
    /// The line of the offending marker.
    pub line: usize,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl std::fmt::Display for BlockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.trim() == marker
}

/// Cuts `text` around vfiotool's block. A marker is a line that reads [`BEGIN`] or
/// [`END`] (surrounding white space ignored). A file has at most one block; an unpaired,
/// nested or second marker is an error, never a guess.
pub fn split_block(text: &str) -> Result<Split<'_>, BlockError> {
    let mut pos = 0;
    let mut begin: Option<(usize, usize)> = None; // (start of BEGIN line, end of it)
    let mut done: Option<(usize, usize, usize, usize)> = None;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let (start, end) = (pos, pos + line.len());
        pos = end;
        if is_marker(line, BEGIN) {
            if done.is_some() {
                return Err(BlockError { line: i + 1, reason: "a second vfiotool block" });
            }
            if begin.is_some() {
                return Err(BlockError {
                    line: i + 1,
                    reason: "a BEGIN marker inside the block (no END before it)",
                });
            }
            begin = Some((start, end));
        } else if is_marker(line, END) {
            match begin.take() {
                Some((b0, b1)) if done.is_none() => done = Some((b0, b1, start, end)),
                _ => {
                    return Err(BlockError {
                        line: i + 1,
                        reason: "an END marker with no BEGIN before it",
                    })
                }
            }
        }
    }
    if begin.is_some() {
        let line = text[..begin.map_or(0, |b| b.0)].matches('\n').count() + 1;
        return Err(BlockError { line, reason: "a BEGIN marker with no END after it" });
    }
    Ok(match done {
        Some((b0, b1, e0, e1)) => {
            Split { before: &text[..b0], block: Some(&text[b1..e0]), after: &text[e1..] }
        }
        None => Split { before: text, block: None, after: "" },
    })
}

/// The block holding `inner` (given a final newline when it lacks one).
fn block_text(inner: &str) -> String {
    let nl = if inner.is_empty() || inner.ends_with('\n') { "" } else { "\n" };
    format!("{BEGIN}\n{inner}{nl}{END}\n")
}

/// A file's new content with its block set to `inner` (`None`: no block).
///
/// `old` is the file now (`None`: absent). Outside the block every byte is kept; a file
/// without a block gets the block appended (after a newline closing its last line, if
/// that line had none). The result is `None` when the file should not exist: it did not
/// and gets no block, or it held nothing but the block and the block goes.
pub fn merge_block(old: Option<&str>, inner: Option<&str>) -> Result<Option<String>, BlockError> {
    if let Some(inner) = inner {
        if let Some(i) = inner.lines().position(|l| is_marker(l, BEGIN) || is_marker(l, END)) {
            return Err(BlockError { line: i + 1, reason: "a marker line inside the new block" });
        }
    }
    let Some(old) = old else {
        return Ok(inner.map(block_text));
    };
    let split = split_block(old)?;
    Ok(match (split.block, inner) {
        (Some(_), Some(inner)) => {
            Some(format!("{}{}{}", split.before, block_text(inner), split.after))
        }
        (Some(_), None) => Some(split.outside()).filter(|s| !s.is_empty()),
        (None, Some(inner)) => {
            let nl = if old.is_empty() || old.ends_with('\n') { "" } else { "\n" };
            Some(format!("{old}{nl}{}", block_text(inner)))
        }
        (None, None) => Some(old.to_string()),
    })
}

// ---------------------------------------------------------------------------------------
// Pure text: what the blocks hold
// ---------------------------------------------------------------------------------------

/// A device claimed by id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct IdDevice {
    /// The device.
    pub address: PciAddress,
    /// Its vendor id.
    pub vendor: u16,
    /// Its device id.
    pub device: u16,
    /// Its native driver module (for `softdep`), when known.
    pub native: Option<String>,
    /// A display controller (class 0300): `disable_vga=1`.
    pub display: bool,
}

impl IdDevice {
    /// `vvvv:dddd`.
    pub fn id(&self) -> String {
        format!("{:04x}:{:04x}", self.vendor, self.device)
    }

    fn line(&self) -> String {
        format!(
            "# device {} {} {}{}",
            self.address,
            self.id(),
            self.native.as_deref().unwrap_or("-"),
            if self.display { " display" } else { "" }
        )
    }
}

/// Whether a driver name can stand in a `softdep` line: a module name.
pub fn is_module_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s != "-"
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Everything vfiotool persisted: the content of its blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Persisted {
    /// Devices vfio-pci claims by id (`options vfio-pci ids=`).
    pub by_id: Vec<IdDevice>,
    /// Devices vfio-pci takes by address (udev, `driver_override`).
    pub by_address: Vec<PciAddress>,
    /// VF counts set at boot (udev, `sriov_numvfs`), per PF.
    pub numvfs: Vec<(PciAddress, u16)>,
}

/// The udev rule putting one device on vfio-pci.
pub fn override_rule(a: PciAddress) -> String {
    format!(
        "ACTION==\"add\", SUBSYSTEM==\"pci\", KERNEL==\"{a}\", ATTR{{driver_override}}=\"vfio-pci\", RUN+=\"/bin/sh -c 'echo $kernel > /sys/bus/pci/drivers_probe'\""
    )
}

/// The udev rule setting a PF's VF count.
pub fn numvfs_rule(a: PciAddress, n: u16) -> String {
    format!(
        "ACTION==\"add|bind\", SUBSYSTEM==\"pci\", KERNEL==\"{a}\", ATTR{{sriov_numvfs}}=\"{n}\""
    )
}

/// The value of `KEY=="..."` or `KEY="..."` in a udev rule line (the first one).
fn rule_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    let rest = line[start..].strip_prefix("==").or_else(|| line[start..].strip_prefix('='))?;
    let rest = rest.strip_prefix('"')?;
    Some(&rest[..rest.find('"')?])
}

impl Persisted {
    /// Whether nothing is persisted.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty() && self.by_address.is_empty() && self.numvfs.is_empty()
    }

    /// Sorts every list by address and keeps one entry per address (the last given).
    pub fn normalize(&mut self) {
        let mut seen = BTreeSet::new();
        self.by_id.reverse();
        self.by_id.retain(|d| seen.insert(d.address));
        self.by_id.sort();
        self.by_address.sort();
        self.by_address.dedup();
        let mut seen = BTreeSet::new();
        self.numvfs.reverse();
        self.numvfs.retain(|(a, _)| seen.insert(*a));
        self.numvfs.sort();
    }

    /// Every address named anywhere.
    pub fn addresses(&self) -> BTreeSet<PciAddress> {
        let mut s: BTreeSet<PciAddress> = self.by_id.iter().map(|d| d.address).collect();
        s.extend(self.by_address.iter().copied());
        s.extend(self.numvfs.iter().map(|(a, _)| *a));
        s
    }

    /// The ids claimed, sorted, once each.
    pub fn ids(&self) -> Vec<String> {
        let s: BTreeSet<String> = self.by_id.iter().map(IdDevice::id).collect();
        s.into_iter().collect()
    }

    /// The native drivers loaded after vfio-pci (`softdep`), as module names.
    pub fn softdeps(&self) -> Vec<String> {
        let s: BTreeSet<String> = self
            .by_id
            .iter()
            .filter_map(|d| d.native.as_deref())
            .filter(|n| is_module_name(n))
            .map(|n| n.replace('-', "_"))
            .collect();
        s.into_iter().collect()
    }

    /// The lines of the modprobe block that follow from the devices.
    fn derived_modprobe_lines(&self) -> Vec<String> {
        let mut v = vec![format!(
            "options vfio-pci ids={}{}",
            self.ids().join(","),
            if self.by_id.iter().any(|d| d.display) { " disable_vga=1" } else { "" }
        )];
        v.extend(self.softdeps().iter().map(|s| format!("softdep {s} pre: vfio-pci")));
        v
    }

    /// The modprobe block's lines (`None` when no device is claimed by id).
    pub fn render_modprobe(&self) -> Option<String> {
        if self.by_id.is_empty() {
            return None;
        }
        let mut s = format!("{MODPROBE_HEADER}\n");
        for d in &self.by_id {
            s += &d.line();
            s.push('\n');
        }
        for l in self.derived_modprobe_lines() {
            s += &l;
            s.push('\n');
        }
        Some(s)
    }

    /// The modules-load block's lines (`None` when no device is put on vfio-pci).
    pub fn render_modules(&self) -> Option<String> {
        if self.by_id.is_empty() && self.by_address.is_empty() {
            return None;
        }
        Some(format!("{MODULES_HEADER}\n{}\n", MODULES.join("\n")))
    }

    /// The udev block's lines (`None` when there is no rule).
    pub fn render_rules(&self) -> Option<String> {
        if self.by_address.is_empty() && self.numvfs.is_empty() {
            return None;
        }
        let mut s = format!("{RULES_HEADER}\n");
        for a in &self.by_address {
            s += &override_rule(*a);
            s.push('\n');
        }
        for (a, n) in &self.numvfs {
            s += &numvfs_rule(*a, *n);
            s.push('\n');
        }
        Some(s)
    }

    /// The block of one managed file (by path: [`MODPROBE_CONF`], [`MODULES_CONF`],
    /// [`UDEV_RULES`]).
    pub fn render(&self, file: &str) -> Option<String> {
        match file {
            MODPROBE_CONF => self.render_modprobe(),
            MODULES_CONF => self.render_modules(),
            UDEV_RULES => self.render_rules(),
            _ => None,
        }
    }

    /// Reads what the blocks hold: the modprobe block, the modules-load block and the udev
    /// block (each `None` when its file has none). Returns the lines vfiotool would not
    /// have written there, with the file they are in; blank lines are ignored.
    pub fn parse(
        modprobe: Option<&str>,
        modules: Option<&str>,
        rules: Option<&str>,
    ) -> (Persisted, Vec<(&'static str, String)>) {
        let mut p = Persisted::default();
        let mut unknown = vec![];
        let mut rest = vec![];
        for l in modprobe.unwrap_or("").lines().map(str::trim).filter(|l| !l.is_empty()) {
            match parse_device_line(l) {
                Some(d) => p.by_id.push(d),
                None => rest.push(l),
            }
        }
        // The ids= and softdep lines follow from the devices: one that does not was
        // edited by hand.
        let derived = if p.by_id.is_empty() { vec![] } else { p.derived_modprobe_lines() };
        for l in rest {
            if l != MODPROBE_HEADER && !derived.iter().any(|d| d == l) {
                unknown.push((MODPROBE_CONF, l.to_string()));
            }
        }
        for l in modules.unwrap_or("").lines().map(str::trim).filter(|l| !l.is_empty()) {
            if l != MODULES_HEADER && !MODULES.contains(&l) {
                unknown.push((MODULES_CONF, l.to_string()));
            }
        }
        for l in rules.unwrap_or("").lines().map(str::trim).filter(|l| !l.is_empty()) {
            if l == RULES_HEADER {
                continue;
            }
            let a = rule_value(l, "KERNEL").and_then(|k| PciAddress::parse(k).ok());
            let known = match a {
                Some(a) if l == override_rule(a) => {
                    p.by_address.push(a);
                    true
                }
                Some(a) => match rule_value(l, "ATTR{sriov_numvfs}").and_then(|n| n.parse().ok()) {
                    Some(n) if n > 0 && l == numvfs_rule(a, n) => {
                        p.numvfs.push((a, n));
                        true
                    }
                    _ => false,
                },
                None => false,
            };
            if !known {
                unknown.push((UDEV_RULES, l.to_string()));
            }
        }
        (p, unknown)
    }
}

/// A `# device ADDRESS VVVV:DDDD DRIVER|- [display]` line, exactly as written.
fn parse_device_line(l: &str) -> Option<IdDevice> {
    let f: Vec<&str> = l.strip_prefix("# device ")?.split(' ').collect();
    let (addr, id, native, display) = match f.as_slice() {
        [a, i, n] => (*a, *i, *n, false),
        [a, i, n, "display"] => (*a, *i, *n, true),
        _ => return None,
    };
    let (v, d) = id.split_once(':')?;
    let hex4 = |s: &str| {
        (s.len() == 4 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u16::from_str_radix(s, 16).ok())
            .flatten()
    };
    let dev = IdDevice {
        address: PciAddress::parse(addr).ok()?,
        vendor: hex4(v)?,
        device: hex4(d)?,
        native: (native != "-").then(|| native.to_string()),
        display,
    };
    if dev.native.as_deref().is_some_and(|n| !is_module_name(n)) || dev.line() != l {
        return None;
    }
    Some(dev)
}

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
                err.with_hint("vfiotool edits only small configuration files; move it aside")
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
            after.push(format!(
                "vfiotool list {}  (the driver column should read vfio-pci)",
                v.join(" ")
            ));
        }
        for (a, n) in &numvfs {
            after.push(format!("vfiotool sriov {a}  (should show {n} VFs enabled)"));
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
                "bind them first (vfiotool bind ADDRESS) or name them: vfiotool persist ADDRESS..."
                    .into(),
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
                "{a} is persisted although the host uses it (--force): {}",
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
                reason: format!("no VFs is what every boot starts with; to drop a persisted count run 'vfiotool persist --remove {pf}'"),
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
            "{}; ids={id} would also claim it at boot (the same vendor:device as {by}); use --per-device to claim {by} alone",
            why.join("; ")
        );
        if !req.force {
            return Err(Error::InUse { device: a.to_string(), reason });
        }
        warnings.push(format!("{a} is claimed too although the host uses it (--force): {reason}"));
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
                hint: Some(
                    "'vfiotool persist --list' shows the devices and VF counts it holds".into(),
                ),
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
            e.with_hint("changing the boot configuration needs root: run vfiotool with sudo")
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
mod tests {
    use super::*;
    use crate::host::bind::{bind, BindRequest};
    use crate::mock::{DeviceSpec, MockHost, SysState};

    fn a(s: &str) -> PciAddress {
        PciAddress::parse(s).unwrap()
    }

    const USER: &str = "# my settings\noptions kvm ignore_msrs=1\n\nblacklist nouveau\n";

    #[test]
    fn a_block_is_appended_replaced_and_removed_keeping_every_other_byte() {
        // No file: the block alone; no block and nothing to write: no file.
        assert_eq!(
            merge_block(None, Some("x\n")).unwrap().unwrap(),
            format!("{BEGIN}\nx\n{END}\n")
        );
        assert_eq!(merge_block(None, None).unwrap(), None);
        // A file without a block gets it appended.
        let one = merge_block(Some(USER), Some("a\n")).unwrap().unwrap();
        assert_eq!(one, format!("{USER}{BEGIN}\na\n{END}\n"));
        // The block is replaced in place, what surrounds it untouched.
        let mut around = one.clone();
        around.push_str("options kvm_intel nested=1"); // no final newline
        let two = merge_block(Some(&around), Some("b\nc")).unwrap().unwrap();
        assert_eq!(two, format!("{USER}{BEGIN}\nb\nc\n{END}\noptions kvm_intel nested=1"));
        let s = split_block(&two).unwrap();
        assert_eq!(
            (s.before, s.block, s.after),
            (USER, Some("b\nc\n"), "options kvm_intel nested=1")
        );
        // Same block again: same bytes.
        assert_eq!(merge_block(Some(&two), Some("b\nc\n")).unwrap().unwrap(), two);
        // Removing the block gives back the user's bytes.
        assert_eq!(
            merge_block(Some(&two), None).unwrap().unwrap(),
            format!("{USER}options kvm_intel nested=1")
        );
        // A file that held only the block goes; one without a block stays as it is.
        assert_eq!(merge_block(Some(&format!("{BEGIN}\nx\n{END}\n")), None).unwrap(), None);
        assert_eq!(merge_block(Some(USER), None).unwrap().as_deref(), Some(USER));
        // A last line without a newline is closed before the block.
        assert_eq!(
            merge_block(Some("options kvm ignore_msrs=1"), Some("a\n")).unwrap().unwrap(),
            format!("options kvm ignore_msrs=1\n{BEGIN}\na\n{END}\n")
        );
        // Markers with surrounding blanks and CRLF endings are markers.
        let crlf = format!("u\r\n  {BEGIN} \r\nold\r\n{END}\r\nv\r\n");
        let s = split_block(&crlf).unwrap();
        assert_eq!((s.before, s.block, s.after), ("u\r\n", Some("old\r\n"), "v\r\n"));
    }

    #[test]
    fn unpaired_or_repeated_markers_are_refused() {
        let cases = [
            (format!("a\n{BEGIN}\nb\n"), 2, "no END"),
            (format!("{END}\n{BEGIN}\n{END}\n"), 1, "no BEGIN"),
            (format!("{BEGIN}\n{BEGIN}\n{END}\n"), 2, "inside the block"),
            (format!("{BEGIN}\n{END}\n{BEGIN}\n{END}\n"), 3, "second vfiotool block"),
            (format!("{BEGIN}\n{END}\n{END}\n"), 3, "no BEGIN"),
        ];
        for (text, line, what) in cases {
            let e = split_block(&text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.to_string().contains(what), "{text:?}: {e}");
            assert!(merge_block(Some(&text), Some("x\n")).is_err());
        }
        // A new block may not carry a marker.
        assert!(merge_block(None, Some(&format!("x\n{END}\n"))).is_err());
    }

    fn sample() -> Persisted {
        let mut p = Persisted {
            by_id: vec![
                IdDevice {
                    address: a("0000:05:00.1"),
                    vendor: 0x10de,
                    device: 0x10f0,
                    native: Some("snd_hda_intel".into()),
                    display: false,
                },
                IdDevice {
                    address: a("0000:05:00.0"),
                    vendor: 0x10de,
                    device: 0x1b80,
                    native: Some("nouveau".into()),
                    display: true,
                },
            ],
            by_address: vec![a("0000:04:00.0")],
            numvfs: vec![(a("0000:02:00.0"), 2)],
        };
        p.normalize();
        p
    }

    #[test]
    fn blocks_render_and_parse_back() {
        let p = sample();
        let modprobe = p.render_modprobe().unwrap();
        assert_eq!(
            modprobe,
            format!(
                "{MODPROBE_HEADER}\n\
                 # device 0000:05:00.0 10de:1b80 nouveau display\n\
                 # device 0000:05:00.1 10de:10f0 snd_hda_intel\n\
                 options vfio-pci ids=10de:10f0,10de:1b80 disable_vga=1\n\
                 softdep nouveau pre: vfio-pci\n\
                 softdep snd_hda_intel pre: vfio-pci\n"
            )
        );
        let rules = p.render_rules().unwrap();
        assert!(rules.contains(
            "ACTION==\"add\", SUBSYSTEM==\"pci\", KERNEL==\"0000:04:00.0\", ATTR{driver_override}=\"vfio-pci\""
        ));
        assert!(rules.contains(
            "ACTION==\"add|bind\", SUBSYSTEM==\"pci\", KERNEL==\"0000:02:00.0\", ATTR{sriov_numvfs}=\"2\"\n"
        ));
        let modules = p.render_modules().unwrap();
        assert!(modules.ends_with("vfio\nvfio_iommu_type1\nvfio_pci\n"));
        let (back, foreign) = Persisted::parse(Some(&modprobe), Some(&modules), Some(&rules));
        assert_eq!(back, p);
        assert!(foreign.is_empty(), "{foreign:?}");
        // Nothing persisted: no blocks.
        let none = Persisted::default();
        assert_eq!(
            (none.render_modprobe(), none.render_modules(), none.render_rules()),
            (None, None, None)
        );
        // Only VF counts: the rules, without the modules.
        let vfs = Persisted { numvfs: vec![(a("02:00.0"), 3)], ..Default::default() };
        assert!(vfs.render_modules().is_none() && vfs.render_rules().is_some());
    }

    #[test]
    fn lines_vfiotool_did_not_write_are_reported() {
        let p = sample();
        let mut modprobe = p.render_modprobe().unwrap();
        modprobe += "options kvm ignore_msrs=1\n";
        // An ids= line edited by hand no longer follows from the devices.
        let edited = modprobe.replace("ids=10de:10f0,10de:1b80", "ids=10de:10f0");
        let rules = p.render_rules().unwrap().replace("\"2\"", "\"two\"");
        let (back, foreign) = Persisted::parse(Some(&edited), Some("vfio\nkvm\n"), Some(&rules));
        assert_eq!(back.by_id, p.by_id);
        assert!(back.numvfs.is_empty());
        let lines: Vec<&str> = foreign.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(lines.len(), 4, "{foreign:?}");
        assert!(lines.contains(&"options kvm ignore_msrs=1"));
        assert!(lines.contains(&"options vfio-pci ids=10de:10f0 disable_vga=1"));
        assert!(lines.contains(&"kvm"));
        assert!(lines.iter().any(|l| l.contains("\"two\"")));
        // A device line with a driver that is not a module name is not vfiotool's.
        let (back, foreign) =
            Persisted::parse(Some("# device 0000:01:00.0 1234:5678 a/b\n"), None, None);
        assert!(back.by_id.is_empty() && foreign.len() == 1);
    }

    #[test]
    fn vf_counts_parse_with_clear_errors() {
        assert_eq!(parse_numvfs("0000:02:00.0=4").unwrap(), (a("0000:02:00.0"), 4));
        assert_eq!(parse_numvfs("02:00.0=7").unwrap(), (a("0000:02:00.0"), 7));
        for (bad, says) in [
            ("02:00.0", "write PF=N"),
            ("02:00.0:4", "write PF=N"),
            ("nic=4", "not a PCI address"),
            ("02:00.0=four", "not a count"),
            ("02:00.0=-1", "not a count"),
            ("02:00.0=70000", "not a count"),
        ] {
            let e = parse_numvfs(bad).unwrap_err().to_string();
            assert!(e.contains(says) && !e.contains('\n'), "{bad}: {e}");
        }
    }

    #[test]
    fn options_softdeps_and_shared_ids() {
        let mut vga = DeviceSpec::new("0000:05:00.0").driver("nouveau").group(7);
        vga.vendor = 0x10de;
        vga.device = 0x1b80;
        vga.class = 0x030000;
        let h = MockHost::new([
            vga,
            DeviceSpec::edu("0000:00:04.0").driver("edu").group(1),
            DeviceSpec::edu("0000:00:05.0").driver("edu").group(2),
        ])
        .with_sys(|s| *s = SysState::intel_ready());
        let fs = h.fs();
        assert!(plan_persist(&*fs, &PersistRequest::default()).is_err());
        bind(&*fs, &BindRequest::vfio("0000:00:04.0")).unwrap();
        bind(&*fs, &BindRequest::vfio("0000:05:00.0")).unwrap();
        let p = plan_persist(&*fs, &PersistRequest::default()).unwrap();
        assert_eq!(p.ids, vec!["10de:1b80", "1234:11e8"]);
        assert_eq!(p.softdeps, vec!["edu", "nouveau"]);
        assert_eq!(p.also_claimed, vec![a("00:05.0")]);
        let conf = p.files.iter().find(|f| f.path == Path::new(MODPROBE_CONF)).unwrap();
        let text = conf.new.as_deref().unwrap();
        assert!(
            text.contains("options vfio-pci ids=10de:1b80,1234:11e8 disable_vga=1\n"),
            "{text}"
        );
        assert!(text.contains("softdep nouveau pre: vfio-pci\n"));
        assert_eq!(p.after[0], "update-initramfs -u -k all");
        persist(&*fs, &PersistRequest::default()).unwrap();
        assert_eq!(fs.read(Path::new(MODPROBE_CONF)).unwrap(), text.as_bytes());
        assert!(fs.read_string(Path::new(MODULES_CONF)).unwrap().contains("vfio_pci"));
        // What the files hold reads back; the same request again changes nothing.
        let st = read_persisted(&*fs).unwrap();
        assert_eq!(st.persisted, p.persisted);
        let again = plan_persist(&*fs, &PersistRequest::default()).unwrap();
        assert!(again.files.is_empty() && again.after.is_empty(), "{again:?}");
    }
}
