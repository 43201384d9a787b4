//! Unit tests of snapshot on the simulated host.
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
    Vec<(String, crate::host::doctor::Verdict)>,
    Vec<(PciAddress, Vec<String>)>,
) {
    let ids = PciIds::default();
    let devices = list_devices(fs, &ids).unwrap().items;
    let groups = list_groups(fs, &ids).unwrap().items.iter().map(|g| (g.id, g.viable)).collect();
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
    assert_eq!(e.to_string(), format!("{} exists; snapshot writes a new directory", dir.display()));
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
    nix::unistd::mkfifo(&src.join("proc/cmdline"), nix::sys::stat::Mode::from_bits_truncate(0o644))
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
    let r =
        rx.recv_timeout(std::time::Duration::from_secs(120)).expect("the snapshot hung").unwrap();
    assert!(max_rss() - rss_before < 256 << 20, "memory grew by {} bytes", max_rss() - rss_before);
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
