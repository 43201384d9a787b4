//! What the bind journal keeps, as an operator's sequence of commands would exercise it:
//! the first prior state across re-binds, every chown (also of a device already on
//! vfio-pci), overrides the kernel accepts, file modes whatever the umask, devices that
//! disappear, and a planted journal that must not steer restore to other files.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use vfio_core::host::bind::{bind, BindRequest};
use vfio_core::host::journal::{read_journal, JOURNAL};
use vfio_core::host::restore::{plan_restore, restore};
use vfio_core::hostfs::HostFs;
use vfio_core::mock::{DeviceSpec, MockHost, SplitFs, SysState};
use vfio_core::{Error, PciAddress};

const EDU: &str = "0000:00:04.0";

fn a(s: &str) -> PciAddress {
    PciAddress::parse(s).unwrap()
}

fn host() -> MockHost {
    MockHost::new([DeviceSpec::edu(EDU).driver("edu").group(1)]).with_sys(|s| {
        *s = SysState::intel_ready();
        s.available_modules.insert("pci_stub".into());
        s.load_vfio();
    })
}

fn driver(h: &MockHost) -> Option<String> {
    h.state().devices[&a(EDU)].driver.clone()
}

fn owner(h: &MockHost) -> (u32, u32) {
    let m = h.fs().metadata(Path::new("/dev/vfio/1")).unwrap();
    (m.uid, m.gid)
}

#[test]
fn a_rebind_to_another_driver_restores_to_the_original_one() {
    let h = host();
    let fs = h.fs();
    bind(&*fs, &BindRequest::vfio(EDU)).unwrap();
    bind(&*fs, &BindRequest { driver: "pci-stub".into(), ..BindRequest::vfio(EDU) }).unwrap();
    assert_eq!(driver(&h).as_deref(), Some("pci-stub"));
    let j = read_journal(&*fs).unwrap();
    assert_eq!(j.devices[0].driver.as_deref(), Some("edu"));
    assert_eq!(j.devices[0].target, "pci-stub");
    restore(&*fs, None).unwrap();
    assert_eq!(driver(&h).as_deref(), Some("edu"));
    assert_eq!(h.state().devices[&a(EDU)].driver_override, None);
}

#[test]
fn user_on_a_device_already_on_vfio_pci_is_journaled_and_undone() {
    let h = host();
    let fs = h.fs();
    h.set_driver(a(EDU), Some("vfio-pci"));
    assert_eq!(owner(&h), (0, 0));
    bind(&*fs, &BindRequest { user: Some("qemu".into()), ..BindRequest::vfio(EDU) }).unwrap();
    assert_eq!(owner(&h), (107, 111));
    let j = read_journal(&*fs).unwrap();
    assert!(j.devices.is_empty(), "{j:?}");
    assert_eq!(j.nodes.len(), 1);
    // A second --user to another user keeps the first recorded owner.
    bind(&*fs, &BindRequest { user: Some("1000".into()), ..BindRequest::vfio(EDU) }).unwrap();
    assert_eq!(read_journal(&*fs).unwrap().nodes[0].uid, 0);
    let (_, chowns) = plan_restore(&*fs, None).unwrap();
    assert_eq!(chowns.len(), 1, "{chowns:?}");
    restore(&*fs, None).unwrap();
    assert_eq!(owner(&h), (0, 0));
    assert_eq!(driver(&h).as_deref(), Some("vfio-pci"), "it was on vfio-pci before");
    assert!(!fs.exists(Path::new(JOURNAL)));
}

#[test]
fn an_override_the_kernel_accepted_is_journaled_and_put_back() {
    let h = host();
    let fs = h.fs();
    h.state().devices.get_mut(&a(EDU)).unwrap().driver_override = Some("foo/bar".into());
    bind(&*fs, &BindRequest::vfio(EDU)).unwrap();
    assert_eq!(read_journal(&*fs).unwrap().devices[0].driver_override.as_deref(), Some("foo/bar"));
    // Later binds and restores still read the journal.
    bind(&*fs, &BindRequest::vfio(EDU)).unwrap();
    restore(&*fs, None).unwrap();
    assert_eq!(h.state().devices[&a(EDU)].driver_override.as_deref(), Some("foo/bar"));
    // A driver name with a slash is refused before anything changes.
    let e = bind(&*fs, &BindRequest { driver: "../x".into(), ..BindRequest::vfio(EDU) })
        .unwrap_err()
        .to_string();
    assert!(e.contains("a driver is a plain name"), "{e}");
}

#[test]
fn journal_and_run_directory_are_private_whatever_the_umask() {
    let h = host();
    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn HostFs> = Arc::new(SplitFs::with_real_files(&h, dir.path()).unwrap());
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let r = bind(&*fs, &BindRequest::vfio(EDU));
    nix::sys::stat::umask(old);
    r.unwrap();
    let mode =
        |p: &str| std::fs::metadata(dir.path().join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("run/vfiotool"), 0o700);
    assert_eq!(mode("run/vfiotool/journal.json"), 0o600);
    assert_eq!(mode("run/vfiotool/lock"), 0o600);
}

#[test]
fn entries_of_devices_that_disappeared_are_dropped_with_a_note() {
    let h = host();
    let fs = h.fs();
    bind(&*fs, &BindRequest::vfio(EDU)).unwrap();
    h.state().devices.remove(&a(EDU));
    let (plan, _) = plan_restore(&*fs, None).unwrap();
    assert!(plan[0].1.is_none(), "the dry run says it would only drop the entry");
    let done = restore(&*fs, None).unwrap();
    assert!(done[0].note.as_deref().unwrap().contains("no longer exists"), "{done:?}");
    assert!(read_journal(&*fs).unwrap().is_empty());
}

#[test]
fn a_planted_journal_cannot_steer_restore_to_other_files() {
    let entry = |driver: &str| {
        format!(
            r#"{{"address":"0000:00:04.0","target":"vfio-pci","driver":"{driver}","driver_override":null,"sriov_numvfs":null}}"#
        )
    };
    let journal = |devices: String, nodes: &str| {
        format!(r#"{{"format":"vfiotool.journal/1","devices":[{devices}],"nodes":[{nodes}]}}"#)
    };
    let cases = [
        (journal(entry("../../../../etc"), ""), "not a driver name"),
        (
            journal(entry("edu"), r#"{"path":"/etc/shadow","uid":1000,"gid":1000}"#),
            "not a /dev/vfio group node",
        ),
        (
            journal(entry("edu"), r#"{"path":"/dev/vfio/../../etc/shadow","uid":1000,"gid":1000}"#),
            "not a /dev/vfio group node",
        ),
        (journal(entry("edu").replace("0000:00:04.0", "nonsense"), ""), "nonsense"),
        (String::new(), "it is empty"),
        (journal(entry("edu"), "")[..40].to_string(), "EOF"),
    ];
    for (journal, why) in cases {
        let h = host();
        let fs = h.fs();
        h.set_driver(a(EDU), Some("vfio-pci"));
        fs.create_dir_all(Path::new("/run/vfiotool"), 0o700).unwrap();
        fs.replace_file(Path::new(JOURNAL), journal.as_bytes(), 0o600).unwrap();
        let n0 = h.state().sys.writes.len();
        let e = restore(&*fs, None).unwrap_err();
        assert!(matches!(e, Error::Invalid { what: "journal", .. }), "{e}");
        assert!(e.to_string().contains(why), "{e}");
        assert_eq!(h.state().sys.writes.len(), n0, "nothing written: {e}");
        assert!(h.state().sys.owners.is_empty(), "nothing chowned: {e}");
        assert_eq!(driver(&h).as_deref(), Some("vfio-pci"));
    }
}
