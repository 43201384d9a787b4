//! Two `vfiotool` runs at once on one simulated host: the lock keeps the journal whole.
//!
//! `vfiotool bind` plans (and prints) before it takes the lock, so a run whose plan was
//! overtaken by the other run must refuse rather than journal the other run's
//! intermediate state as the prior state (which once left the device on vfio-pci after
//! `restore`).

use std::sync::{Arc, Barrier};

use vfio_core::host::journal::read_journal;
use vfio_core::hostfs::HostFs;
use vfio_core::mock::{DeviceSpec, MockHost, SysState};
use vfio_core::PciAddress;

mod common;
use common::run_fs;

const EDU: &str = "0000:00:04.0";

fn run(fs: Arc<dyn HostFs>, args: &[&str]) -> (i32, String) {
    let r = run_fs(fs, args);
    (r.code, r.err)
}

fn host() -> MockHost {
    MockHost::new([DeviceSpec::edu(EDU).driver("edu").group(1)])
        .with_sys(|s| *s = SysState::intel_ready())
}

#[test]
fn two_binds_at_once_keep_the_journal_whole() {
    for round in 0..20 {
        let h = host();
        let barrier = Arc::new(Barrier::new(2));
        let runs: Vec<_> = (0..2)
            .map(|_| {
                let fs: Arc<dyn HostFs> = h.fs();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    run(fs, &["bind", EDU])
                })
            })
            .collect();
        let results: Vec<(i32, String)> = runs.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(results.iter().any(|r| r.0 == 0), "round {round}: {results:?}");
        for (code, err) in &results {
            if *code != 0 {
                // The loser met the lock, or its plan (made before it took the lock)
                // no longer matched the host and was refused before any change.
                assert!(
                    err.contains("another process holds the host lock")
                        || err.contains("changed since the plan was made"),
                    "round {round}: {err}"
                );
            }
        }
        let j = read_journal(&*h.fs()).unwrap();
        assert_eq!(j.devices.len(), 1, "round {round}");
        assert_eq!(j.devices[0].driver.as_deref(), Some("edu"), "round {round}");
        let (code, err) = run(h.fs(), &["restore", "--all"]);
        assert_eq!(code, 0, "{err}");
        let a = PciAddress::parse(EDU).unwrap();
        assert_eq!(h.state().devices[&a].driver.as_deref(), Some("edu"));
    }
}

#[test]
fn a_held_lock_is_reported_with_its_pid_and_released_with_its_holder() {
    let h = host();
    let fs: Arc<dyn HostFs> = h.fs();
    let other = vfio_core::host::lock::HostLock::acquire(&*fs).unwrap();
    let (code, err) = run(fs.clone(), &["bind", EDU]);
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        format!(
            "vfiotool: another process holds the host lock (pid {}): /run/vfiotool/lock is locked; wait for it to finish",
            std::process::id()
        )
    );
    // The holder ends (or dies: the kernel drops its flock): the next run goes ahead.
    drop(other);
    let (code, err) = run(fs.clone(), &["bind", EDU]);
    assert_eq!(code, 0, "{err}");
    assert!(h.state().sys.locks.is_empty());
}
