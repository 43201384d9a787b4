//! The host lock around bind, unbind and restore: concurrent runs, a live holder, a
//! stale lock left by a crash, and a journal that must not steer restore elsewhere.

use std::path::Path;
use std::sync::{Arc, Barrier};

use vfio_core::host::bind::{
    bind, execute_partially, plan_bind, read_journal, restore, unbind, BindRequest, JOURNAL,
};
use vfio_core::host::lock::{HostLock, LOCK};
use vfio_core::hostfs::HostFs;
use vfio_core::mock::{DeviceSpec, MockHost, SysState};
use vfio_core::{Error, PciAddress};

const EDU: &str = "0000:00:04.0";

fn host() -> MockHost {
    MockHost::new([DeviceSpec::edu(EDU).driver("edu").group(1)])
        .with_sys(|s| *s = SysState::intel_ready())
}

fn edu() -> PciAddress {
    PciAddress::parse(EDU).unwrap()
}

fn driver(h: &MockHost) -> Option<String> {
    h.state().devices.get(&edu()).and_then(|d| d.driver.clone())
}

/// Plants a lock file as another process would have written it.
fn plant_lock(fs: &dyn HostFs, pid: u32) {
    fs.create_dir_all(Path::new("/run/vfiotool")).unwrap();
    fs.write(Path::new(LOCK), format!("{pid} 1\n").as_bytes()).unwrap();
}

#[test]
fn a_run_in_progress_elsewhere_blocks_bind_unbind_and_restore() {
    let h = host();
    let fs = h.fs();
    plant_lock(&*fs, 4242);
    h.state().sys.processes.insert(4242);
    let e = bind(&*fs, &BindRequest::vfio(EDU)).unwrap_err();
    assert!(matches!(e, Error::Locked { pid: 4242, .. }), "{e}");
    assert!(e.to_string().contains("another vfiotool is running (pid 4242)"), "{e}");
    assert_eq!(driver(&h).as_deref(), Some("edu"));
    assert!(!fs.exists(Path::new(JOURNAL)));
    assert!(matches!(restore(&*fs, None), Err(Error::Locked { .. })));
    h.set_driver(edu(), Some("vfio-pci"));
    assert!(matches!(unbind(&*fs, edu()), Err(Error::Locked { .. })));
    assert_eq!(driver(&h).as_deref(), Some("vfio-pci"));
    // The other run finishes: its lock goes, and ours works.
    fs.remove_file(Path::new(LOCK)).unwrap();
    assert_eq!(unbind(&*fs, edu()).unwrap().driver.as_deref(), Some("edu"));
    assert!(!fs.exists(Path::new(LOCK)), "the lock is released after the run");
}

#[test]
fn a_crash_leaves_a_stale_lock_that_the_next_run_replaces() {
    let h = host();
    let fs = h.fs();
    // A run journals the bind, makes two of its changes and dies holding the lock.
    let plan = plan_bind(&*fs, &BindRequest::vfio(EDU)).unwrap();
    execute_partially(&*fs, &plan, 3).unwrap();
    plant_lock(&*fs, 31337);
    assert_ne!(driver(&h).as_deref(), Some("edu"));
    // pid 31337 is not running: restore takes the lock over and finishes the job.
    let done = restore(&*fs, None).unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(driver(&h).as_deref(), Some("edu"));
    assert!(read_journal(&*fs).unwrap().is_empty());
    assert!(!fs.exists(Path::new(LOCK)));
}

#[test]
fn two_binds_at_once_leave_one_consistent_journal() {
    for round in 0..20 {
        let h = host();
        let fs = h.fs();
        let barrier = Arc::new(Barrier::new(2));
        let runs: Vec<_> = (0..2)
            .map(|_| {
                let fs = fs.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    bind(&*fs, &BindRequest::vfio(EDU)).map(|_| ())
                })
            })
            .collect();
        let results: Vec<_> = runs.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(results.iter().any(|r| r.is_ok()), "round {round}: {results:?}");
        for r in &results {
            if let Err(e) = r {
                // The loser either met the lock or found the device already moved.
                assert!(
                    matches!(e, Error::Locked { .. }) || e.to_string().contains("vfio-pci"),
                    "round {round}: {e}"
                );
            }
        }
        assert_eq!(driver(&h).as_deref(), Some("vfio-pci"), "round {round}");
        // One entry, recording the driver from before either run.
        let j = read_journal(&*fs).unwrap();
        assert_eq!(j.len(), 1, "round {round}: {j:?}");
        assert_eq!(j[0].driver.as_deref(), Some("edu"), "round {round}: {j:?}");
        assert!(!fs.exists(Path::new(LOCK)), "round {round}");
        restore(&*fs, None).unwrap();
        assert_eq!(driver(&h).as_deref(), Some("edu"), "round {round}");
    }
}

#[test]
fn a_lock_held_by_this_process_is_not_taken_over() {
    let h = host();
    let fs = h.fs();
    let held = HostLock::acquire(&*fs).unwrap();
    let e = bind(&*fs, &BindRequest::vfio(EDU)).unwrap_err();
    assert!(matches!(e, Error::Locked { pid, .. } if pid == std::process::id()), "{e}");
    drop(held);
    bind(&*fs, &BindRequest::vfio(EDU)).unwrap();
}

#[test]
fn a_planted_journal_cannot_steer_restore_to_other_files() {
    let cases = [
        (
            r#"[{"address":"0000:00:04.0","target":"vfio-pci","driver":"../../../../etc","driver_override":null,"sriov_numvfs":null,"node_owner":null}]"#,
            "not a driver name",
        ),
        (
            r#"[{"address":"0000:00:04.0","target":"vfio-pci","driver":"edu","driver_override":null,"sriov_numvfs":null,"node_owner":{"path":"/etc/shadow","uid":1000,"gid":1000}}]"#,
            "not a /dev/vfio node",
        ),
        (
            r#"[{"address":"0000:00:04.0","target":"vfio-pci","driver":"edu","driver_override":null,"sriov_numvfs":null,"node_owner":{"path":"/dev/vfio/../../etc/shadow","uid":1000,"gid":1000}}]"#,
            "not a /dev/vfio node",
        ),
        (
            r#"[{"address":"nonsense","target":"vfio-pci","driver":"edu","driver_override":null,"sriov_numvfs":null,"node_owner":null}]"#,
            "nonsense",
        ),
    ];
    for (journal, why) in cases {
        let h = host();
        let fs = h.fs();
        h.set_driver(edu(), Some("vfio-pci"));
        fs.create_dir_all(Path::new("/run/vfiotool")).unwrap();
        fs.write(Path::new(JOURNAL), journal.as_bytes()).unwrap();
        let n0 = h.state().sys.writes.len();
        let e = restore(&*fs, None).unwrap_err();
        assert!(matches!(e, Error::Invalid { what: "journal", .. }), "{e}");
        assert!(e.to_string().contains(why), "{e}");
        assert_eq!(h.state().sys.writes.len(), n0, "nothing written: {e}");
        assert!(h.state().sys.owners.is_empty(), "nothing chowned: {e}");
        assert_eq!(driver(&h).as_deref(), Some("vfio-pci"));
    }
}

#[test]
fn a_plan_made_before_another_run_moved_the_device_is_refused() {
    let h = host();
    let fs = h.fs();
    let stale = plan_bind(&*fs, &BindRequest::vfio(EDU)).unwrap();
    // Another run binds the device between our plan and our execute.
    bind(&*fs, &BindRequest::vfio(EDU)).unwrap();
    let journal = read_journal(&*fs).unwrap();
    let e = vfio_core::host::bind::execute(&*fs, &stale).unwrap_err().to_string();
    assert!(e.contains("changed since the plan was made"), "{e}");
    // Nothing changed: the journal still records the driver from before either run.
    assert_eq!(read_journal(&*fs).unwrap(), journal);
    assert_eq!(journal[0].driver.as_deref(), Some("edu"));
    restore(&*fs, None).unwrap();
    assert_eq!(driver(&h).as_deref(), Some("edu"));
}
