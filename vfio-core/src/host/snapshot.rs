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
        "/etc/passwd" => Policy::LeaveOut("user names; only 'bind --user NAME' reads it"),
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
            self.note(p, Disposition::LeftOut, Some(format!("{why}; --keep-private keeps it")));
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
    c.tree(Path::new("/sys/bus/mdev/devices"), 1, false)?;
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
mod tests {
    use super::*;
    use crate::host::doctor::{run_checks, DoctorOptions};
    use crate::host::guards::host_uses;
    use crate::host::{devices::list_devices, groups::list_groups, pci_ids::PciIds};
    use crate::mock::sysfs::{SimBlock, SimNet};
    use crate::mock::{DeviceSpec, MockHost, SysState};
    use crate::PciAddress;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn a(s: &str) -> PciAddress {
        PciAddress::parse(s).unwrap()
    }

    const PRIVATE: [&str; 8] = [
        "alice",
        "0b6c1b4e",
        "0100A8C0",
        "0000A8C0",
        "2a0104f8",
        "0211223344",
        "SerialNumber",
        "nas.example",
    ];

    /// A host with private content everywhere a snapshot looks: user names, disk UUIDs,
    /// gateways, IPv6 addresses, user mount points, swap files, a chatty kernel log.
    fn private_host() -> MockHost {
        let mut nic2 = DeviceSpec::new("0000:03:00.0").driver("e1000e").group(5);
        nic2.class = 0x020000;
        let mut nic3 = DeviceSpec::new("0000:03:00.1").driver("e1000e").group(6);
        nic3.class = 0x020000;
        MockHost::new([
            DeviceSpec::bridge("0000:00:1c.0").driver("pcieport").group(2),
            DeviceSpec::nvme("0000:01:00.0").driver("nvme").group(2),
            DeviceSpec::nvme("0000:01:00.1").driver("nvme").group(2),
            DeviceSpec::edu("0000:00:04.0").driver("vfio-pci").group(1),
            nic2,
            nic3,
        ])
        .with_sys(|s| {
            *s = SysState::intel_ready();
            s.load_vfio();
            s.cmdline = "BOOT_IMAGE=/vmlinuz root=UUID=0b6c1b4e-7d3a-4a5e-9b1e-2f0c3d4e5f60 \
                         ro quiet intel_iommu=on iommu=pt pcie_acs_override=downstream"
                .into();
            s.kernel_log = Some(
                "Jan  1 00:00:01 alice-pc kernel: DMAR: IOMMU enabled\n\
                 Jan  1 00:00:01 alice-pc kernel: usb 1-1: SerialNumber: 4C530001\n\
                 Jan  1 00:00:02 alice-pc kernel: DMAR-IR: Enabled IRQ remapping in x2apic mode\n"
                    .into(),
            );
            s.nets.push(SimNet {
                name: "eth0".into(),
                device: a("0000:03:00.0"),
                default_route: true,
                ipv4: vec!["192.168.0.2/24".into()],
            });
            s.nets.push(SimNet {
                name: "eth1".into(),
                device: a("0000:03:00.1"),
                default_route: false,
                ipv4: vec![],
            });
            s.blocks.push(SimBlock { name: "nvme0n1".into(), device: a("0000:01:00.0") });
            s.blocks.push(SimBlock { name: "nvme1n1".into(), device: a("0000:01:00.1") });
            s.mounts = vec![
                "/dev/nvme0n1p2 / ext4 rw 0 0".into(),
                "/dev/nvme0n1p3 /home/alice/photos ext4 rw 0 0".into(),
                "nas.example.com:/export /mnt/nas nfs4 rw,addr=10.1.2.3 0 0".into(),
                "proc /proc proc rw 0 0".into(),
            ];
            let files = [
                (
                    "/proc/net/if_inet6",
                    "2a0104f8000000000000000000000002 03 40 00 80 eth1\n\
                     fe800000000000000211223344556677 02 40 20 80 eth0\n",
                ),
                (
                    "/proc/net/ipv6_route",
                    "2a0104f8000000000000000000000000 40 00000000000000000000000000000000 00 \
                     fe800000000000000211223344556677 00000400 00000001 00000000 00000003 eth1\n",
                ),
                (
                    "/proc/swaps",
                    "Filename Type Size Used Priority\n/dev/nvme1n1p1 partition 1 0 -2\n\
                     /home/alice/swapfile file 4 0 -3\n",
                ),
            ];
            for (p, t) in files {
                s.files.insert(p.into(), t.as_bytes().to_vec());
            }
        })
    }

    /// Everything the toolkit's readers answer about a host view. Device nodes are
    /// captured as empty files (a snapshot holds no live device node), so the checks of
    /// `/dev/vfio/vfio` and `/dev/iommu` are the only ones left out.
    #[allow(clippy::type_complexity)]
    fn answers(
        fs: &dyn HostFs,
    ) -> (
        Vec<crate::host::devices::PciDevice>,
        Vec<(u32, bool)>,
        Vec<(String, crate::host::doctor::Status)>,
        Vec<(PciAddress, Vec<String>)>,
    ) {
        let ids = PciIds::default();
        let devices = list_devices(fs, &ids).unwrap().items;
        let groups =
            list_groups(fs, &ids).unwrap().items.iter().map(|g| (g.id, g.viable)).collect();
        let checks = run_checks(fs, &DoctorOptions::default())
            .into_iter()
            .filter(|c| !c.id.starts_with("dev-"))
            .map(|c| (c.id, c.status))
            .collect();
        // Mount points other than the system's are redacted: the guard names the
        // filesystems by device, and where they are mounted only in its message.
        let without_mount_points = |why: String| match why.split_once(" (") {
            Some((head, list)) if head.ends_with("has mounted filesystems") => {
                let devs: Vec<&str> =
                    list.split(", ").map(|m| m.split(" on ").next().unwrap_or(m)).collect();
                format!("{head} ({})", devs.join(", "))
            }
            _ => why,
        };
        let uses = devices
            .iter()
            .map(|d| {
                let why = host_uses(fs, d.address).into_iter().map(without_mount_points);
                (d.address, why.collect())
            })
            .collect();
        (devices, groups, checks, uses)
    }

    fn all_text(dir: &Path) -> String {
        let mut out = String::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let t = e.file_type().unwrap();
                if t.is_dir() {
                    todo.push(e.path());
                } else if t.is_file() {
                    out += &String::from_utf8_lossy(&std::fs::read(e.path()).unwrap());
                }
            }
        }
        out
    }

    #[test]
    fn a_snapshot_reads_back_like_the_host() {
        let h = private_host();
        let fs = h.fs();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("snap");
        let r = snapshot(&*fs, &dir, &SnapshotOptions::default()).unwrap();
        assert!(r.files > 20 && r.links > 5, "{r:?}");
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        let back = RealFs::new(&dir);
        let (src, snap) = (answers(&*fs), answers(&back));
        assert_eq!(snap.0, src.0, "list_devices");
        assert_eq!(snap.1, src.1, "list_groups");
        assert_eq!(snap.2, src.2, "doctor");
        assert_eq!(snap.3, src.3, "host_uses");
        // The guards have something to say about each kind of use, on both.
        let uses = |x: &str| src.3.iter().find(|(d, _)| *d == a(x)).unwrap().1.join("; ");
        assert!(uses("0000:03:00.0").contains("default route"), "{}", uses("0000:03:00.0"));
        assert!(uses("0000:03:00.1").contains("has an address"), "{}", uses("0000:03:00.1"));
        assert!(uses("0000:01:00.0").contains("mounted"), "{}", uses("0000:01:00.0"));
        assert!(uses("0000:01:00.1").contains("swap"), "{}", uses("0000:01:00.1"));
        assert!(std::fs::symlink_metadata(dir.join("sys/bus/pci/devices/0000:00:04.0"))
            .unwrap()
            .file_type()
            .is_symlink());
        // Nothing private is left, and the report says what happened to each file.
        let text = all_text(&dir);
        for p in PRIVATE {
            assert!(!text.contains(p), "{p} is in the snapshot");
        }
        assert!(!dir.join("etc/passwd").exists());
        let d = |p: &str| r.entry(p).unwrap_or_else(|| panic!("{p} not in {r:#?}")).disposition;
        assert_eq!(d("/etc/passwd"), Disposition::LeftOut);
        for p in [
            "/proc/cmdline",
            "/proc/mounts",
            "/proc/swaps",
            "/proc/net/route",
            "/proc/net/ipv6_route",
            "/proc/net/if_inet6",
            "/var/log/kern.log",
        ] {
            assert_eq!(d(p), Disposition::Redacted, "{p}");
        }
        assert_eq!(d("/proc/sys/kernel/osrelease"), Disposition::Kept);
        assert_eq!(d("/etc/default/grub"), Disposition::Kept);
        assert_eq!(r.count(Disposition::Skipped), 0, "{r:#?}");

        // --keep-private: verbatim, the same answers.
        let dir = tmp.path().join("verbatim");
        let opts = SnapshotOptions { keep_private: true };
        let r = snapshot(&*fs, &dir, &opts).unwrap();
        assert_eq!(answers(&RealFs::new(&dir)), src);
        assert_eq!(r.count(Disposition::Redacted) + r.count(Disposition::LeftOut), 0);
        for p in ["/etc/passwd", "/proc/cmdline", "/proc/mounts", "/var/log/kern.log"] {
            assert_eq!(
                std::fs::read(dir.join(&p[1..])).unwrap(),
                fs.read(Path::new(p)).unwrap(),
                "{p}"
            );
        }
        // A snapshot of the verbatim snapshot (a RealFs source) redacts it the same way.
        let again = tmp.path().join("again");
        snapshot(&RealFs::new(&dir), &again, &SnapshotOptions::default()).unwrap();
        assert_eq!(answers(&RealFs::new(&again)), src);
        let text = all_text(&again);
        assert!(PRIVATE.iter().all(|p| !text.contains(p)));
    }

    #[test]
    fn an_existing_directory_is_refused_and_a_planted_link_left_alone() {
        let h = private_host();
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"root's file\n").unwrap();
        let dir = tmp.path().join("snap");
        std::fs::create_dir_all(dir.join("proc")).unwrap();
        symlink(&victim, dir.join("proc/cmdline")).unwrap();
        let e = snapshot(&*h.fs(), &dir, &SnapshotOptions::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{} exists; snapshot writes a new directory", dir.display())
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"root's file\n");
        assert!(std::fs::symlink_metadata(dir.join("proc/cmdline")).unwrap().is_symlink());
        // The directory itself a link (to a directory or dangling): refused as well.
        let link = tmp.path().join("link");
        symlink(tmp.path(), &link).unwrap();
        assert!(matches!(
            snapshot(&*h.fs(), &link, &SnapshotOptions::default()),
            Err(Error::Exists { .. })
        ));
        let dangling = tmp.path().join("dangling");
        symlink(tmp.path().join("nowhere"), &dangling).unwrap();
        assert!(snapshot(&*h.fs(), &dangling, &SnapshotOptions::default()).is_err());
        assert!(!tmp.path().join("nowhere").exists());
    }

    /// Every path under `dir` but `skip`, with what it is (content for small files).
    fn listing(dir: &Path, skip: &Path) -> Vec<(PathBuf, String)> {
        let mut out = vec![];
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.starts_with(skip) {
                    continue;
                }
                let m = std::fs::symlink_metadata(&p).unwrap();
                let what = if m.is_symlink() {
                    format!("link {:?}", std::fs::read_link(&p).unwrap())
                } else if m.is_dir() {
                    todo.push(p.clone());
                    format!("dir {:o}", m.permissions().mode())
                } else {
                    use std::os::unix::fs::MetadataExt;
                    format!("{:?} {} {} {}", m.file_type(), m.len(), m.mtime(), m.mtime_nsec())
                };
                out.push((p, what));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_hostile_source_is_captured_without_hanging_leaking_or_escaping() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let outside = tmp.path().join("etc");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("shadow"), b"root:secret\n").unwrap();
        let dev = src.join("sys/devices/pci0000:00/0000:00:04.0");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::create_dir_all(src.join("sys/bus/pci/devices")).unwrap();
        std::fs::create_dir_all(src.join("proc")).unwrap();
        symlink(
            "../../../devices/pci0000:00/0000:00:04.0",
            src.join("sys/bus/pci/devices/0000:00:04.0"),
        )
        .unwrap();
        std::fs::write(dev.join("vendor"), b"0x1234\n").unwrap();
        // config: a 5 GB sparse file.
        std::fs::File::create(dev.join("config")).unwrap().set_len(5 << 30).unwrap();
        // Links out of the tree, to /etc of the host: absolute and climbing.
        symlink(&outside, dev.join("escape")).unwrap();
        symlink("../../../../../../../../../../etc", dev.join("climb")).unwrap();
        // A device link leading to /etc inside the tree, and one to outside it.
        symlink("../../../../etc", src.join("sys/bus/pci/devices/0000:00:06.0")).unwrap();
        symlink(&outside, src.join("sys/bus/pci/devices/0000:00:07.0")).unwrap();
        std::fs::create_dir_all(src.join("etc")).unwrap();
        std::fs::write(src.join("etc/shadow"), b"tree-secret\n").unwrap();
        // Looping links: a device link to itself and a pair in the device directory.
        symlink("0000:00:05.0", src.join("sys/bus/pci/devices/0000:00:05.0")).unwrap();
        symlink("b", dev.join("a")).unwrap();
        symlink("a", dev.join("b")).unwrap();
        // A file name that is not UTF-8.
        std::fs::write(dev.join(OsStr::from_bytes(b"bad\xffname")), b"x").unwrap();
        // /proc/cmdline: a FIFO nobody writes to.
        nix::unistd::mkfifo(
            &src.join("proc/cmdline"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let source = RealFs::new(&src);
        let before = listing(tmp.path(), &tmp.path().join("snap"));
        let rss_before = max_rss();

        let dir = tmp.path().join("snap");
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dir.clone();
        std::thread::spawn(move || {
            let _ = tx.send(snapshot(&source, &d, &SnapshotOptions::default()));
        });
        let r = rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("the snapshot hung")
            .unwrap();
        assert!(
            max_rss() - rss_before < 256 << 20,
            "memory grew by {} bytes",
            max_rss() - rss_before
        );
        // Nothing outside the snapshot changed (the source included).
        assert_eq!(listing(tmp.path(), &dir), before);
        // Nothing inside it leads out, and nothing secret came in.
        for (p, what) in listing(&dir, Path::new("/nonexistent")) {
            if let Ok(t) = std::fs::read_link(&p) {
                let host = Path::new("/").join(p.strip_prefix(&dir).unwrap());
                assert!(stays_inside(&host, &t), "{} -> {}", p.display(), t.display());
            }
            let _ = what;
        }
        let text = all_text(&dir);
        assert!(!text.contains("secret"), "{text}");
        assert_eq!(
            std::fs::read(dir.join("sys/devices/pci0000:00/0000:00:04.0/vendor")).unwrap(),
            b"0x1234\n"
        );
        // The report names every path it skipped, and why.
        let why = |p: &str| {
            let e = r.entry(p).unwrap_or_else(|| panic!("{p} not in {r:#?}"));
            assert_eq!(e.disposition, Disposition::Skipped, "{p}");
            e.note.clone().unwrap()
        };
        let devdir = "/sys/devices/pci0000:00/0000:00:04.0";
        assert!(why("/proc/cmdline").contains("FIFO"), "{}", why("/proc/cmdline"));
        assert!(why(&format!("{devdir}/config")).contains("larger than"));
        assert!(why(&format!("{devdir}/escape")).contains("leads out of the tree"));
        assert!(why(&format!("{devdir}/climb")).contains("leads out of the tree"));
        assert!(why("/sys/bus/pci/devices/0000:00:06.0").contains("not under /sys/devices"));
        assert!(why("/sys/bus/pci/devices/0000:00:07.0").contains("leads out of the tree"));
        assert!(why("/sys/bus/pci/devices/0000:00:05.0").contains("not under /sys/devices"));
        assert!(why(&format!("{devdir}/bad\u{fffd}name")).contains("not valid UTF-8"));
        assert!(r.links >= 3, "{r:#?}");
    }

    fn max_rss() -> i64 {
        // SAFETY: `ru` is a plain C struct that getrusage fills.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: as above; RUSAGE_SELF with a valid pointer.
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        ru.ru_maxrss * 1024
    }
}
