//! vfiotool against hostile trees given with `--sysfs-root`: links out of the root,
//! FIFOs, huge and endless files, loops, odd names, planted journals and thousands of
//! group members. Every command runs as its own process (the real binary), so a hang is
//! a timeout and memory is the process's peak RSS. For each command and tree:
//!
//! - it finishes within [`DEADLINE`], with exit status 0, 1 or 2 and no panic; a failure
//!   is one line on standard error starting with `vfiotool:`;
//! - its peak memory stays under [`MAX_RSS_KIB`];
//! - nothing outside the tree changes: every file and directory beside the tree is
//!   compared (content, size, mode, owner, mtime) before and after.

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vfio_core::mock::{DeviceSpec, MockHost, SysState};

mod common;
use common::igb_sriov_nic;

const DEADLINE: Duration = Duration::from_secs(30);
const MAX_RSS_KIB: i64 = 256 * 1024;

const EDU: &str = "0000:00:04.0";
const NVME: &str = "0000:01:00.0";
const NIC: &str = "0000:02:00.0";

/// What is compared of each path beside the tree: content, size, mode, owner, mtime.
type Observed = BTreeMap<PathBuf, (Vec<u8>, u64, u32, u32, u32, i64)>;

/// A captured tree of a simulated host, under `base/root`, with `base/outside` beside it
/// holding files a hostile tree points at.
struct Tree {
    base: tempfile::TempDir,
}

impl Tree {
    fn new() -> Self {
        let h = MockHost::new([
            DeviceSpec::edu(EDU).driver("edu").group(1),
            DeviceSpec::bridge("0000:00:1c.0").driver("pcieport").group(2),
            DeviceSpec::nvme(NVME).driver("nvme").group(2),
            igb_sriov_nic(NIC, 3),
        ])
        .with_sys(|s| {
            *s = SysState::intel_ready();
            s.load_vfio();
        });
        let base = tempfile::tempdir().unwrap();
        let opts = vfio_core::host::snapshot::SnapshotOptions { keep_private: true };
        vfio_core::host::snapshot::snapshot(&*h.fs(), &base.path().join("root"), &opts).unwrap();
        let outside = base.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("victim"), b"do not touch\n").unwrap();
        std::fs::create_dir(outside.join("dir")).unwrap();
        std::fs::write(outside.join("dir/vfio.conf"), b"options kvm ignore_msrs=1\n").unwrap();
        Tree { base }
    }

    fn root(&self) -> PathBuf {
        self.base.path().join("root")
    }

    fn outside(&self) -> PathBuf {
        self.base.path().join("outside")
    }

    fn at(&self, host_path: &str) -> PathBuf {
        self.root().join(host_path.trim_start_matches('/'))
    }

    /// The real directory of a device (the bus link resolved).
    fn dev(&self, bdf: &str) -> PathBuf {
        std::fs::canonicalize(self.at(&format!("/sys/bus/pci/devices/{bdf}"))).unwrap()
    }

    /// Replaces a file or link of the tree with a link to `target`.
    fn link(&self, path: &Path, target: &Path) {
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_dir_all(path);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).unwrap();
        }
        symlink(target, path).unwrap();
    }

    fn fifo(&self, path: &Path) {
        let _ = std::fs::remove_file(path);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).unwrap();
        }
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    }

    fn sparse(&self, path: &Path, len: u64) {
        let _ = std::fs::remove_file(path);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).unwrap();
        }
        std::fs::File::create(path).unwrap().set_len(len).unwrap();
    }

    /// Everything beside the tree: path to (content, size, mode, uid, gid, mtime).
    fn outside_state(&self) -> Observed {
        let mut out = BTreeMap::new();
        let mut todo = vec![self.base.path().to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p == self.root() {
                    continue;
                }
                let m = std::fs::symlink_metadata(&p).unwrap();
                let content = if m.is_file() { std::fs::read(&p).unwrap() } else { vec![] };
                if m.is_dir() {
                    todo.push(p.clone());
                }
                out.insert(p, (content, m.len(), m.mode(), m.uid(), m.gid(), m.mtime_nsec()));
            }
        }
        out
    }
}

/// Runs the vfiotool binary; returns (status, stderr, peak RSS in KiB). The child is
/// reaped with `wait4` (for its rusage), or killed and reaped at the deadline.
#[allow(clippy::zombie_processes)]
fn vfiotool(root: &Path, args: &[&str]) -> (i32, String, i64) {
    let err = tempfile::NamedTempFile::new().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vfiotool"))
        .arg("--sysfs-root")
        .arg(root)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(err.reopen().unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: `rusage` is plain data that wait4 fills; `status` is a valid int.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our child; the pointers are valid for the call.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
            let stderr = std::fs::read_to_string(err.path()).unwrap_or_default();
            return (code, stderr, ru.ru_maxrss);
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vfiotool {args:?} did not finish within {DEADLINE:?} (hung)");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every command an operator might run on a captured tree.
fn commands(out: &Path) -> Vec<Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let o = out.display().to_string();
    vec![
        s(&["list"]),
        s(&["list", "--json"]),
        s(&["groups"]),
        s(&["doctor"]),
        s(&["info", EDU]),
        s(&["info", "-v", EDU]),
        s(&["info", NVME]),
        s(&["sriov", NIC]),
        s(&["mdev", "list"]),
        s(&["restore"]),
        s(&["bind", EDU, "--dry-run"]),
        s(&["bind", EDU, "--user", "1000"]),
        s(&["bind", NVME, "--force"]),
        s(&["bind", "01:00", "--group", "--force"]),
        s(&["unbind", EDU]),
        s(&["restore", EDU]),
        s(&["restore", "--all"]),
        s(&["sriov", NIC, "--numvfs", "2"]),
        s(&["persist", EDU]),
        s(&["persist", EDU, "--write"]),
        s(&["rom", "dump", EDU, "-o", &format!("{o}/rom.bin"), "--source", "sysfs"]),
        s(&["snapshot", &format!("{o}/snap")]),
    ]
}

fn check_all(name: &str, tree: &Tree) {
    let out = tempfile::tempdir().unwrap();
    let before = tree.outside_state();
    for args in commands(out.path()) {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, err, rss) = vfiotool(&tree.root(), &argv);
        let what = format!("{name}: vfiotool {}", args.join(" "));
        assert!(!err.contains("panicked"), "{what}: panic: {err}");
        assert!((0..=2).contains(&code), "{what}: status {code}: {err}");
        if code != 0 {
            let lines: Vec<&str> =
                err.lines().filter(|l| !l.starts_with("vfiotool: skipped ")).collect();
            assert!(lines.len() <= 1 || code == 2, "{what}: not one line: {err}");
            assert!(
                lines.iter().all(|l| l.starts_with("vfiotool:") || l.starts_with("warning")),
                "{what}: {err}"
            );
        }
        assert!(rss < MAX_RSS_KIB, "{what}: peak memory {rss} KiB");
        assert_eq!(tree.outside_state(), before, "{what}: changed something outside the tree");
    }
}

#[test]
fn links_out_of_the_root_never_lead_out() {
    let t = Tree::new();
    let victim = t.outside().join("victim");
    let edu = t.dev(EDU);
    // Absolute and climbing links, at every place the toolkit writes or chowns.
    t.link(&edu.join("driver_override"), &victim);
    t.link(&edu.join("rom"), Path::new("../../../../../../../../outside/victim"));
    t.link(&t.dev(NIC).join("sriov_numvfs"), &victim);
    t.link(&t.at("/dev/vfio/1"), &victim);
    t.link(&t.at("/etc/modprobe.d"), &t.outside().join("dir"));
    t.link(&t.at("/etc/modules-load.d"), Path::new("../../outside/dir"));
    t.link(&t.at("/sys/bus/pci/drivers_probe"), &victim);
    t.link(&t.at("/run/vfiotool"), &t.outside());
    t.link(&t.at("/etc/passwd"), Path::new("/etc/passwd"));
    check_all("links", &t);
    // The run directory planted as a link is refused, not followed.
    let (code, err, _) = vfiotool(&t.root(), &["bind", EDU]);
    assert_eq!(code, 1, "{err}");
}

#[test]
fn fifos_and_endless_files_do_not_hang_or_fill_memory() {
    let t = Tree::new();
    t.fifo(&t.dev(EDU).join("config"));
    t.fifo(&t.at("/proc/cmdline"));
    t.fifo(&t.at("/var/log/kern.log"));
    t.fifo(&t.dev(NVME).join("vendor"));
    t.link(&t.dev(NIC).join("config"), Path::new("/dev/zero"));
    t.link(&t.at("/proc/mounts"), Path::new("/dev/urandom"));
    check_all("fifos", &t);
    // The device with a FIFO for vendor is named as skipped; the others are listed.
    let (code, err, _) = vfiotool(&t.root(), &["list"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("skipped {NVME}")), "{err}");
}

#[test]
fn huge_files_are_refused_after_a_bounded_read() {
    let t = Tree::new();
    t.sparse(&t.dev(EDU).join("config"), 5 << 30);
    t.sparse(&t.at("/usr/share/misc/pci.ids"), 2 << 30);
    std::fs::create_dir_all(t.at("/run/vfiotool")).unwrap();
    std::fs::set_permissions(
        t.at("/run/vfiotool"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    t.sparse(&t.at("/run/vfiotool/journal.json"), 2 << 30);
    t.sparse(&t.at("/proc/cmdline"), 1 << 30);
    check_all("huge", &t);
}

#[test]
fn loops_odd_names_and_bad_attributes_are_skipped_and_named() {
    let t = Tree::new();
    let devices = t.at("/sys/bus/pci/devices");
    t.link(&devices.join("0000:00:09.0"), Path::new("0000:00:09.0"));
    t.link(&t.dev(EDU).join("driver"), Path::new("driver"));
    std::fs::write(t.dev(NVME).join("device"), b"not hex\n").unwrap();
    let odd = std::ffi::OsStr::from_bytes_compat(b"0000:00:0a.0\xff");
    t.link(&devices.join(odd), Path::new("nowhere"));
    t.link(&devices.join("0000:00:0b.0\nx"), Path::new("nowhere"));
    t.link(&devices.join("00:04.0"), Path::new("0000:00:04.0"));
    t.link(&t.at("/sys/kernel/iommu_groups/1/devices/loop"), Path::new("."));
    check_all("loops", &t);
    let (code, err, _) = vfiotool(&t.root(), &["list"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("skipped 0000:00:09.0"), "{err}");
    assert!(err.contains(&format!("skipped {NVME}")), "{err}");
}

#[test]
fn planted_journals_are_refused_or_confined() {
    for journal in [
        // Names a node outside /dev/vfio.
        r#"{"format":"vfiotool.journal/1","devices":[],"nodes":[{"path":"/etc/shadow","uid":1000,"gid":1000}]}"#,
        // A valid journal whose node is a link out of the tree.
        r#"{"format":"vfiotool.journal/1","devices":[{"address":"0000:00:04.0","target":"vfio-pci","driver":"edu","driver_override":null,"sriov_numvfs":null}],"nodes":[{"path":"/dev/vfio/1","uid":1000,"gid":1000}]}"#,
        // Cut short.
        r#"{"format":"vfiotool.journal/1","devices":[{"address":"0000:0"#,
    ] {
        let t = Tree::new();
        std::fs::create_dir_all(t.at("/run/vfiotool")).unwrap();
        std::fs::set_permissions(
            t.at("/run/vfiotool"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        std::fs::write(t.at("/run/vfiotool/journal.json"), journal).unwrap();
        t.link(&t.at("/dev/vfio/1"), &t.outside().join("victim"));
        t.link(&t.at("/sys/bus/pci/drivers/edu/bind"), &t.outside().join("victim"));
        check_all("journal", &t);
    }
}

#[test]
fn thousands_of_group_members_and_devices_stay_bounded() {
    let t = Tree::new();
    let members = t.at("/sys/kernel/iommu_groups/1/devices");
    let devices = t.at("/sys/bus/pci/devices");
    for i in 0..4000u32 {
        let name = format!("0000:{:02x}:{:02x}.{}", 0x40 + (i >> 8), (i >> 3) & 0x1f, i & 7);
        symlink("../../../../devices/nowhere", members.join(&name)).unwrap();
        symlink("../../../devices/nowhere", devices.join(&name)).unwrap();
    }
    check_all("thousands", &t);
    let (code, err, _) = vfiotool(&t.root(), &["groups"]);
    assert_eq!(code, 0, "{err}");
}

/// `OsStr` from raw bytes (Unix names need not be UTF-8).
trait FromBytesCompat {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr;
}

impl FromBytesCompat for std::ffi::OsStr {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(b)
    }
}
