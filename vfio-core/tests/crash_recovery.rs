//! Crash recovery of every host flow: the process is killed before each change it makes
//! in turn (`CrashFs`), then `restore --all` runs as the next invocation would. Every
//! device must be back on its original driver with its original `driver_override` and
//! VF count, every group node back with its owner, and the journal must parse (and be
//! gone once everything is restored).
//!
//! The journal and the lock take the real filesystem path (`SplitFs` over a temporary
//! directory: temporary file, fsync, rename, flock), so a torn journal would show here;
//! sysfs is the simulated one, which reacts to writes as Linux does.

use std::path::Path;
use std::sync::Arc;

use vfio_core::host::bind::{bind, BindRequest};
use vfio_core::host::journal::{read_journal, JOURNAL};
use vfio_core::host::restore::{restore, unbind};
use vfio_core::hostfs::HostFs;
use vfio_core::kernel::Errno;
use vfio_core::mock::{CrashFs, DeviceSpec, Fault, FaultOp, MockHost, SplitFs, SysState};
use vfio_core::PciAddress;

const EDU: &str = "0000:00:04.0";
const NIC: &str = "0000:02:00.0";
const GPU: &str = "0000:05:00.0";
const AUDIO: &str = "0000:05:00.1";

fn a(s: &str) -> PciAddress {
    PciAddress::parse(s).unwrap()
}

/// A host with an SR-IOV NIC (2 VFs on, an override set), an edu device, and a GPU
/// sharing its group with its audio function behind a bridge.
fn host() -> MockHost {
    let nic = DeviceSpec::igb(NIC).driver("igb").group(3);
    let mut gpu = DeviceSpec::new(GPU).driver("nouveau").group(7);
    gpu.class = 0x030000;
    let mut audio = DeviceSpec::new(AUDIO).driver("snd_hda_intel").group(7);
    audio.class = 0x040300;
    let h = MockHost::new([
        DeviceSpec::edu(EDU).driver("edu").group(1),
        nic,
        DeviceSpec::bridge("0000:00:1c.0").driver("pcieport").group(7),
        gpu,
        audio,
    ])
    .with_sys(|s| {
        *s = SysState::intel_ready();
        s.available_modules.insert("pci_stub".into());
    });
    h.fs().write(Path::new(&format!("/sys/bus/pci/devices/{NIC}/sriov_numvfs")), b"2").unwrap();
    h.state().devices.get_mut(&a(NIC)).unwrap().driver_override = Some("igb".into());
    h
}

/// Drivers, overrides, VF counts (VFs included) and node owners.
type State = (Vec<(PciAddress, Option<String>, Option<String>, u16)>, Vec<(String, (u32, u32))>);

fn state(h: &MockHost) -> State {
    let st = h.state();
    let devs = st
        .devices
        .iter()
        .map(|(a, d)| {
            (
                *a,
                d.driver.clone(),
                d.driver_override.clone(),
                st.sys.numvfs.get(a).copied().unwrap_or(0),
            )
        })
        .collect();
    let owners = st
        .sys
        .owners
        .iter()
        .filter(|(p, o)| p.starts_with("/dev/vfio") && **o != (0, 0))
        .map(|(p, o)| (p.display().to_string(), *o))
        .collect();
    (devs, owners)
}

/// One host flow: a setup run to completion, then the flow that gets killed.
struct Flow {
    name: &'static str,
    setup: fn(&dyn HostFs, &MockHost),
    run: fn(&dyn HostFs, &MockHost),
}

fn bind_req(addr: &str) -> BindRequest {
    BindRequest { user: Some("qemu".into()), ..BindRequest::vfio(addr) }
}

fn flows() -> Vec<Flow> {
    vec![
        Flow {
            name: "bind (VFs off, override, --user)",
            setup: |_, _| {},
            run: |fs, _| drop(bind(fs, &bind_req(NIC))),
        },
        Flow {
            name: "bind again to another driver",
            setup: |fs, _| drop(bind(fs, &BindRequest::vfio(EDU)).unwrap()),
            run: |fs, h| {
                bind(fs, &BindRequest { driver: "pci-stub".into(), ..BindRequest::vfio(EDU) })
                    .map(|_| {
                        assert_eq!(h.state().devices[&a(EDU)].driver.as_deref(), Some("pci-stub"))
                    })
                    .ok();
            },
        },
        Flow {
            name: "bind that fails and rolls back",
            setup: |_, h| {
                h.inject(
                    Fault::fs(FaultOp::Write).path("/sys/bus/pci/drivers_probe").errno(Errno::EIO),
                )
            },
            run: |fs, _| drop(bind(fs, &bind_req(NIC))),
        },
        Flow {
            name: "group bind",
            setup: |_, _| {},
            run: |fs, _| drop(bind(fs, &BindRequest { group: true, ..bind_req(AUDIO) })),
        },
        Flow {
            name: "unbind",
            setup: |fs, _| drop(bind(fs, &bind_req(NIC)).unwrap()),
            run: |fs, _| drop(unbind(fs, a(NIC))),
        },
        Flow {
            name: "restore one",
            setup: |fs, _| {
                bind(fs, &bind_req(NIC)).unwrap();
                bind(fs, &bind_req(EDU)).unwrap();
            },
            run: |fs, _| drop(restore(fs, Some(a(NIC)))),
        },
        Flow {
            name: "restore all",
            setup: |fs, _| {
                bind(fs, &bind_req(NIC)).unwrap();
                bind(fs, &BindRequest { group: true, ..bind_req(GPU) }).unwrap();
            },
            run: |fs, _| drop(restore(fs, None)),
        },
    ]
}

/// A fresh host with its journal on a real filesystem, the flow's setup done.
fn prepared(flow: &Flow) -> (MockHost, tempfile::TempDir, Arc<dyn HostFs>, State) {
    let h = host();
    let before = state(&h);
    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn HostFs> = Arc::new(SplitFs::with_real_files(&h, dir.path()).unwrap());
    (flow.setup)(&*fs, &h);
    (h, dir, fs, before)
}

#[test]
fn a_kill_before_any_change_of_any_flow_is_recovered_by_restore_all() {
    let mut report = vec![];
    for flow in flows() {
        let (h, _d, fs, _) = prepared(&flow);
        let probe = CrashFs::new(fs.clone(), 0);
        (flow.run)(&probe, &h);
        let changes = probe.changes();
        assert!(changes >= 2, "{}: {changes} changes", flow.name);
        for k in 1..=changes {
            let (h, dir, fs, before) = prepared(&flow);
            let dying = CrashFs::new(fs.clone(), k);
            (flow.run)(&dying, &h);
            assert!(dying.died(), "{} k={k}: the run did not reach change {k}", flow.name);
            // The journal on disk is whole: it parses (or is absent).
            let j = read_journal(&*fs).unwrap_or_else(|e| panic!("{} k={k}: {e}", flow.name));
            // The next invocation: restore --all.
            h.clear_faults();
            let r = restore(&*fs, None);
            assert!(r.is_ok(), "{} k={k}: restore failed: {r:?}; journal was {j:?}", flow.name);
            assert_eq!(state(&h), before, "{} k={k}: host not back; journal was {j:?}", flow.name);
            assert!(read_journal(&*fs).unwrap().is_empty(), "{} k={k}", flow.name);
            assert!(!dir.path().join(&JOURNAL[1..]).exists(), "{} k={k}", flow.name);
            // No temporary file is left in the run directory.
            let left: Vec<_> = std::fs::read_dir(dir.path().join("run/vfiotool"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n != "lock")
                .collect();
            assert!(left.is_empty(), "{} k={k}: {left:?}", flow.name);
        }
        report.push(format!("{}: {changes} kill points", flow.name));
    }
    println!("crash recovery: {}", report.join("; "));
}

/// The journal written by one process survives `SIGKILL` of that process at any
/// moment: the file is always the old or the new journal, never a torn one.
#[test]
fn the_journal_on_disk_is_never_torn_by_sigkill() {
    if let Ok(dir) = std::env::var("VFIO_CRASH_CHILD_DIR") {
        journal_writer(Path::new(&dir));
        return;
    }
    let exe = std::env::current_exe().unwrap();
    for round in 0..12u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(&exe)
            .args(["--exact", "the_journal_on_disk_is_never_torn_by_sigkill", "--nocapture"])
            .env("VFIO_CRASH_CHILD_DIR", dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(40 + round * 23));
        let _ = child.kill();
        let _ = child.wait();
        let fs = vfio_core::hostfs::RealFs::new(dir.path());
        match read_journal(&fs) {
            Ok(j) => assert!(j.devices.iter().all(|e| e.driver.as_deref() == Some("igb"))),
            Err(e) => panic!("round {round}: torn journal: {e}"),
        }
    }
}

/// The child of the SIGKILL test: rewrites a growing journal until killed.
fn journal_writer(root: &Path) {
    use vfio_core::host::journal::{write_journal, Journal, JournalEntry};
    let fs = vfio_core::hostfs::RealFs::new(root);
    let mut j = Journal::default();
    for i in 0u32.. {
        j.devices.push(JournalEntry {
            address: format!("0000:{:02x}:{:02x}.{}", (i >> 8) & 0xff, (i >> 3) & 0x1f, i & 7),
            target: "vfio-pci".into(),
            driver: Some("igb".into()),
            driver_override: Some("x".repeat((i % 200) as usize)),
            sriov_numvfs: Some(1),
        });
        if j.devices.len() > 2000 {
            j.devices.clear();
        }
        write_journal(&fs, &j).unwrap();
    }
}

/// `persist --write` killed before each of its changes (backups and files on a real
/// `/etc`): every managed file is whole, either as it was or as the finished run writes
/// it, the user's own lines are always there, and running the command again finishes
/// the job with the same bytes as an uninterrupted run.
#[test]
fn a_killed_persist_write_leaves_whole_files_and_a_rerun_finishes() {
    use vfio_core::host::persist::{persist, PersistRequest};
    const USER: &str = "options kvm ignore_msrs=1\n";
    let conf = "etc/modprobe.d/vfio.conf";
    let setup = || {
        let h = host();
        let dir = tempfile::tempdir().unwrap();
        let fs: Arc<dyn HostFs> = Arc::new(SplitFs::with_real_files(&h, dir.path()).unwrap());
        fs.create_dir_all(Path::new("/etc/modprobe.d"), 0o755).unwrap();
        fs.replace_file(Path::new("/etc/modprobe.d/vfio.conf"), USER.as_bytes(), 0o644).unwrap();
        bind(&*fs, &BindRequest::vfio(EDU)).unwrap();
        (h, dir, fs)
    };
    let req = PersistRequest { devices: vec![], per_device: false, numvfs: vec![], force: false };
    let (_h, clean_dir, fs) = setup();
    let probe = CrashFs::new(fs.clone(), 0);
    persist(&probe, &req).unwrap();
    let changes = probe.changes();
    let finished = std::fs::read_to_string(clean_dir.path().join(conf)).unwrap();
    assert!(finished.starts_with(USER) && finished.contains("ids=1234:11e8"), "{finished}");
    assert!(changes >= 2, "{changes}");
    for k in 1..=changes {
        let (_h, dir, fs) = setup();
        let dying = CrashFs::new(fs.clone(), k);
        assert!(persist(&dying, &req).is_err(), "k={k}");
        assert!(dying.died(), "k={k}");
        let now = std::fs::read_to_string(dir.path().join(conf)).unwrap();
        assert!(now == USER || now == finished, "k={k}: torn or lost: {now:?}");
        persist(&*fs, &req).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join(conf)).unwrap(), finished, "k={k}");
        let stray: Vec<String> =
            walk(dir.path()).into_iter().filter(|p| p.ends_with(".tmp")).collect();
        assert!(stray.is_empty(), "k={k}: {stray:?}");
    }
    println!("crash recovery: persist --write: {changes} kill points");
}

fn walk(p: &Path) -> Vec<String> {
    let mut out = vec![];
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path().display().to_string());
        }
    }
    out
}

/// `sriov --numvfs 0 --force` while a VF is on vfio-pci, killed before each change: then
/// `restore --all` succeeds, the journal ends empty (the entry of a VF that went away is
/// dropped), the PF is on its driver and every VF that exists is back on igbvf.
#[test]
fn a_killed_forced_sriov_change_is_recovered_by_restore_all() {
    use vfio_core::host::sriov::set_num_vfs;
    let vf = "0000:02:10.0";
    let setup = || {
        let h = host();
        let dir = tempfile::tempdir().unwrap();
        let fs: Arc<dyn HostFs> = Arc::new(SplitFs::with_real_files(&h, dir.path()).unwrap());
        bind(&*fs, &BindRequest::vfio(vf)).unwrap();
        (h, dir, fs)
    };
    let (h, _d, fs) = setup();
    let probe = CrashFs::new(fs.clone(), 0);
    set_num_vfs(&probe, a(NIC), 0, true).unwrap();
    assert!(!h.state().devices.contains_key(&a(vf)));
    let changes = probe.changes();
    assert!(changes >= 2, "{changes}");
    for k in 1..=changes {
        let (h, _d, fs) = setup();
        let dying = CrashFs::new(fs.clone(), k);
        assert!(set_num_vfs(&dying, a(NIC), 0, true).is_err(), "k={k}");
        read_journal(&*fs).unwrap_or_else(|e| panic!("k={k}: {e}"));
        restore(&*fs, None).unwrap_or_else(|e| panic!("k={k}: {e}"));
        assert!(read_journal(&*fs).unwrap().is_empty(), "k={k}");
        let st = h.state();
        assert_eq!(st.devices[&a(NIC)].driver.as_deref(), Some("igb"), "k={k}");
        for (addr, d) in st.devices.iter().filter(|(x, _)| x.bus == 2 && **x != a(NIC)) {
            assert_eq!(d.driver.as_deref(), Some("igbvf"), "k={k}: {addr}");
        }
    }
    println!("crash recovery: sriov --numvfs 0 --force: {changes} kill points");
}
