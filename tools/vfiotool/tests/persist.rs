//! `vfiotool persist` as an operator runs it, on a simulated host whose root filesystem
//! is on an NVMe: the guards, the marked blocks in files shared with the user, backups,
//! `--per-device` and `--numvfs` rules, `--list` and `--remove`, dry runs, and once on a
//! real directory for `/etc`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use vfio_core::hostfs::HostFs;
use vfio_core::mock::sysfs::{SimBlock, SimNet};
use vfio_core::mock::{DeviceSpec, MockHost, SplitFs, SysState};

mod common;
use common::{a, i915_gvt, igb_sriov_nic, run_fs, run_mock as run, Run};

const MODPROBE: &str = "/etc/modprobe.d/vfio.conf";
const MODULES: &str = "/etc/modules-load.d/vfio.conf";
const RULES: &str = "/etc/udev/rules.d/61-vfiotool.rules";
const BEGIN: &str = "# BEGIN vfiotool persist";
const END: &str = "# END vfiotool persist";

/// The root NVMe, a second NVMe of the same model (free for a guest), the boot display,
/// a root port, a NIC whose only default route is IPv6, an SR-IOV NIC, a GPU with its
/// audio function, and two edu devices.
const ROOT_NVME: &str = "0000:04:00.0";
const GUEST_NVME: &str = "0000:08:00.0";
const BOOT_VGA: &str = "0000:00:02.0";
const BRIDGE: &str = "0000:00:1c.0";
const V6_NIC: &str = "0000:06:00.0";
const SRIOV_NIC: &str = "0000:02:00.0";
const GPU: &str = "0000:05:00.0";
const GPU_AUDIO: &str = "0000:05:00.1";
const EDU: &str = "0000:00:04.0";

/// The user's own lines in the modprobe file, before vfiotool ever ran.
const USERS: &str = "# local settings\noptions kvm ignore_msrs=1\n\nblacklist floppy\n";

/// `/proc/net/ipv6_route` with a default route (`::/0`) through `eth1` only.
const IPV6_ROUTE: &str = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth1\n\
20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth1\n";

fn host() -> MockHost {
    let mut igd = i915_gvt(BOOT_VGA, 0);
    (igd.vendor, igd.device) = (0x8086, 0x3e92);
    let mut gpu = DeviceSpec::new(GPU).driver("nouveau").group(7);
    (gpu.vendor, gpu.device, gpu.class) = (0x10de, 0x1b80, 0x030000);
    let mut audio = DeviceSpec::new(GPU_AUDIO).driver("snd_hda_intel").group(7);
    (audio.vendor, audio.device, audio.class) = (0x10de, 0x10f0, 0x040300);
    let mut v6 = DeviceSpec::new(V6_NIC).driver("e1000e").group(6);
    (v6.vendor, v6.device, v6.class) = (0x8086, 0x10d3, 0x020000);
    MockHost::new([
        igd,
        DeviceSpec::edu(EDU).driver("edu").group(1),
        DeviceSpec::edu("0000:00:05.0").driver("edu").group(2),
        DeviceSpec::bridge(BRIDGE).driver("pcieport").group(9),
        igb_sriov_nic(SRIOV_NIC, 3),
        DeviceSpec::nvme(ROOT_NVME).driver("nvme").group(4),
        gpu,
        audio,
        v6,
        DeviceSpec::nvme(GUEST_NVME).driver("nvme").group(8),
    ])
    .with_sys(|s| {
        *s = SysState::intel_ready();
        s.boot_vga = Some(a(BOOT_VGA));
        s.blocks.push(SimBlock { name: "nvme0n1".into(), device: a(ROOT_NVME) });
        s.blocks.push(SimBlock { name: "nvme1n1".into(), device: a(GUEST_NVME) });
        s.mounts.push("/dev/nvme0n1p2 / ext4 rw,relatime 0 0".into());
        s.mounts.push("/dev/nvme0n1p1 /boot/efi vfat rw 0 0".into());
        s.nets.push(SimNet {
            name: "eth1".into(),
            device: a(V6_NIC),
            default_route: false,
            ipv4: vec![],
        });
        s.files.insert("/proc/net/ipv6_route".into(), IPV6_ROUTE.as_bytes().to_vec());
    })
}

/// A host whose modprobe file already holds the user's lines (mode 0600).
fn host_with_users_file() -> MockHost {
    host().with_sys(|s| {
        s.files.insert(MODPROBE.into(), USERS.as_bytes().to_vec());
        s.file_modes.insert(MODPROBE.into(), 0o600);
    })
}

fn file(h: &MockHost, p: &str) -> Option<String> {
    h.state().sys.files.get(Path::new(p)).map(|b| String::from_utf8(b.clone()).unwrap())
}

fn mode(h: &MockHost, p: &str) -> Option<u32> {
    h.state().sys.file_modes.get(Path::new(p)).copied()
}

fn writes(h: &MockHost) -> usize {
    h.state().sys.writes.len()
}

/// Everything a run could change: the files outside the run directory (which holds
/// only the host lock), their modes, every write, the bindings and VF counts.
fn state(h: &MockHost) -> String {
    let st = h.state();
    let devices: Vec<_> =
        st.devices.values().map(|d| (d.driver.clone(), d.driver_override.clone())).collect();
    let outside_run = |p: &&std::path::PathBuf| !p.starts_with("/run");
    let files: Vec<_> = st.sys.files.iter().filter(|(p, _)| outside_run(p)).collect();
    let dirs: Vec<_> = st.sys.dirs.iter().filter(outside_run).collect();
    format!(
        "{devices:?}\n{files:?}\n{:?}\n{dirs:?}\n{:?}\n{:?}\n{:?}",
        st.sys.file_modes, st.sys.writes, st.sys.numvfs, st.sys.modules
    )
}

fn ok(h: &MockHost, args: &[&str]) -> Run {
    let r = run(h, args);
    assert_eq!(r.code, 0, "{args:?}: {}{}", r.out, r.err);
    r
}

/// A failed run: exit 1, one line on stderr, nothing changed on the host.
fn refused(h: &MockHost, args: &[&str]) -> String {
    let before = state(h);
    let r = run(h, args);
    assert_eq!(r.code, 1, "{args:?} was not refused: {}", r.out);
    assert_eq!(r.err.lines().count(), 1, "{args:?}: {}", r.err);
    assert!(r.err.starts_with("vfiotool: "), "{}", r.err);
    assert_eq!(state(h), before, "{args:?} changed the host");
    r.err
}

#[test]
fn devices_the_host_uses_are_refused_without_force_and_accepted_with_it() {
    for (dev, says) in [
        (ROOT_NVME, "mounted filesystems (/dev/nvme0n1p2 on /"),
        (BOOT_VGA, "boot display"),
        (BRIDGE, "bridge"),
        (V6_NIC, "network interface eth1 carries the default route"),
    ] {
        let h = host();
        for args in [
            vec!["persist", dev],
            vec!["persist", dev, "--write"],
            vec!["persist", dev, "--per-device", "--write"],
        ] {
            let e = refused(&h, &args);
            assert!(e.contains(&format!("{dev} is in use by the host")), "{args:?}: {e}");
            assert!(e.contains(says) && e.contains("--force"), "{args:?}: {e}");
        }
        assert!(file(&h, MODPROBE).is_none() && file(&h, RULES).is_none());
        let r = ok(&h, &["persist", dev, "--force", "--write"]);
        assert!(
            r.out.contains(&format!("warning: {dev} is persisted although the host uses it")),
            "{}",
            r.out
        );
        let conf = file(&h, MODPROBE).unwrap();
        assert!(conf.contains(&format!("# device {dev} ")), "{conf}");
    }
}

#[test]
fn ids_that_would_also_take_a_disk_the_host_uses_are_refused() {
    let h = host();
    // The guest's NVMe is free, but its id is the root NVMe's too.
    let e = refused(&h, &["persist", GUEST_NVME, "--write"]);
    assert!(e.contains(&format!("{ROOT_NVME} is in use by the host")), "{e}");
    assert!(e.contains("ids=1b36:0010 would also claim it") && e.contains("--per-device"), "{e}");
    // Per device it claims the guest's NVMe alone.
    let r = ok(&h, &["persist", GUEST_NVME, "--per-device", "--write"]);
    assert!(!r.out.contains("also claims"), "{}", r.out);
    assert!(file(&h, MODPROBE).is_none());
    assert!(file(&h, RULES).unwrap().contains(&format!("KERNEL==\"{GUEST_NVME}\"")));
    // Forced: written, with the warning.
    let h = host();
    let r = ok(&h, &["persist", GUEST_NVME, "--force", "--write"]);
    assert!(r.out.contains(&format!("warning: {ROOT_NVME} is claimed too")), "{}", r.out);
    assert!(file(&h, MODPROBE).unwrap().contains("ids=1b36:0010"));
    // A device the host does not need that shares an id is only named.
    let h = host();
    let r = ok(&h, &["persist", EDU]);
    assert!(r.out.contains("warning: ids= also claims 0000:00:05.0"), "{}", r.out);
}

#[test]
fn write_keeps_the_users_lines_backs_the_file_up_and_is_idempotent() {
    let h = host_with_users_file();
    let r = ok(&h, &["persist", GPU, GPU_AUDIO, "--write"]);
    assert!(
        r.out.contains(&format!("saved the previous {MODPROBE} as {MODPROBE}.vfiotool-bak")),
        "{}",
        r.out
    );
    let conf = file(&h, MODPROBE).unwrap();
    let block = "# device 0000:05:00.0 10de:1b80 nouveau display\n\
                 # device 0000:05:00.1 10de:10f0 snd_hda_intel\n\
                 options vfio-pci ids=10de:10f0,10de:1b80 disable_vga=1\n\
                 softdep nouveau pre: vfio-pci\n\
                 softdep snd_hda_intel pre: vfio-pci\n";
    assert!(conf.starts_with(&format!("{USERS}{BEGIN}\n")), "{conf}");
    assert!(conf.ends_with(&format!("{block}{END}\n")), "{conf}");
    // The backup holds the file as it was, with its mode; the new file keeps the mode.
    assert_eq!(file(&h, &format!("{MODPROBE}.vfiotool-bak")).unwrap(), USERS);
    assert_eq!(mode(&h, &format!("{MODPROBE}.vfiotool-bak")), Some(0o600));
    assert_eq!(mode(&h, MODPROBE), Some(0o600));
    assert_eq!(mode(&h, MODULES), Some(0o644));
    assert!(file(&h, MODULES).unwrap().contains("vfio_pci\n"));
    // Again: the same bytes, nothing written at all.
    let n = writes(&h);
    let r = ok(&h, &["persist", GPU, GPU_AUDIO, "--write"]);
    assert!(r.out.contains("nothing to change"), "{}", r.out);
    assert_eq!(writes(&h), n);
    assert_eq!(file(&h, MODPROBE).unwrap(), conf);
    // Lines the user adds around the block later stay too.
    let edited = format!("{conf}options kvm_intel nested=1\n");
    h.fs().replace_file(Path::new(MODPROBE), edited.as_bytes(), 0o600).unwrap();
    ok(&h, &["persist", EDU, "--write"]);
    let conf = file(&h, MODPROBE).unwrap();
    assert!(conf.starts_with(&format!("{USERS}{BEGIN}\n")), "{conf}");
    assert!(conf.ends_with(&format!("{END}\noptions kvm_intel nested=1\n")), "{conf}");
    assert!(conf.contains("ids=10de:10f0,10de:1b80,1234:11e8 "), "{conf}");
    assert_eq!(file(&h, &format!("{MODPROBE}.vfiotool-bak")).unwrap(), edited);
    // A line of the user's that also sets vfio-pci options is pointed out.
    let h = host().with_sys(|s| {
        let text = b"# no driver_override here\noptions vfio-pci ids=1234:11e8\n";
        s.files.insert(MODPROBE.into(), text.to_vec());
    });
    let r = ok(&h, &["persist", GPU]);
    assert_eq!(r.out.matches("outside vfiotool's block").count(), 1, "{}", r.out);
    assert!(
        r.out.contains("outside vfiotool's block: 'options vfio-pci ids=1234:11e8'"),
        "{}",
        r.out
    );
}

#[test]
fn without_write_the_files_are_printed_and_nothing_is_written() {
    let h = host_with_users_file();
    ok(&h, &["bind", GPU]);
    let before = state(&h);
    let r = ok(&h, &["persist"]);
    assert_eq!(state(&h), before);
    assert!(
        r.out.contains(&format!("# {MODPROBE} (vfiotool's block changes; the other lines stay)")),
        "{}",
        r.out
    );
    assert!(r.out.contains("options kvm ignore_msrs=1\n"), "{}", r.out);
    assert!(
        r.out.contains(
            "options vfio-pci ids=10de:1b80 disable_vga=1\nsoftdep nouveau pre: vfio-pci\n"
        ),
        "{}",
        r.out
    );
    assert!(r.out.contains(&format!("# {MODULES} (new file)")), "{}", r.out);
    assert!(r.out.contains("update-initramfs -u -k all"));
}

#[test]
fn per_device_and_vf_count_rules() {
    let h = host();
    let r =
        ok(&h, &["persist", GPU, "--per-device", "--numvfs", &format!("{SRIOV_NIC}=3"), "--write"]);
    assert!(r.out.contains(&format!("wrote {RULES}")), "{}", r.out);
    assert!(
        r.out.contains(&format!("vfiotool sriov {SRIOV_NIC}  (should show 3 VFs enabled)")),
        "{}",
        r.out
    );
    let rules = file(&h, RULES).unwrap();
    let lines: Vec<&str> = rules.lines().filter(|l| l.starts_with("ACTION")).collect();
    assert_eq!(
        lines,
        vec![
            "ACTION==\"add\", SUBSYSTEM==\"pci\", KERNEL==\"0000:05:00.0\", ATTR{driver_override}=\"vfio-pci\", RUN+=\"/bin/sh -c 'echo $kernel > /sys/bus/pci/drivers_probe'\"",
            "ACTION==\"add|bind\", SUBSYSTEM==\"pci\", KERNEL==\"0000:02:00.0\", ATTR{sriov_numvfs}=\"3\"",
        ]
    );
    assert!(rules.starts_with(&format!("{BEGIN}\n")) && rules.ends_with(&format!("{END}\n")));
    // Per device: no ids= (nothing else with the GPU's id is taken), the modules load.
    assert!(file(&h, MODPROBE).is_none());
    assert!(file(&h, MODULES).unwrap().contains("vfio_pci"));
    // Switching the device to ids moves it out of the rules.
    ok(&h, &["persist", GPU, "--write"]);
    assert!(!file(&h, RULES).unwrap().contains(GPU));
    assert!(file(&h, MODPROBE).unwrap().contains("ids=10de:1b80"));
    // A new count replaces the old one.
    ok(&h, &["persist", "--numvfs", &format!("{SRIOV_NIC}=4"), "--write"]);
    let rules = file(&h, RULES).unwrap();
    assert!(rules.contains("ATTR{sriov_numvfs}=\"4\"") && !rules.contains("\"3\""), "{rules}");
    // Counts are checked against sriov_totalvfs, and the syntax is explained.
    for (arg, says) in [
        (format!("{SRIOV_NIC}=5"), "at most 4 VFs (sriov_totalvfs)"),
        (format!("{SRIOV_NIC}=0"), "persist --remove 0000:02:00.0"),
        (format!("{EDU}=2"), "SR-IOV on 0000:00:04.0 is not supported"),
        (SRIOV_NIC.to_string(), "write PF=N"),
        (format!("{SRIOV_NIC}=many"), "is not a count"),
        ("eth0=2".to_string(), "is not a PCI address"),
    ] {
        let e = refused(&h, &["persist", "--numvfs", &arg, "--write"]);
        assert!(e.contains(says), "{arg}: {e}");
    }
}

#[test]
fn list_and_remove_round_trip() {
    let h = host_with_users_file();
    let r = ok(&h, &["persist", "--list"]);
    assert!(r.out.starts_with("nothing persisted by vfiotool"), "{}", r.out);
    ok(&h, &["persist", GPU, GPU_AUDIO, "--write"]);
    ok(&h, &["persist", GUEST_NVME, "--per-device", "--write"]);
    ok(&h, &["persist", "--numvfs", &format!("{SRIOV_NIC}=2"), "--write"]);
    let r = ok(&h, &["persist", "--list"]);
    let rows: Vec<Vec<&str>> =
        r.out.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0][..4], [GPU, "by", "id", "ids=10de:1b80,"], "{}", r.out);
    assert!(
        r.out.contains("0000:05:00.0  by id         ids=10de:1b80, softdep nouveau, disable_vga=1"),
        "{}",
        r.out
    );
    assert!(
        r.out.contains("0000:05:00.1  by id         ids=10de:10f0, softdep snd_hda_intel"),
        "{}",
        r.out
    );
    assert!(
        r.out.contains(&format!("0000:08:00.0  per device    driver_override=vfio-pci  ({RULES})")),
        "{}",
        r.out
    );
    assert!(
        r.out.contains(&format!("0000:02:00.0  VF count      sriov_numvfs=2  ({RULES})")),
        "{}",
        r.out
    );
    // --list --dry-run is the same listing.
    assert_eq!(ok(&h, &["persist", "--list", "--dry-run"]).out, r.out);

    // One device out: its rule goes, the VF count stays.
    let r = ok(&h, &["persist", "--remove", "08:00.0"]);
    assert!(r.out.contains("removed 0000:08:00.0 from vfiotool's blocks"), "{}", r.out);
    let rules = file(&h, RULES).unwrap();
    assert!(!rules.contains(GUEST_NVME) && rules.contains("sriov_numvfs"), "{rules}");
    // The GPU's audio function out: its id and softdep go, the GPU's stay.
    ok(&h, &["persist", "--remove", GPU_AUDIO]);
    let conf = file(&h, MODPROBE).unwrap();
    assert!(
        conf.contains("ids=10de:1b80 disable_vga=1\nsoftdep nouveau pre: vfio-pci\n# END"),
        "{conf}"
    );
    assert!(!conf.contains("snd_hda_intel"), "{conf}");
    // Something never persisted: a one-line error naming --list.
    let e = refused(&h, &["persist", "--remove", EDU]);
    assert!(
        e.contains("0000:00:04.0 in what vfiotool persisted not found") && e.contains("--list"),
        "{e}"
    );
    // Everything: the user's file is back byte for byte, vfiotool's own files are gone.
    let r = ok(&h, &["persist", "--remove"]);
    assert!(
        r.out.contains(&format!("deleted {RULES} (it held only vfiotool's block)")),
        "{}",
        r.out
    );
    assert_eq!(file(&h, MODPROBE).unwrap(), USERS);
    assert_eq!(mode(&h, MODPROBE), Some(0o600));
    assert!(file(&h, RULES).is_none() && file(&h, MODULES).is_none());
    assert!(ok(&h, &["persist", "--list"]).out.starts_with("nothing persisted"));
    assert_eq!(
        ok(&h, &["persist", "--remove"]).out.trim(),
        "nothing to remove: vfiotool persisted nothing"
    );
}

/// The printed `echo ... > PATH` and `rm PATH` steps of a dry run.
fn steps(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.starts_with("  echo ") || l.starts_with("  rm "))
        .map(|l| l.rsplit([' ']).next().unwrap().to_string())
        .collect()
}

#[test]
fn dry_runs_change_nothing_show_a_diff_and_match_the_real_run() {
    let h = host_with_users_file();
    let before = state(&h);
    let r = ok(&h, &["persist", GPU, "--write", "--dry-run"]);
    assert_eq!(state(&h), before, "the dry run changed the host:\n{}", r.out);
    // A diff per file: the new modules file, and the block added after the user's lines.
    assert!(r.out.contains(&format!("--- /dev/null\n+++ {MODULES}\n")), "{}", r.out);
    assert!(r.out.contains(&format!("--- {MODPROBE}\n+++ {MODPROBE}\n")), "{}", r.out);
    assert!(
        r.out.contains(&format!(" blacklist floppy\n+{BEGIN}\n+# vfio-pci claims")),
        "{}",
        r.out
    );
    assert!(r.out.contains("\n+# device 0000:05:00.0 10de:1b80 nouveau display\n"), "{}", r.out);
    assert!(!r.out.contains("-options kvm"), "{}", r.out);
    let planned = steps(&r.out);
    assert_eq!(
        planned,
        vec![MODULES.to_string(), format!("{MODPROBE}.vfiotool-bak"), MODPROBE.to_string()]
    );
    // The real run writes exactly those files, in that order.
    let n = writes(&h);
    ok(&h, &["persist", GPU, "--write"]);
    let wrote: Vec<String> =
        h.state().sys.writes[n..].iter().map(|p| p.display().to_string()).collect();
    assert_eq!(wrote, planned);
    // Nothing left to do: the dry run says so.
    let r = ok(&h, &["persist", GPU, "--write", "--dry-run"]);
    assert!(r.out.contains("nothing to change"), "{}", r.out);
    // --remove --dry-run: the block's lines as removals, the modules file deleted.
    let before = state(&h);
    let r = ok(&h, &["persist", "--remove", "--dry-run"]);
    assert_eq!(state(&h), before, "the dry run changed the host:\n{}", r.out);
    assert!(r.out.contains("would remove 0000:05:00.0"), "{}", r.out);
    assert!(r.out.contains(&format!("--- {MODULES}\n+++ /dev/null\n")), "{}", r.out);
    assert!(
        r.out.contains(&format!("-{BEGIN}\n"))
            && r.out.contains("-softdep nouveau pre: vfio-pci\n"),
        "{}",
        r.out
    );
    assert!(r.out.contains(&format!("  rm {MODULES}")), "{}", r.out);
    // Refusals are the same in a dry run.
    let e = refused(&h, &["persist", ROOT_NVME, "--write", "--dry-run"]);
    assert!(e.contains("--force"), "{e}");
}

#[test]
fn bad_input_is_one_line_saying_what_to_do() {
    let h = host();
    for (args, says) in [
        (vec!["persist", "--list", GPU], "--list"),
        (vec!["persist", "--list", "--write"], "takes no --write"),
        (vec!["persist", "--remove", "--write"], "--dry-run to preview"),
        (vec!["persist", "--remove", "--numvfs", "02:00.0=2"], "takes no --numvfs"),
        (vec!["persist", "--remove", "--force"], "takes no --force"),
        (vec!["persist", "not-an-address"], "expected DDDD:BB:DD.F"),
        (vec!["persist", "0000:09:00.0", "--write"], "PCI device 0000:09:00.0 not found"),
        (vec!["persist", "--remove", "zz"], "expected DDDD:BB:DD.F"),
        (vec!["persist", "--write"], "bind them first"),
    ] {
        let e = refused(&h, &args);
        assert!(e.contains(says), "{args:?}: {e}");
    }
    // Broken markers and lines of the user's inside the block: refused, with the fix.
    for (text, says) in [
        (
            format!("options kvm ignore_msrs=1\n{BEGIN}\noptions vfio-pci ids=1:2\n"),
            "line 2: a BEGIN marker with no END",
        ),
        (format!("{END}\n"), "line 1: an END marker with no BEGIN"),
        (format!("{BEGIN}\noptions kvm ignore_msrs=1\n{END}\n"), "move it outside the block"),
    ] {
        let h = host().with_sys(|s| {
            s.files.insert(MODPROBE.into(), text.as_bytes().to_vec());
        });
        for args in [vec!["persist", GPU, "--write"], vec!["persist", "--remove"]] {
            let e = refused(&h, &args);
            assert!(e.contains(says), "{text:?} {args:?}: {e}");
        }
        if says.contains("outside") {
            let r = ok(&h, &["persist", "--list"]);
            assert!(
                r.out
                    .contains("warning: /etc/modprobe.d/vfio.conf: a line inside vfiotool's block"),
                "{}",
                r.out
            );
        }
    }
    // A file that is not text.
    let h = host().with_sys(|s| {
        s.files.insert(MODPROBE.into(), vec![0xff, 0xfe, b'\n']);
    });
    let e = refused(&h, &["persist", GPU, "--write"]);
    assert!(e.contains("not UTF-8 text"), "{e}");
}

#[test]
fn on_a_real_etc_the_file_keeps_its_mode_and_the_users_bytes() {
    let h = host();
    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn HostFs> = Arc::new(SplitFs::with_real_files(&h, dir.path()).unwrap());
    let etc = dir.path().join("etc/modprobe.d");
    std::fs::create_dir_all(&etc).unwrap();
    let conf = etc.join("vfio.conf");
    std::fs::write(&conf, USERS).unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o640)).unwrap();

    let r = run_fs(fs.clone(), &["persist", GPU, "--write"]);
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(text.starts_with(&format!("{USERS}{BEGIN}\n")), "{text}");
    assert!(text.contains("options vfio-pci ids=10de:1b80 disable_vga=1\n"), "{text}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&conf), 0o640);
    let bak = etc.join("vfio.conf.vfiotool-bak");
    assert_eq!(std::fs::read_to_string(&bak).unwrap(), USERS);
    assert_eq!(mode(&bak), 0o640);
    let modules = dir.path().join("etc/modules-load.d/vfio.conf");
    assert_eq!(mode(&modules), 0o644);
    // No temporary file is left next to them.
    let mut names: Vec<String> = std::fs::read_dir(&etc)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["vfio.conf", "vfio.conf.vfiotool-bak"]);
    // The simulated sysfs was not written to.
    assert!(h.state().sys.writes.is_empty(), "{:?}", h.state().sys.writes);

    // Removing everything gives back the user's bytes, and deletes vfiotool's own file.
    let r = run_fs(fs, &["persist", "--remove"]);
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), USERS);
    assert_eq!(mode(&conf), 0o640);
    assert!(!modules.exists());
}
