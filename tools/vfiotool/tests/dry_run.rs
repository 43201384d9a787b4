//! `--dry-run` of every host-changing command, on a simulated host: the simulated state
//! is identical before and after, and the printed steps are the writes the real run
//! then makes.

use std::path::Path;

use vfio_core::hostfs::HostFs;
use vfio_core::mock::{DeviceSpec, MockHost, SysState};

mod common;
use common::{a, i915_gvt, igb_sriov_nic, run_mock as run};

const EDU: &str = "0000:00:04.0";
const NIC: &str = "0000:02:00.0";
const IGD: &str = "0000:00:02.0";
const UUID: &str = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";

fn host() -> MockHost {
    let nic = igb_sriov_nic(NIC, 3);
    let igd = i915_gvt(IGD, 0);
    let mut edu = DeviceSpec::edu(EDU).driver("edu").group(1);
    let mut rom = vec![0u8; 512];
    (rom[0], rom[1], rom[2]) = (0x55, 0xaa, 1);
    edu.rom = Some(rom);
    MockHost::new([igd, edu, nic]).with_sys(|s| *s = SysState::intel_ready())
}

/// Everything a command could change on the host through sysfs and the filesystem: the
/// bindings and the host-level state. (Opening a device through VFIO, as `info` and
/// `rom` do on a device on vfio-pci, changes its live config space the way the kernel
/// does; that is the kernel's doing, not a write of the tool's.)
fn state(h: &MockHost) -> String {
    let st = h.state();
    let devices: Vec<_> = st
        .devices
        .values()
        .map(|d| (d.spec.address, d.driver.clone(), d.driver_override.clone(), d.vfio_index))
        .collect();
    format!("{devices:?}\n{:?}", st.sys)
}

/// Runs `args` with `--dry-run`: exit 0, nothing changed; returns the printed steps
/// (lines starting with two spaces).
fn dry(h: &MockHost, args: &[&str]) -> Vec<String> {
    let before = state(h);
    let mut argv = args.to_vec();
    argv.push("--dry-run");
    let r = run(h, &argv);
    assert_eq!(r.code, 0, "{args:?}: {}{}", r.out, r.err);
    assert_eq!(state(h), before, "{args:?} changed the host:\n{}", r.out);
    assert!(!r.out.is_empty(), "{args:?} printed nothing");
    r.out.lines().filter(|l| l.starts_with("  ")).map(|l| l.trim().to_string()).collect()
}

/// Runs `args` for real and returns the paths it wrote, in order.
fn real(h: &MockHost, args: &[&str]) -> Vec<String> {
    let n0 = h.state().sys.writes.len();
    let r = run(h, args);
    assert_eq!(r.code, 0, "{args:?}: {}{}", r.out, r.err);
    h.state().sys.writes[n0..].iter().map(|p| p.display().to_string()).collect()
}

/// The target paths of `echo V > PATH` steps; a step marked as conditional ("# if ...")
/// writes only when its condition holds, which in these runs it does not.
fn targets(steps: &[String]) -> Vec<String> {
    steps
        .iter()
        .filter(|s| !s.contains("# if "))
        .filter_map(|s| s.rsplit_once(" > ").map(|(_, p)| p.to_string()))
        .collect()
}

#[test]
fn bind_unbind_and_restore_dry_runs_change_nothing_and_match_the_real_runs() {
    let h = host();
    let steps = dry(&h, &["bind", EDU]);
    assert!(steps.iter().any(|s| s.contains("driver_override")), "{steps:?}");
    let wrote = real(&h, &["bind", EDU]);
    // The real run journals first, then makes exactly the planned writes.
    assert_eq!(wrote[0], "/run/vfiotool/journal.json");
    assert_eq!(targets(&steps), wrote[1..].to_vec());

    let steps = dry(&h, &["unbind", EDU]);
    assert!(!steps.is_empty());
    let wrote = real(&h, &["unbind", EDU]);
    let wrote: Vec<String> = wrote.into_iter().filter(|p| !p.starts_with("/run/")).collect();
    assert_eq!(targets(&steps), wrote);
    assert_eq!(h.state().devices[&a(EDU)].driver.as_deref(), Some("edu"));

    // restore: from the journal left by a bind.
    real(&h, &["bind", EDU]);
    let steps = dry(&h, &["restore", "--all"]);
    assert!(steps.iter().any(|s| s.contains("drivers_probe")), "{steps:?}");
    let wrote = real(&h, &["restore", "--all"]);
    let wrote: Vec<String> = wrote.into_iter().filter(|p| !p.starts_with("/run/")).collect();
    assert_eq!(targets(&steps), wrote);
    assert_eq!(h.state().devices[&a(EDU)].driver.as_deref(), Some("edu"));
    // An unbind of a device on its own driver is refused in the dry run as for real.
    let r = run(&h, &["unbind", EDU, "--dry-run"]);
    assert_eq!(r.code, 1);
    assert!(r.err.contains("nothing to undo"), "{}", r.err);
}

#[test]
fn sriov_dry_run_changes_nothing() {
    let h = host();
    let steps = dry(&h, &["sriov", NIC, "--numvfs", "2"]);
    assert_eq!(steps, vec![format!("echo 2 > /sys/bus/pci/devices/{NIC}/sriov_numvfs")]);
    assert_eq!(targets(&steps), real(&h, &["sriov", NIC, "--numvfs", "2"]));
    // 2 -> 3 goes through 0, as the kernel requires.
    let steps = dry(&h, &["sriov", NIC, "--numvfs", "3"]);
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert!(steps[0].starts_with("echo 0 >"), "{steps:?}");
    // Bounds are still checked.
    let r = run(&h, &["sriov", NIC, "--numvfs", "9", "--dry-run"]);
    assert_eq!(r.code, 1);
    assert!(r.err.contains("at most 4"), "{}", r.err);
}

#[test]
fn sriov_and_bind_refuse_to_remove_vfs_in_use_even_in_a_dry_run() {
    let h = host();
    real(&h, &["sriov", NIC, "--numvfs", "2"]);
    real(&h, &["bind", "0000:02:10.1"]);
    let before = state(&h);
    for args in [
        &["sriov", NIC, "--numvfs", "0", "--dry-run"][..],
        &["sriov", NIC, "--numvfs", "3", "--dry-run"],
        &["bind", NIC, "--dry-run"],
    ] {
        let r = run(&h, args);
        assert_eq!(r.code, 1, "{args:?}: {}", r.out);
        assert_eq!(r.err.lines().count(), 1, "{}", r.err);
        assert!(
            r.err.contains("would remove VFs in use: 0000:02:10.1 (bound to vfio-pci)")
                && r.err.contains("vfiotool unbind 0000:02:10.1")
                && r.err.contains("--force"),
            "{args:?}: {}",
            r.err
        );
        assert_eq!(state(&h), before, "{args:?}");
    }
    // Forced: the dry run shows the writes, the VF it removes and the journal entry it
    // drops, and changes nothing.
    let r = run(&h, &["sriov", NIC, "--numvfs", "1", "--force", "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(state(&h), before);
    let steps: Vec<&str> = r.out.lines().filter(|l| l.starts_with("  ")).map(str::trim).collect();
    assert_eq!(
        steps,
        vec![
            format!("echo 0 > /sys/bus/pci/devices/{NIC}/sriov_numvfs"),
            format!("echo 1 > /sys/bus/pci/devices/{NIC}/sriov_numvfs"),
        ]
    );
    assert!(r.out.contains("would remove 0000:02:10.1 (bound to vfio-pci)"), "{}", r.out);
    assert!(r.out.contains("would drop the bind journal entry of 0000:02:10.1"), "{}", r.out);
    // bind --force of the PF: the plan names the VFs it removes.
    let r = run(&h, &["bind", NIC, "--force", "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(
        r.out.contains(&format!("warning: binding {NIC} sets its sriov_numvfs to 0: its 2 VFs disappear (0000:02:10.0, 0000:02:10.1 (bound to vfio-pci))")),
        "{}",
        r.out
    );
    assert_eq!(state(&h), before);
}

#[test]
fn mdev_create_and_remove_dry_runs_change_nothing() {
    let h = host();
    let create = ["mdev", "create", IGD, "i915-GVTg_V5_4", "--uuid", UUID];
    let steps = dry(&h, &create);
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert!(steps[0].starts_with(&format!("echo {UUID} > ")), "{steps:?}");
    assert_eq!(targets(&steps), real(&h, &create));
    let steps = dry(&h, &["mdev", "remove", UUID]);
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert!(steps[0].starts_with("echo 1 > "), "{steps:?}");
    real(&h, &["mdev", "remove", UUID]);
    assert!(h.state().sys.mdevs.is_empty());
    // A type that does not exist is refused as for real.
    let r = run(&h, &["mdev", "create", IGD, "nope", "--dry-run"]);
    assert_eq!(r.code, 1);
}

#[test]
fn persist_write_dry_run_changes_nothing() {
    let h = host();
    real(&h, &["bind", EDU]);
    let steps = dry(&h, &["persist", "--write"]);
    assert!(steps.iter().any(|s| s.contains("/etc/modprobe.d/")), "{steps:?}");
    let wrote = real(&h, &["persist", "--write"]);
    assert_eq!(targets(&steps), wrote);
}

#[test]
fn rom_dump_dry_run_touches_neither_device_nor_file() {
    let h = host();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("edu.rom");
    let o = out.to_str().unwrap();
    let steps = dry(&h, &["rom", "dump", EDU, "-o", o]);
    assert!(!steps.is_empty());
    assert!(!out.exists());
    assert!(h.state().sys.rom_enabled.is_empty());
    real(&h, &["rom", "dump", EDU, "-o", o]);
    assert_eq!(std::fs::read(&out).unwrap()[..2], [0x55, 0xaa]);
}

#[test]
fn guards_refuse_a_host_device_without_force_even_in_a_dry_run() {
    let h = host().with_sys(|s| s.boot_vga = Some(a(IGD)));
    let r = run(&h, &["bind", IGD, "--dry-run"]);
    assert_eq!(r.code, 1, "{}", r.out);
    assert!(r.err.contains("--force"), "{}", r.err);
    let before = state(&h);
    let r = run(&h, &["bind", IGD]);
    assert_eq!(r.code, 1);
    assert_eq!(state(&h), before);
    let steps = dry(&h, &["bind", IGD, "--force"]);
    assert!(!steps.is_empty());
    assert!(!h.fs().exists(Path::new("/run/vfiotool/journal.json")));
}

/// Commands that only look change nothing on the host; the only write any of them
/// makes is enabling the ROM BAR to read the ROM (`info -v`, `rom check`), and it is
/// disabled again. Nothing writes to a BAR (`resourceN`) or to config space.
#[test]
fn looking_commands_write_nothing_but_the_rom_switch() {
    let h = host();
    real(&h, &["bind", EDU]);
    let before = state(&h);
    let looking: &[&[&str]] = &[
        &["list"],
        &["list", "--json"],
        &["groups"],
        &["info", EDU],
        &["info", EDU, "-v"],
        &["info", EDU, "-vv", "--json"],
        &["info", NIC, "-vv"],
        &["doctor"],
        &["restore"],
        &["mdev", "list"],
        &["sriov", NIC],
        &["persist"],
        &["rom", "check", EDU, "--source", "sysfs"],
    ];
    for args in looking {
        let n0 = h.state().sys.writes.len();
        let r = run(&h, args);
        assert!(r.code == 0 || r.code == 2 || args[0] == "doctor", "{args:?}: {}", r.err);
        let wrote: Vec<String> =
            h.state().sys.writes[n0..].iter().map(|p| p.display().to_string()).collect();
        for w in &wrote {
            assert!(w.ends_with("/rom"), "{args:?} wrote {w}");
        }
        assert!(h.state().sys.rom_enabled.is_empty(), "{args:?} left the ROM BAR on");
        // Apart from the switch log, the host is as it was.
        let mut now = state(&h);
        let mut was = before.clone();
        for s in [&mut now, &mut was] {
            if let Some(i) = s.find("writes: [") {
                s.truncate(i);
            }
        }
        assert_eq!(now, was, "{args:?} changed the host");
    }
}
