//! Every host command through `vfiotool::run`, on a simulated host.

use std::path::Path;
use std::sync::Arc;

use vfio_core::hostfs::HostFs;
use vfio_core::mock::sysfs::{SimBlock, SimNet};
use vfio_core::mock::{DeviceSpec, MockHost, SimMdevParent, SysState};

mod common;
use common::{a, i915_gvt, igb_sriov_nic, run_fs, Run};

fn run(h: &MockHost, args: &[&str]) -> Run {
    run_on(h.fs(), args)
}

fn run_on(fs: Arc<dyn HostFs>, args: &[&str]) -> Run {
    run_fs(fs, args)
}

const IDS: &str = "10de  NVIDIA Corporation\n\t1b80  GP104 [GeForce GTX 1080]\n\t10f0  GP104 High Definition Audio Controller\n1234  Technical Corp.\n\t11e8  QEMU edu device\nC 03  Display controller\n\t00  VGA compatible controller\n";

fn host() -> MockHost {
    let mut vga = DeviceSpec::new("0000:05:00.0").driver("nouveau").group(7);
    (vga.vendor, vga.device, vga.class) = (0x10de, 0x1b80, 0x030000);
    let mut audio = DeviceSpec::new("0000:05:00.1").driver("snd_hda_intel").group(7);
    (audio.vendor, audio.device, audio.class) = (0x10de, 0x10f0, 0x040300);
    let nic = igb_sriov_nic("0000:02:00.0", 3);
    let igd = i915_gvt("0000:00:02.0", 0);
    MockHost::new([
        igd,
        DeviceSpec::edu("0000:00:04.0").driver("edu").group(1),
        nic,
        DeviceSpec::nvme("0000:04:00.0").driver("nvme").group(4),
        DeviceSpec::bridge("0000:00:1c.0").driver("pcieport").group(7),
        vga,
        audio,
    ])
    .with_sys(|s| {
        *s = SysState::intel_ready();
        s.files.insert("/usr/share/misc/pci.ids".into(), IDS.as_bytes().to_vec());
        s.boot_vga = Some(a("0000:00:02.0"));
        s.blocks.push(SimBlock { name: "nvme0n1".into(), device: a("0000:04:00.0") });
        s.mounts.push("/dev/nvme0n1p2 / ext4 rw 0 0".into());
        s.nets.push(SimNet {
            name: "eth0".into(),
            device: a("0000:02:00.0"),
            default_route: false,
            ipv4: vec!["10.0.0.2/24".into()],
        });
    })
}

#[test]
fn list_shows_names_drivers_groups_and_filters() {
    let h = host();
    let r = run(&h, &["list"]);
    assert_eq!(r.code, 0, "{}", r.err);
    let lines: Vec<&str> = r.out.lines().collect();
    assert_eq!(lines.len(), 8, "{}", r.out);
    let vga = lines.iter().find(|l| l.starts_with("0000:05:00.0")).unwrap();
    for part in [
        "10de:1b80:0300",
        "nouveau",
        " 7 ",
        " no ",
        "NVIDIA Corporation GP104 [GeForce GTX 1080]",
        "[VGA compatible controller]",
    ] {
        assert!(vga.contains(part), "{part}: {vga}");
    }
    let r = run(&h, &["list", "-d", "10de::", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    let r = run(&h, &["list", "-d", "*:*:0300"]);
    assert_eq!(r.out.lines().count(), 3, "{}", r.out);
    let r = run(&h, &["list", "05:00"]);
    assert_eq!(r.out.lines().count(), 3);
    let r = run(&h, &["list", "--name", "GEFORCE"]);
    assert_eq!(r.out.lines().count(), 2);
    let r = run(&h, &["list", "-d", "zz"]);
    assert_eq!(r.code, 1);
    assert!(
        r.err.starts_with("vfiotool: invalid device filter") && r.err.lines().count() == 1,
        "{}",
        r.err
    );
}

#[test]
fn groups_report_viability_and_the_fix() {
    let h = host();
    let r = run(&h, &["groups"]);
    assert_eq!(r.code, 0);
    assert!(r.out.contains("group 7: not ready for VFIO (held by host drivers)"), "{}", r.out);
    assert!(
        r.out.contains("fix: bind the whole group: vfiotool bind --group 0000:05:00.0"),
        "{}",
        r.out
    );
    assert!(r.out.contains("group 1: not ready for VFIO"));
    assert_eq!(run(&h, &["bind", "00:04.0"]).code, 0);
    assert!(run(&h, &["groups"]).out.contains("group 1: ready for VFIO, /dev/vfio/1"));
    let r = run(&h, &["groups", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 5);
    let none = MockHost::new([DeviceSpec::edu("0000:00:04.0")]);
    assert!(run(&none, &["groups"]).out.contains("no IOMMU groups"));
}

#[test]
fn bind_dry_run_group_and_unbind() {
    let h = host();
    let r = run(&h, &["bind", "0000:05:00.0", "--group", "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(
        r.out.contains("echo vfio-pci > /sys/bus/pci/devices/0000:05:00.1/driver_override"),
        "{}",
        r.out
    );
    assert_eq!(h.state().devices[&a("0000:05:00.0")].driver.as_deref(), Some("nouveau"));
    let r = run(&h, &["bind", "0000:05:00.0", "--group", "--user", "qemu"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(r.out.contains("0000:05:00.1 bound to vfio-pci (was snd_hda_intel)"), "{}", r.out);
    assert!(r.out.contains("group node: /dev/vfio/7"));
    assert_eq!(h.fs().metadata(Path::new("/dev/vfio/7")).unwrap().uid, 107);
    let r = run(&h, &["restore"]);
    assert!(r.out.contains("0000:05:00.0: moved to vfio-pci, was nouveau"), "{}", r.out);
    let r = run(&h, &["unbind", "05:00.0"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(r.out.contains("0000:05:00.0 is now on nouveau"));
    let r = run(&h, &["restore", "--all"]);
    assert!(r.out.contains("0000:05:00.1 is back on snd_hda_intel"), "{}", r.out);
    assert!(run(&h, &["restore"]).out.contains("is empty"));
}

#[test]
fn bind_guards_and_failures_are_one_line_errors() {
    let h = host();
    for (dev, what) in [
        ("00:02.0", "boot display"),
        ("04:00.0", "mounted filesystems"),
        ("02:00.0", "eth0 has an address"),
    ] {
        let r = run(&h, &["bind", dev]);
        assert_eq!(r.code, 1);
        assert!(
            r.err.contains(what) && r.err.contains("--force") && r.err.lines().count() == 1,
            "{dev}: {}",
            r.err
        );
    }
    let r = run(&h, &["bind", "02:00.0", "--force"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(run(&h, &["unbind", "09:00.0"]).code, 1);
}

#[test]
fn doctor_exit_code_follows_failures() {
    let h = host();
    let r = run(&h, &["doctor"]);
    assert_eq!(r.code, 1, "vfio modules are not loaded: {}", r.out);
    assert!(r.out.contains("FAIL  module:vfio_pci"), "{}", r.out);
    h.fs().modprobe("vfio-pci").unwrap();
    let r = run(&h, &["doctor", "--json"]);
    assert_eq!(r.code, 0, "{}", r.out);
    let v: serde_json::Value = serde_json::from_str(&r.out).unwrap();
    assert!(v.as_array().unwrap().iter().all(|c| c["status"] != "fail"));
}

#[test]
fn sriov_mdev_persist_snapshot() {
    let h = host();
    let r = run(&h, &["sriov", "02:00.0", "--numvfs", "2"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(r.out.starts_with("0000:02:00.0: 2 of 4 VFs enabled"), "{}", r.out);
    assert!(r.out.contains("0000:02:10.1"));
    let r = run(&h, &["sriov", "02:00.0", "--numvfs", "9"]);
    assert!(r.err.contains("at most 4"), "{}", r.err);
    let r = run(
        &h,
        &[
            "mdev",
            "create",
            "00:02.0",
            "i915-GVTg_V5_4",
            "--uuid",
            "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.err);
    let r = run(&h, &["mdev", "list"]);
    assert!(
        r.out.contains("available 1")
            && r.out.contains("instance 83b8f4f2-509f-382f-3c1e-e6bfe0fa1001"),
        "{}",
        r.out
    );
    assert_eq!(run(&h, &["mdev", "remove", "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001"]).code, 0);
    assert!(run(&h, &["persist"]).err.contains("bind them first"));
    run(&h, &["bind", "00:04.0"]);
    let r = run(&h, &["persist"]);
    assert!(
        r.out.contains("options vfio-pci ids=1234:11e8")
            && r.out.contains("softdep edu pre: vfio-pci"),
        "{}",
        r.out
    );
    assert!(r.out.contains("update-initramfs -u -k all"));
    assert!(!h.fs().exists(Path::new("/etc/modprobe.d/vfio.conf")));
    run(&h, &["persist", "--write"]);
    assert!(h.fs().exists(Path::new("/etc/modprobe.d/vfio.conf")));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snap");
    let r = run(&h, &["snapshot", dir.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.err);
    let back: Arc<dyn HostFs> = Arc::new(vfio_core::hostfs::RealFs::new(&dir));
    assert_eq!(run_on(back, &["list"]).out, run(&h, &["list"]).out);
}

#[test]
fn mdev_of_a_virtual_parent_by_its_name() {
    let h = host().with_sys(|s| s.mdev_parents.push(SimMdevParent::mtty()));
    let r = run(&h, &["mdev", "list"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(r.out.contains("0000:00:02.0  i915-GVTg_V5_4  GVTg_V5_4  available 2"), "{}", r.out);
    assert!(r.out.contains("mtty  mtty-1  Single port serial  available 24"), "{}", r.out);
    assert!(r.out.contains("mtty  mtty-2  Dual port serial  available 12"), "{}", r.out);
    let u = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1002";
    let r = run(&h, &["mdev", "create", "mtty", "mtty-2", "--uuid", u]);
    assert_eq!((r.code, r.out.trim()), (0, u), "{}", r.err);
    let r = run(&h, &["mdev", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.out).unwrap();
    let i = &v["instances"][0];
    assert_eq!((i["uuid"].as_str(), i["parent"].as_str()), (Some(u), Some("mtty")), "{v}");
    assert_eq!(i["type_id"].as_str(), Some("mtty-2"), "{v}");
    let t = v["types"].as_array().unwrap().iter().find(|t| t["id"] == "mtty-2").unwrap();
    assert_eq!((t["parent"].as_str(), t["available"].as_u64()), (Some("mtty"), Some(11)), "{t}");
    // The instance's group (its own, the lowest free number) is listed without members:
    // they are not PCI functions.
    let g = run(&h, &["groups"]);
    assert!(g.code == 0 && g.out.contains("group 2: ready for VFIO\n"), "{}", g.out);
    assert!(run(&h, &["mdev", "list"]).out.contains(&format!("instance {u} (IOMMU group 2)")));
    let live = run(&h, &["mdev", "list"]).out;
    assert!(live.contains(&format!("    instance {u}")), "{live}");
    // A snapshot keeps the parents, PCI or not, their types and the instance.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snap");
    assert_eq!(run(&h, &["snapshot", dir.to_str().unwrap()]).code, 0);
    let back: Arc<dyn HostFs> = Arc::new(vfio_core::hostfs::RealFs::new(&dir));
    assert_eq!(run_on(back, &["mdev", "list"]).out, live);
    assert_eq!(run(&h, &["mdev", "remove", u]).code, 0);
    // Errors are one line: an unknown parent names the parents, a bad name says why.
    let r = run(&h, &["mdev", "create", "nosuch", "mtty-1"]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.err.trim(),
        "vfiotool: mdev parent nosuch not found; the mdev parents are 0000:00:02.0, mtty \
         (vfiotool mdev list)"
    );
    let r = run(&h, &["mdev", "create", "../mtty", "mtty-1"]);
    assert!(
        r.err.contains("invalid mdev parent \"../mtty\": not a plain device name"),
        "{}",
        r.err
    );
    let r = run(&h, &["mdev", "create", "mtty", "../../remove"]);
    assert!(r.err.contains("types offered: mtty-1, mtty-2"), "{}", r.err);
    for r in [r, run(&h, &["mdev", "create", "mtty", "mtty-1", "--uuid", "x"])] {
        assert_eq!((r.code, r.err.lines().count()), (1, 1), "{}", r.err);
    }
    assert!(h.state().sys.mdevs.is_empty());
}

#[test]
fn sriov_keeps_vfs_in_use_unless_forced_and_then_drops_their_journal_entries() {
    let h = host();
    assert_eq!(run(&h, &["sriov", "02:00.0", "--numvfs", "2"]).code, 0);
    assert_eq!(run(&h, &["bind", "0000:02:10.1"]).code, 0);
    let r = run(&h, &["sriov", "02:00.0", "--numvfs", "0"]);
    assert_eq!(r.code, 1, "{}", r.out);
    assert_eq!(
        r.err,
        "vfiotool: disabling the VFs of 0000:02:00.0 would remove VFs in use: 0000:02:10.1 \
         (bound to vfio-pci); stop the VMs using them and unbind them first (vfiotool unbind \
         0000:02:10.1), or pass --force to remove them anyway\n"
    );
    assert_eq!(h.state().sys.numvfs[&a("0000:02:00.0")], 2);
    let r = run(&h, &["sriov", "02:00.0", "--numvfs", "0", "--force"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(r.out.contains("removed 0000:02:10.1 (bound to vfio-pci)"), "{}", r.out);
    assert!(
        r.out.contains(
            "dropped the bind journal entry of 0000:02:10.1: the VF no longer exists (it was on \
             no driver before vfiotool bound it)"
        ),
        "{}",
        r.out
    );
    assert!(!h.fs().exists(Path::new("/run/vfiotool/journal.json")));
    let r = run(&h, &["restore", "--all"]);
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
}

#[test]
fn snapshot_writes_a_new_directory_and_lists_what_it_kept_redacted_and_left_out() {
    use std::os::unix::fs::symlink;
    let h = host();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snap");
    let r = run(&h, &["snapshot", dir.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.err);
    let line = |path: &str| {
        r.out
            .lines()
            .find(|l| l.split_whitespace().any(|w| w == path))
            .unwrap_or_else(|| panic!("{path} not listed:\n{}", r.out))
            .to_string()
    };
    assert!(line("/etc/passwd").starts_with("left out  /etc/passwd  (user names"), "{}", r.out);
    assert!(line("/proc/net/route").starts_with("redacted  /proc/net/route  (gateways zeroed"));
    assert!(line("/proc/sys/kernel/osrelease").starts_with("kept      "));
    assert!(r.out.contains("--keep-private keeps it"), "{}", r.out);
    assert!(r.out.contains(&format!("read it back with: vfiotool --sysfs-root {}", dir.display())));
    assert!(!dir.join("etc/passwd").exists());
    // Every file written is listed, and nothing else was written.
    let listed = r.out.lines().filter(|l| l.starts_with("kept") || l.starts_with("redacted"));
    let summary = r.out.lines().find(|l| l.starts_with("captured ")).unwrap();
    assert!(summary.starts_with(&format!("captured {} files", listed.count())), "{summary}");

    // An existing directory is refused in one line, and what was planted in it is
    // left alone.
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"keep me\n").unwrap();
    let planted = tmp.path().join("planted");
    std::fs::create_dir_all(planted.join("proc")).unwrap();
    symlink(&victim, planted.join("proc/cmdline")).unwrap();
    let r = run(&h, &["snapshot", planted.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.err,
        format!("vfiotool: {} exists; snapshot writes a new directory\n", planted.display())
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me\n");

    // --keep-private: every file verbatim.
    let dir = tmp.path().join("verbatim");
    let r = run(&h, &["snapshot", "--keep-private", dir.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.err);
    let changed = |l: &&str| l.starts_with("redacted") || l.starts_with("left out");
    assert!(!r.out.lines().any(|l| changed(&l)), "{}", r.out);
    assert_eq!(
        std::fs::read(dir.join("etc/passwd")).unwrap(),
        h.fs().read(Path::new("/etc/passwd")).unwrap()
    );
}
