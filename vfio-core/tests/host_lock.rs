//! The host lock around bind, unbind and restore: concurrent runs, a live holder, a plan
//! overtaken by another run, and a run paused inside its changes.

use std::path::Path;
use std::sync::{Arc, Barrier};

use vfio_core::host::bind::{bind, plan_bind, BindRequest, JOURNAL};
use vfio_core::host::journal::read_journal;
use vfio_core::host::lock::{HostLock, LOCK};
use vfio_core::host::restore::{restore, unbind};
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

#[test]
fn a_run_in_progress_elsewhere_blocks_bind_unbind_and_restore() {
    let h = host();
    let fs = h.fs();
    let other = HostLock::acquire(&*fs).unwrap();
    let e = bind(&*fs, &BindRequest::vfio(EDU)).unwrap_err();
    assert!(matches!(e, Error::Locked { .. }), "{e}");
    assert!(e.to_string().contains("another process holds the host lock (pid"), "{e}");
    assert_eq!(driver(&h).as_deref(), Some("edu"));
    assert!(!fs.exists(Path::new(JOURNAL)));
    assert!(matches!(restore(&*fs, None), Err(Error::Locked { .. })));
    h.set_driver(edu(), Some("vfio-pci"));
    assert!(matches!(unbind(&*fs, edu()), Err(Error::Locked { .. })));
    assert_eq!(driver(&h).as_deref(), Some("vfio-pci"));
    // The other run finishes: its lock goes, and ours works.
    drop(other);
    assert_eq!(unbind(&*fs, edu()).unwrap().driver.as_deref(), Some("edu"));
    assert!(h.state().sys.locks.is_empty(), "the lock is released after the run");
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
        assert_eq!(j.devices.len(), 1, "round {round}: {j:?}");
        assert_eq!(j.devices[0].driver.as_deref(), Some("edu"), "round {round}: {j:?}");
        assert!(h.state().sys.locks.is_empty(), "round {round}");
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
    assert!(
        matches!(&e, Error::Locked { pid, path } if *pid == std::process::id() && path == Path::new(LOCK)),
        "{e}"
    );
    drop(held);
    bind(&*fs, &BindRequest::vfio(EDU)).unwrap();
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
    assert_eq!(journal.devices[0].driver.as_deref(), Some("edu"));
    restore(&*fs, None).unwrap();
    assert_eq!(driver(&h).as_deref(), Some("edu"));
}

/// A host view that stops at its first sysfs write until released: the window in
/// which a second run could interleave, held open on purpose.
#[derive(Debug)]
struct Paused {
    inner: std::sync::Arc<dyn HostFs>,
    reached: std::sync::mpsc::SyncSender<()>,
    go: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    once: std::sync::Once,
}

impl HostFs for Paused {
    fn read_limited(&self, p: &Path, max: usize) -> std::io::Result<Vec<u8>> {
        self.inner.read_limited(p, max)
    }
    fn read_at(&self, p: &Path, o: u64, b: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read_at(p, o, b)
    }
    fn write(&self, p: &Path, d: &[u8]) -> std::io::Result<()> {
        self.once.call_once(|| {
            self.reached.send(()).unwrap();
            self.go.lock().unwrap().recv().unwrap();
        });
        self.inner.write(p, d)
    }
    fn replace_file(&self, p: &Path, d: &[u8], m: u32) -> std::io::Result<()> {
        self.inner.replace_file(p, d, m)
    }
    fn read_link(&self, p: &Path) -> std::io::Result<std::path::PathBuf> {
        self.inner.read_link(p)
    }
    fn read_dir(&self, p: &Path) -> std::io::Result<Vec<String>> {
        self.inner.read_dir(p)
    }
    fn metadata(&self, p: &Path) -> std::io::Result<vfio_core::hostfs::NodeMeta> {
        self.inner.metadata(p)
    }
    fn chown(&self, p: &Path, u: Option<u32>, g: Option<u32>) -> std::io::Result<()> {
        self.inner.chown(p, u, g)
    }
    fn create_dir_all(&self, p: &Path, m: u32) -> std::io::Result<()> {
        self.inner.create_dir_all(p, m)
    }
    fn remove_file(&self, p: &Path) -> std::io::Result<()> {
        self.inner.remove_file(p)
    }
    fn lock(&self, p: &Path) -> std::io::Result<Box<dyn vfio_core::hostfs::HeldLock>> {
        self.inner.lock(p)
    }
    fn modprobe(&self, m: &str) -> std::io::Result<()> {
        self.inner.modprobe(m)
    }
}

#[test]
fn no_second_run_proceeds_while_the_first_is_paused_inside_its_changes() {
    // The lock on a real file (flock), as on a host: sysfs simulated, /run real.
    let h = host();
    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn HostFs> =
        Arc::new(vfio_core::mock::SplitFs::with_real_files(&h, dir.path()).unwrap());
    let (reached_tx, reached) = std::sync::mpsc::sync_channel(1);
    let (go, go_rx) = std::sync::mpsc::channel();
    let paused: Arc<dyn HostFs> = Arc::new(Paused {
        inner: fs.clone(),
        reached: reached_tx,
        go: std::sync::Mutex::new(go_rx),
        once: std::sync::Once::new(),
    });
    let first = {
        let paused = paused.clone();
        std::thread::spawn(move || bind(&*paused, &BindRequest::vfio(EDU)).map(|_| ()))
    };
    reached.recv().unwrap();
    // The first run has journaled and stands before its first sysfs write.
    assert_eq!(read_journal(&*fs).unwrap().devices.len(), 1);
    for (what, r) in [
        ("bind", bind(&*fs, &BindRequest::vfio(EDU)).map(|_| ())),
        ("restore", restore(&*fs, None).map(|_| ())),
        ("unbind", unbind(&*fs, edu()).map(|_| ())),
        ("lock", HostLock::acquire(&*fs).map(|_| ())),
    ] {
        assert!(matches!(r, Err(Error::Locked { .. })), "{what} went ahead: {r:?}");
    }
    assert_eq!(driver(&h).as_deref(), Some("edu"), "nothing moved meanwhile");
    go.send(()).unwrap();
    first.join().unwrap().unwrap();
    assert_eq!(driver(&h).as_deref(), Some("vfio-pci"));
    restore(&*fs, None).unwrap();
    assert_eq!(driver(&h).as_deref(), Some("edu"));
}
