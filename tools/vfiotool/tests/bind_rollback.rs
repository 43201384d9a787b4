//! `vfiotool bind`, `unbind` and `restore` with a sysfs failure at every write: one-line
//! errors that say the change was rolled back, exit code 1, and the host as it was (or
//! recoverable with `restore --all`). The library's own sweep over every read, write and
//! chown is `vfio-core/tests/bind_rollback.rs`.

use vfio_core::host::journal::read_journal;
use vfio_core::kernel::Errno;
use vfio_core::mock::{DeviceSpec, Fault, FaultOp, MockHost, SysState};
use vfio_core::PciAddress;

mod common;
use common::run_fs;

const EDU: &str = "0000:00:04.0";

fn run(h: &MockHost, args: &[&str]) -> (i32, String) {
    let r = run_fs(h.fs(), args);
    (r.code, r.err)
}

fn host() -> MockHost {
    MockHost::new([DeviceSpec::edu(EDU).driver("edu").group(1)])
        .with_sys(|s| *s = SysState::intel_ready())
}

fn driver(h: &MockHost) -> Option<String> {
    h.state().devices[&PciAddress::parse(EDU).unwrap()].driver.clone()
}

#[test]
fn every_failed_write_of_bind_and_unbind_is_one_line_and_recoverable() {
    let mut cases = 0;
    for errno in [Errno::EIO, Errno::EACCES, Errno::EBUSY, Errno::ENOSPC] {
        for cmd in ["bind", "unbind"] {
            for nth in 1.. {
                let h = host();
                if cmd == "unbind" {
                    assert_eq!(run(&h, &["bind", EDU]).0, 0);
                }
                h.inject(Fault::fs(FaultOp::Write).nth(nth).errno(errno));
                let (code, err) = run(&h, &[cmd, EDU]);
                if h.faults_fired() == 0 {
                    assert_eq!(code, 0, "{err}");
                    break;
                }
                cases += 1;
                let case = format!("{cmd} write #{nth} {errno:?}");
                assert_eq!(code, 1, "{case}");
                assert!(err.starts_with("vfiotool: ") && err.lines().count() == 1, "{case}: {err}");
                h.clear_faults();
                if cmd == "bind" {
                    assert_eq!(driver(&h).as_deref(), Some("edu"), "{case}: {err}");
                    assert!(read_journal(&*h.fs()).unwrap().is_empty(), "{case}");
                } else {
                    assert!(driver(&h).is_some() || !read_journal(&*h.fs()).unwrap().is_empty());
                    let (code, err) = run(&h, &["restore", "--all"]);
                    assert_eq!(code, 0, "{case}: {err}");
                    assert_eq!(driver(&h).as_deref(), Some("edu"), "{case}");
                }
            }
        }
    }
    assert!(cases >= 20, "{cases}");
}

#[test]
fn a_failed_probe_is_rolled_back_and_said_in_one_line() {
    let h = host();
    h.inject(Fault::fs(FaultOp::Write).path("/sys/bus/pci/drivers_probe").errno(Errno::EIO));
    let (code, err) = run(&h, &["bind", "00:04.0"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("rolled back") && err.lines().count() == 1, "{err}");
    assert_eq!(driver(&h).as_deref(), Some("edu"));
    assert!(read_journal(&*h.fs()).unwrap().is_empty());
}
