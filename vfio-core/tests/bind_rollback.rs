//! A bind, unbind or restore that fails part way through: every sysfs read, write and
//! chown of the flow fails in turn, with each plausible errno, on a simulated host with
//! an `edu` device and an SR-IOV NIC with two VFs enabled. A failed bind rolls back
//! every change (drivers, overrides, VF counts, node owners) and leaves an empty
//! journal; after a failed unbind the device has a driver or is still journaled, and
//! `restore` brings everything back; the host lock never blocks the next run.
//!
//! The rollback's unit tests are beside it (`src/host/bind/tests.rs`); the command
//! line's in `tools/vfiotool/tests/bind_rollback.rs`; a kill instead of a failure in
//! `crash_recovery.rs`.

use std::path::Path;

use vfio_core::host::bind::{bind, BindRequest};
use vfio_core::host::journal::read_journal;
use vfio_core::host::lock::HostLock;
use vfio_core::host::restore::{restore, unbind};
use vfio_core::hostfs::HostFs;
use vfio_core::kernel::Errno;
use vfio_core::mock::{DeviceSpec, Fault, FaultOp, MockHost, SysState};
use vfio_core::PciAddress;

const EDU: &str = "0000:00:04.0";
const NIC: &str = "0000:02:00.0";
const ERRNOS: [Errno; 7] = [
    Errno::EIO,
    Errno::ENOMEM,
    Errno::EBUSY,
    Errno::EINVAL,
    Errno::EPERM,
    Errno::ENOSPC,
    Errno::EACCES,
];

fn host() -> MockHost {
    let nic = DeviceSpec::igb(NIC).driver("igb").group(3);
    let h = MockHost::new([DeviceSpec::edu(EDU).driver("edu").group(1), nic])
        .with_sys(|s| *s = SysState::intel_ready());
    let fs = h.fs();
    fs.write(&Path::new("/sys/bus/pci/devices").join(NIC).join("sriov_numvfs"), b"2").unwrap();
    h.state().sys.writes.clear();
    h
}

/// Driver, override and VF count of every physical function (VFs come and go with
/// the count), and the owners of the device nodes that exist (a node removed with
/// its last VFIO device comes back owned by root on Linux).
fn snapshot(h: &MockHost) -> String {
    let fs = h.fs();
    let nodes: Vec<_> = h.state().sys.owners.keys().cloned().collect();
    let owners: Vec<_> =
        nodes.into_iter().filter_map(|p| fs.metadata(&p).ok().map(|m| (p, m.uid, m.gid))).collect();
    let st = h.state();
    let devs: Vec<_> = st
        .devices
        .iter()
        .filter(|(a, _)| [EDU, NIC].contains(&a.to_string().as_str()))
        .map(|(a, d)| (*a, d.driver.clone(), d.driver_override.clone(), st.sys.numvfs.get(a)))
        .collect();
    format!("{devs:?} {owners:?}")
}

fn request(dev: &str) -> BindRequest {
    BindRequest { user: Some("1000".into()), ..BindRequest::vfio(dev) }
}

/// Fails the nth read, write or chown of a bind with each errno: the bind either
/// succeeds with a journal that restores the original state, or fails with every
/// device back as it was, an empty journal and no lock left.
#[test]
fn bind_fails_cleanly_at_every_file_operation() {
    let before = snapshot(&host());
    let mut cases = 0;
    for dev in [EDU, NIC] {
        for op in [FaultOp::Write, FaultOp::Read, FaultOp::Chown] {
            for errno in ERRNOS {
                for nth in 1.. {
                    let h = host();
                    let fs = h.fs();
                    h.inject(Fault::fs(op).nth(nth).errno(errno));
                    let r = bind(&*fs, &request(dev));
                    if h.faults_fired() == 0 {
                        r.unwrap();
                        break;
                    }
                    cases += 1;
                    let case = format!("{dev} {op:?} #{nth} {errno:?}");
                    // The lock is released, or (its read-back failed) left in a
                    // state the next run takes over.
                    h.clear_faults();
                    assert!(HostLock::acquire(&*fs).is_ok(), "{case}: lock stuck");
                    match r {
                        Err(e) => {
                            assert_eq!(snapshot(&h), before, "{case}: {e}");
                            assert!(read_journal(&*fs).unwrap().is_empty(), "{case}: {e}");
                            let msg = e.to_string();
                            assert!(!msg.contains('\n'), "{case}: {msg}");
                        }
                        Ok(_) => {
                            // A failed read the bind could do without: the journal
                            // must still bring everything back.
                            restore(&*fs, None).unwrap();
                            assert_eq!(snapshot(&h), before, "{case}: restore after Ok");
                        }
                    }
                }
            }
        }
    }
    assert!(cases > 100, "{cases} cases");
}

/// Fails the nth file operation of an unbind: the device is never left without a
/// driver unless the journal still holds it, and `restore` then finishes the job.
#[test]
fn unbind_and_restore_recover_from_a_failure_at_every_file_operation() {
    let before = snapshot(&host());
    let mut cases = 0;
    for dev in [EDU, NIC] {
        let a = PciAddress::parse(dev).unwrap();
        for op in [FaultOp::Write, FaultOp::Read, FaultOp::Chown] {
            for errno in ERRNOS {
                for nth in 1.. {
                    let h = host();
                    let fs = h.fs();
                    bind(&*fs, &request(dev)).unwrap();
                    h.inject(Fault::fs(op).nth(nth).errno(errno));
                    let r = unbind(&*fs, a);
                    if h.faults_fired() == 0 {
                        r.unwrap();
                        assert_eq!(snapshot(&h), before);
                        break;
                    }
                    cases += 1;
                    let case = format!("{dev} {op:?} #{nth} {errno:?}");
                    // The lock is released, or (its read-back failed) left in a
                    // state the next run takes over.
                    h.clear_faults();
                    assert!(HostLock::acquire(&*fs).is_ok(), "{case}: lock stuck");
                    let journaled = !read_journal(&*fs).unwrap().is_empty();
                    let driver = h.state().devices[&a].driver.clone();
                    assert!(
                        driver.is_some() || journaled,
                        "{case}: left without a driver and without a journal entry ({r:?})"
                    );
                    if r.is_err() || journaled {
                        restore(&*fs, None).unwrap();
                    }
                    assert_eq!(snapshot(&h), before, "{case}: {r:?}");
                    assert!(read_journal(&*fs).unwrap().is_empty(), "{case}");
                }
            }
        }
    }
    assert!(cases > 50, "{cases} cases");
}
