//! Capturing the files the toolkit reads from a host into a new directory.
//!
//! The result is a real tree (symbolic links kept, relative as sysfs has them) that
//! [`RealFs::new(dir)`](crate::hostfs::RealFs::new) or `vfiotool --sysfs-root DIR` reads
//! back: a host's PCI devices, drivers, IOMMU groups and units, the VFIO modules'
//! parameters, the command line, mounts, swaps, routes and addresses, the kernel log and
//! the boot configuration. Write-only attributes, BAR resources, option ROMs and vital
//! product data are left out; device nodes and the boot tools `doctor` looks for become
//! empty files.
//!
//! **Private content.** By default identifying content is left out or redacted
//! ([`crate::host::redact`]): `/etc/passwd` is left out (only `bind --user NAME` needs
//! it), the kernel log keeps its IOMMU lines only, disk identifiers leave the command
//! line, addresses leave the routes, mount points other than the system's leave
//! `/proc/mounts`, and device serial numbers leave config space. What the toolkit's
//! readers use is kept, so `list`, `groups`, `doctor` and the guards answer on the
//! snapshot as on the host. [`SnapshotOptions::keep_private`] keeps everything verbatim.
//! The [`SnapshotReport`] lists every file and what happened to it.
//!
//! **Safety.** The directory is created by the snapshot itself, exclusively and `0700`:
//! an existing one is refused, so nothing planted in it beforehand can redirect a write.
//! Every write goes through a [`RealFs`] confined to the directory that follows no
//! symbolic link (`openat2` with `RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS`), and links are
//! made with [`RealFs::symlink`] only when their target stays inside the tree. The source
//! is read through [`HostFs`], which reads regular files only and stops at a size cap,
//! and the capture stops at [`MAX_ENTRIES`] entries and [`MAX_BYTES`] bytes, so a
//! hostile source (a FIFO, a huge file, looping links) can neither hang nor exhaust it.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::host::{redact, resolve_link, PCI_DEVICES};
use crate::hostfs::{HostFs, NodeKind, RealFs, READ_CAP};

/// The largest sysfs attribute read (config space is 4 KiB; a larger one is refused).
pub const SYSFS_CAP: usize = 1 << 20;

/// The most files, links, directories and skipped paths one snapshot records.
pub const MAX_ENTRIES: usize = 200_000;

/// The most bytes one snapshot writes.
pub const MAX_BYTES: u64 = 256 << 20;

/// How a snapshot is taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotOptions {
    /// Keep every file verbatim, identifying content included (`/etc/passwd`, the whole
    /// kernel log, disk identifiers, addresses, mount points, serial numbers).
    pub keep_private: bool,
}

/// What happened to one file of the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// Copied verbatim.
    Kept,
    /// Copied with identifying content replaced.
    Redacted,
    /// Not copied, by default, because it identifies the host or its users.
    LeftOut,
    /// Not copied because it could not or must not be read (a FIFO, too large, a link
    /// leading out of the tree...).
    Skipped,
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Disposition::Kept => "kept",
            Disposition::Redacted => "redacted",
            Disposition::LeftOut => "left out",
            Disposition::Skipped => "skipped",
        })
    }
}

/// One file (or link that was not copied) of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Captured {
    /// The host path.
    pub path: String,
    /// What happened to it.
    pub disposition: Disposition,
    /// What was replaced, or why it was left out or skipped.
    pub note: Option<String>,
}

/// What a snapshot captured.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotReport {
    /// Every regular file considered, in capture order, and every path skipped.
    pub entries: Vec<Captured>,
    /// Regular files written.
    pub files: usize,
    /// Symbolic links made.
    pub links: usize,
    /// Directories made.
    pub dirs: usize,
}

impl SnapshotReport {
    /// How many entries had this disposition.
    pub fn count(&self, d: Disposition) -> usize {
        self.entries.iter().filter(|e| e.disposition == d).count()
    }

    /// The entry of a host path.
    pub fn entry(&self, path: &str) -> Option<&Captured> {
        self.entries.iter().find(|e| e.path == path)
    }
}

const VFIO_MODULES: [&str; 7] =
    ["vfio", "vfio_iommu_type1", "vfio_pci", "vfio_pci_core", "vfio_virqfd", "iommufd", "kvm"];

const SINGLE_FILES: [&str; 15] = [
    "/proc/cmdline",
    "/proc/mounts",
    "/proc/swaps",
    "/proc/net/route",
    "/proc/net/ipv6_route",
    "/proc/net/if_inet6",
    "/proc/sys/kernel/osrelease",
    "/proc/self/limits",
    "/proc/cpuinfo",
    "/etc/default/grub",
    "/etc/kernel/cmdline",
    "/etc/passwd",
    "/usr/share/misc/pci.ids",
    "/usr/share/hwdata/pci.ids",
    "/var/log/kern.log",
];

/// Tools whose presence `doctor` uses to pick a fix; copied as empty marker files.
const TOOLS: [&str; 9] = [
    "/usr/sbin/update-grub",
    "/usr/sbin/update-initramfs",
    "/usr/sbin/proxmox-boot-tool",
    "/usr/bin/dracut",
    "/usr/sbin/dracut",
    "/usr/bin/bootctl",
    "/sbin/update-grub",
    "/sbin/update-initramfs",
    "/etc/kernel/proxmox-boot-uuids",
];

/// Attributes never read: write-only triggers, BARs and ROMs (reading them touches the
/// device).
fn skip_name(name: &str) -> bool {
    name == "rom"
        || name == "remove"
        || name == "reset"
        || name == "rescan"
        || name.starts_with("resource") && name.len() > "resource".len()
}

/// What the snapshot does with a file's content by default.
enum Policy {
    Keep,
    Text(fn(&str) -> String, &'static str),
    Bytes(fn(&[u8]) -> Vec<u8>, &'static str),
    LeaveOut(&'static str),
}

fn policy(p: &Path) -> Policy {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    match p.to_str().unwrap_or("") {
        "/etc/passwd" => Policy::LeaveOut("user names; only a bind for a user reads it"),
        "/var/log/kern.log" => Policy::Text(
            redact::kernel_log,
            "only IOMMU, DMAR, AMD-Vi, VFIO and remapping lines, without host name",
        ),
        "/proc/cmdline" | "/etc/default/grub" | "/etc/kernel/cmdline" => {
            Policy::Text(redact::cmdline, "UUID=, PARTUUID=, LABEL= values replaced")
        }
        "/proc/net/route" => Policy::Text(
            redact::routes_v4,
            "gateways zeroed, destinations of non-default routes replaced",
        ),
        "/proc/net/ipv6_route" => {
            Policy::Text(redact::routes_v6, "addresses replaced by documentation ones")
        }
        "/proc/net/if_inet6" => {
            Policy::Text(redact::if_inet6, "addresses replaced by documentation ones")
        }
        "/proc/mounts" => Policy::Text(
            redact::mounts,
            "mount points other than /, /boot, /boot/efi, /usr, /var, /home replaced",
        ),
        "/proc/swaps" => Policy::Text(redact::swaps, "swap file paths replaced"),
        _ if p.starts_with("/sys") && name == "config" => {
            Policy::Bytes(redact::config, "device serial number zeroed")
        }
        _ if p.starts_with("/sys") && name == "vpd" => {
            Policy::LeaveOut("vital product data: serial numbers")
        }
        _ => Policy::Keep,
    }
}

/// Whether a relative link target, resolved from the link's directory, stays inside the
/// tree (an absolute target or one climbing above `/` would lead out of it for any
/// program reading the snapshot without confinement).
fn stays_inside(link: &Path, target: &Path) -> bool {
    let mut depth = link
        .parent()
        .map_or(0, |p| p.components().filter(|c| matches!(c, Component::Normal(_))).count());
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir if depth > 0 => depth -= 1,
            _ => return false,
        }
    }
    true
}

/// Whether a write failed because of something in the way inside the snapshot (a link
/// or a file where a directory should be), which skips that path only.
fn in_the_way(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR | libc::EEXIST))
}

struct Copier<'a> {
    fs: &'a dyn HostFs,
    dest: RealFs,
    root: PathBuf,
    opts: SnapshotOptions,
    report: SnapshotReport,
    made: HashSet<PathBuf>,
    bytes: u64,
    full: bool,
}

impl Copier<'_> {
    fn note(&mut self, p: &Path, disposition: Disposition, note: Option<String>) {
        self.report.entries.push(Captured { path: p.display().to_string(), disposition, note });
    }

    fn skip(&mut self, p: &Path, why: impl Into<String>) {
        self.note(p, Disposition::Skipped, Some(why.into()));
    }

    /// Whether there is room for another entry; records once that the capture stopped.
    fn room(&mut self) -> bool {
        if self.full {
            return false;
        }
        let r = &self.report;
        let n = r.entries.len() + r.links + r.dirs;
        if n >= MAX_ENTRIES || self.bytes >= MAX_BYTES {
            self.full = true;
            self.report.entries.push(Captured {
                path: "/".into(),
                disposition: Disposition::Skipped,
                note: Some(format!(
                    "the capture stopped at {MAX_ENTRIES} entries or {} MiB; the rest is left out",
                    MAX_BYTES >> 20
                )),
            });
            return false;
        }
        true
    }

    fn write_error(&self, op: &'static str, p: &Path, e: io::Error) -> Error {
        Error::host(op, self.root.join(p.strip_prefix("/").unwrap_or(p)), e)
    }

    /// Makes a directory and its parents; `false` when something is in the way.
    fn mkdir(&mut self, p: &Path) -> Result<bool> {
        if self.made.contains(p) {
            return Ok(true);
        }
        match self.dest.create_dir_all(p, 0o755) {
            Ok(()) => {}
            Err(e) if in_the_way(&e) => {
                self.skip(p, format!("cannot be made in the snapshot: {e}"));
                return Ok(false);
            }
            Err(e) => return Err(self.write_error("create directory", p, e)),
        }
        for a in p.ancestors() {
            if a != Path::new("/") && self.made.insert(a.to_path_buf()) {
                self.report.dirs += 1;
            }
        }
        Ok(true)
    }

    fn put_file(
        &mut self,
        p: &Path,
        data: &[u8],
        mode: u32,
        disposition: Disposition,
        note: Option<String>,
    ) -> Result<()> {
        if let Some(parent) = p.parent() {
            if !self.mkdir(parent)? {
                return Ok(());
            }
        }
        match self.dest.replace_file(p, data, (mode & 0o777) | 0o600) {
            Ok(()) => {}
            Err(e) if in_the_way(&e) => {
                self.skip(p, format!("cannot be written in the snapshot: {e}"));
                return Ok(());
            }
            Err(e) => return Err(self.write_error("write", p, e)),
        }
        self.report.files += 1;
        self.bytes += data.len() as u64;
        self.note(p, disposition, note);
        Ok(())
    }

    /// Copies a regular file's content (following a final link, inside the source) as
    /// its policy says.
    fn copy_file(&mut self, p: &Path, mode: u32) -> Result<()> {
        if !self.room() {
            return Ok(());
        }
        let policy = if self.opts.keep_private { Policy::Keep } else { policy(p) };
        if let Policy::LeaveOut(why) = policy {
            self.note(p, Disposition::LeftOut, Some(format!("{why}; keep_private keeps it")));
            return Ok(());
        }
        let cap = if p.starts_with("/sys") { SYSFS_CAP } else { READ_CAP };
        let data = match self.fs.read_limited(p, cap) {
            Ok(d) => d,
            Err(e) => {
                self.skip(p, e.to_string());
                return Ok(());
            }
        };
        let (out, what) = match policy {
            Policy::Text(f, what) => (f(&String::from_utf8_lossy(&data)).into_bytes(), what),
            Policy::Bytes(f, what) => (f(&data), what),
            Policy::Keep | Policy::LeaveOut(_) => (data.clone(), ""),
        };
        if out == data {
            self.put_file(p, &data, mode, Disposition::Kept, None)
        } else {
            self.put_file(p, &out, mode, Disposition::Redacted, Some(what.into()))
        }
    }

    /// Copies a symbolic link when its target stays inside the tree; returns the host
    /// path it leads to.
    fn copy_link(&mut self, p: &Path) -> Result<Option<PathBuf>> {
        if !self.room() {
            return Ok(None);
        }
        let target = match self.fs.read_link(p) {
            Ok(t) => t,
            Err(e) => {
                self.skip(p, format!("not a readable link: {e}"));
                return Ok(None);
            }
        };
        if !stays_inside(p, &target) {
            self.skip(p, format!("link to {} leads out of the tree", target.display()));
            return Ok(None);
        }
        if let Some(parent) = p.parent() {
            if !self.mkdir(parent)? {
                return Ok(None);
            }
        }
        match self.dest.symlink(&target, p) {
            Ok(()) => self.report.links += 1,
            // Made already (a link reached twice).
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) if in_the_way(&e) => {
                self.skip(p, format!("cannot be made in the snapshot: {e}"));
                return Ok(None);
            }
            Err(e) => return Err(self.write_error("symlink", p, e)),
        }
        Ok(Some(resolve_link(p, &target)))
    }

    /// Copies `p` and, for directories, `depth` levels below it (links are copied, not
    /// followed). `listed`: `p` came from a directory listing, so its absence is worth
    /// reporting.
    fn tree(&mut self, p: &Path, depth: u32, listed: bool) -> Result<()> {
        if !self.room() {
            return Ok(());
        }
        let meta = match self.fs.metadata(p) {
            Ok(m) => m,
            Err(e) => {
                if listed {
                    self.skip(p, e.to_string());
                }
                return Ok(());
            }
        };
        match meta.kind {
            NodeKind::Symlink => {
                self.copy_link(p)?;
            }
            NodeKind::Dir => {
                if !self.mkdir(p)? || depth == 0 {
                    return Ok(());
                }
                let names = match self.fs.read_dir(p) {
                    Ok(n) => n,
                    Err(e) => {
                        self.skip(p, format!("cannot be listed: {e}"));
                        return Ok(());
                    }
                };
                for n in names {
                    let child = p.join(&n);
                    if n.contains(char::REPLACEMENT_CHARACTER) {
                        self.skip(&child, "its name is not valid UTF-8");
                    } else if !skip_name(&n) {
                        self.tree(&child, depth - 1, true)?;
                    }
                }
            }
            NodeKind::File if meta.mode & 0o444 != 0 => self.copy_file(p, meta.mode)?,
            // Write-only attributes hold nothing to read.
            NodeKind::File => {}
            NodeKind::CharDevice => {
                if self.room() {
                    let note = Some("device node, captured as an empty file".to_string());
                    self.put_file(p, b"", meta.mode, Disposition::Kept, note)?;
                }
            }
            NodeKind::Other => self.skip(p, "a FIFO, socket or block device; not read"),
        }
        Ok(())
    }

    /// Copies a link, then, when it leads to a directory under `under`, that directory
    /// `depth` levels deep.
    fn follow(&mut self, link: &Path, under: &str, depth: u32) -> Result<Option<PathBuf>> {
        let Some(t) = self.copy_link(link)? else { return Ok(None) };
        if !t.starts_with(under) {
            self.skip(link, format!("leads to {}, not under {under}; not followed", t.display()));
            return Ok(None);
        }
        self.tree(&t, depth, false)?;
        Ok(Some(t))
    }

    /// Follows every link of a directory (`/sys/class/iommu`, `/sys/block`).
    fn follow_all(&mut self, dir: &str, depth: u32, extra: &[(&str, u32)]) -> Result<()> {
        for n in self.fs.read_dir(Path::new(dir)).unwrap_or_default() {
            let link = Path::new(dir).join(&n);
            if n.contains(char::REPLACEMENT_CHARACTER) {
                self.skip(&link, "its name is not valid UTF-8");
                continue;
            }
            if let Some(t) = self.follow(&link, "/sys/devices", depth)? {
                for (sub, d) in extra {
                    self.tree(&t.join(sub), *d, false)?;
                }
            }
        }
        self.mkdir(Path::new(dir))?;
        Ok(())
    }
}

/// Creates `dest` (which must not exist) with mode `0700`, whatever the umask.
fn create_new_dir(dest: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dest) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(Error::Exists {
                path: dest.into(),
                what: "snapshot writes a new directory".into(),
            })
        }
        Err(e) => return Err(Error::host("create directory", dest, e)),
    }
    // Through a descriptor of the directory just made, never through a link.
    let d = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dest)
        .map_err(|e| Error::host("open", dest, e))?;
    d.set_permissions(std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::host("chmod", dest, e))
}

/// Copies the host's relevant files from `fs` into the new directory `dest`, which this
/// creates (an existing one is refused with [`Error::Exists`]).
pub fn snapshot(fs: &dyn HostFs, dest: &Path, opts: &SnapshotOptions) -> Result<SnapshotReport> {
    create_new_dir(dest)?;
    let mut c = Copier {
        fs,
        dest: RealFs::new(dest).no_symlinks(),
        root: dest.to_path_buf(),
        opts: *opts,
        report: SnapshotReport::default(),
        made: HashSet::new(),
        bytes: 0,
        full: false,
    };
    let devices = Path::new(PCI_DEVICES);
    c.mkdir(devices)?;
    for n in fs.read_dir(devices).map_err(|e| Error::host("read directory", devices, e))? {
        let link = devices.join(&n);
        if n.contains(char::REPLACEMENT_CHARACTER) {
            c.skip(&link, "its name is not valid UTF-8");
            continue;
        }
        if let Some(dir) = c.follow(&link, "/sys/devices", 1)? {
            c.tree(&dir.join("mdev_supported_types"), 3, false)?;
            c.tree(&dir.join("vfio-dev"), 2, false)?;
        }
    }
    c.tree(Path::new("/sys/bus/pci/drivers"), 2, false)?;
    // The mdev parents, PCI or not (a virtual device such as mtty), with their types;
    // the instances with their driver, type, group and cdev.
    c.follow_all("/sys/class/mdev_bus", 0, &[("mdev_supported_types", 3)])?;
    c.follow_all("/sys/bus/mdev/devices", 1, &[("vfio-dev", 1)])?;
    c.tree(Path::new("/sys/kernel/iommu_groups"), 3, false)?;
    c.follow_all("/sys/class/iommu", 2, &[])?;
    for m in VFIO_MODULES {
        c.tree(&Path::new("/sys/module").join(m), 2, false)?;
    }
    c.tree(Path::new("/sys/class/net"), 1, false)?;
    // Disks, with what holds them (LVM, RAID, dm-crypt), for the guards.
    c.follow_all("/sys/block", 0, &[("holders", 1)])?;
    for f in SINGLE_FILES {
        let p = Path::new(f);
        if let Ok(m) = fs.metadata(p) {
            if c.room() {
                c.copy_file(p, if m.kind == NodeKind::File { m.mode } else { 0o644 })?;
            }
        }
    }
    for d in ["/etc/modprobe.d", "/etc/modules-load.d", "/dev/vfio"] {
        c.tree(Path::new(d), 1, false)?;
    }
    c.tree(Path::new("/dev/iommu"), 0, false)?;
    for t in TOOLS {
        if fs.exists(Path::new(t)) && c.room() {
            let note = Some("captured empty: only its presence is used".to_string());
            c.put_file(Path::new(t), b"", 0o755, Disposition::Kept, note)?;
        }
    }
    Ok(c.report)
}

#[cfg(all(test, feature = "mock"))]
mod tests;
