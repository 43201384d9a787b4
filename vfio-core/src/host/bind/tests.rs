//! Unit tests of bind on the simulated host.
use super::*;
use crate::host::journal::read_journal;
use crate::host::restore::{restore, unbind};
use crate::kernel::Errno;
use crate::mock::sysfs::{SimBlock, SimNet};
use crate::mock::{DeviceSpec, Fault, FaultOp, MockHost, SysState};

fn a(s: &str) -> PciAddress {
    PciAddress::parse(s).unwrap()
}

fn sriov_nic(addr: &str, group: u32) -> DeviceSpec {
    DeviceSpec::igb(addr).driver("igb").group(group)
}

/// A host with an SR-IOV NIC (2 VFs on, an override set), an edu device, a GPU
/// slot sharing a group with its audio function, and devices the host uses.
fn host() -> MockHost {
    let mut vga = DeviceSpec::new("0000:05:00.0").driver("nouveau").group(7);
    vga.class = 0x030000;
    let mut audio = DeviceSpec::new("0000:05:00.1").driver("snd_hda_intel").group(7);
    audio.class = 0x040300;
    let mut boot = DeviceSpec::new("0000:00:02.0").driver("i915").group(0);
    boot.class = 0x030000;
    let h = MockHost::new([
        boot,
        DeviceSpec::edu("0000:00:04.0").driver("edu").group(1),
        sriov_nic("0000:02:00.0", 3),
        DeviceSpec::nvme("0000:04:00.0").driver("nvme").group(4),
        sriov_nic("0000:06:00.0", 8),
        DeviceSpec::bridge("0000:00:1c.0").driver("pcieport").group(7),
        vga,
        audio,
    ])
    .with_sys(|s| {
        *s = SysState::intel_ready();
        s.boot_vga = Some(a("0000:00:02.0"));
        s.blocks.push(SimBlock { name: "nvme0n1".into(), device: a("0000:04:00.0") });
        s.mounts.push("/dev/nvme0n1p1 / ext4 rw,relatime 0 0".into());
        s.nets.push(SimNet {
            name: "eth0".into(),
            device: a("0000:06:00.0"),
            default_route: true,
            ipv4: vec!["192.168.0.2/24".into()],
        });
    });
    let fs = h.fs();
    fs.write(Path::new("/sys/bus/pci/devices/0000:02:00.0/sriov_numvfs"), b"2").unwrap();
    h.state().devices.get_mut(&a("0000:02:00.0")).unwrap().driver_override = Some("igb".into());
    h
}

type Snapshot = Vec<(PciAddress, Option<String>, Option<String>, u16)>;

fn snapshot(h: &MockHost) -> Snapshot {
    let st = h.state();
    st.devices
        .iter()
        .map(|(a, d)| {
            (
                *a,
                d.driver.clone(),
                d.driver_override.clone(),
                st.sys.numvfs.get(a).copied().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn binds_through_override_and_probe_and_restores() {
    let h = host();
    let fs = h.fs();
    let before = snapshot(&h);
    let out = bind(&*fs, &BindRequest::vfio("0000:02:00.0")).unwrap();
    assert_eq!(out.dev_nodes, vec!["/dev/vfio/3"]);
    assert!(out.plan.steps.contains(&Step::Modprobe("vfio-pci".into())));
    assert_eq!(current_driver(&*fs, a("0000:02:00.0")).as_deref(), Some("vfio-pci"));
    let j = read_journal(&*fs).unwrap();
    assert_eq!(j.devices.len(), 1);
    assert_eq!(j.devices[0].driver.as_deref(), Some("igb"));
    assert_eq!(j.devices[0].driver_override.as_deref(), Some("igb"));
    assert_eq!(j.devices[0].sriov_numvfs, Some(2));
    // Binding again is a no-op.
    let again = plan_bind(&*fs, &BindRequest::vfio("02:00.0")).unwrap();
    assert!(again.devices.is_empty() && again.already == vec![a("0000:02:00.0")]);
    let r = restore(&*fs, Some(a("0000:02:00.0"))).unwrap();
    assert_eq!(r[0].driver.as_deref(), Some("igb"));
    assert_eq!(snapshot(&h), before);
    assert!(read_journal(&*fs).unwrap().is_empty());
}

#[test]
fn a_failure_at_every_write_rolls_everything_back() {
    let probe = host();
    let before = snapshot(&probe);
    let fs = probe.fs();
    let n0 = probe.state().sys.writes.len();
    bind(&*fs, &BindRequest { user: Some("qemu".into()), ..BindRequest::vfio("0000:02:00.0") })
        .unwrap();
    let writes = probe.state().sys.writes.len() - n0;
    assert!(writes >= 5, "journal, numvfs, override, unbind, probe: {writes}");
    for k in 1..=writes as u32 {
        let h = host();
        let fs = h.fs();
        h.inject(Fault::fs(FaultOp::Write).nth(k).errno(Errno::EIO));
        let e = bind(
            &*fs,
            &BindRequest { user: Some("qemu".into()), ..BindRequest::vfio("0000:02:00.0") },
        )
        .unwrap_err()
        .to_string();
        if k > 1 {
            assert!(e.contains("rolled back"), "write {k}: {e}");
        }
        assert_eq!(snapshot(&h), before, "write {k}: {e}");
        assert!(read_journal(&*fs).unwrap().is_empty(), "write {k}");
    }
    // A group bind: a failure on the second device puts the first one back too.
    let probe = host();
    let fs = probe.fs();
    let req = BindRequest { group: true, ..BindRequest::vfio("0000:05:00.1") };
    let n0 = probe.state().sys.writes.len();
    bind(&*fs, &req).unwrap();
    let writes = probe.state().sys.writes.len() - n0;
    assert!(writes >= 7, "journal + 3 writes per device: {writes}");
    for k in 1..=writes as u32 {
        let h = host();
        let fs = h.fs();
        h.inject(Fault::fs(FaultOp::Write).nth(k).errno(Errno::EIO));
        assert!(bind(&*fs, &req).is_err(), "write {k}");
        assert_eq!(snapshot(&h), before, "group bind, write {k}");
        assert!(read_journal(&*fs).unwrap().is_empty(), "write {k}");
    }
    // The chown failing also rolls back.
    let h = host();
    let fs = h.fs();
    h.inject(Fault::fs(FaultOp::Chown).errno(Errno::EPERM));
    assert!(bind(
        &*fs,
        &BindRequest { user: Some("qemu".into()), ..BindRequest::vfio("0000:02:00.0") }
    )
    .is_err());
    assert_eq!(snapshot(&h), before);
}

#[test]
fn user_gets_the_group_node_and_gives_it_back() {
    let h = host();
    let fs = h.fs();
    bind(&*fs, &BindRequest { user: Some("qemu".into()), ..BindRequest::vfio("0000:00:04.0") })
        .unwrap();
    let m = fs.metadata(Path::new("/dev/vfio/1")).unwrap();
    assert_eq!((m.uid, m.gid), (107, 111));
    assert!(bind(
        &*fs,
        &BindRequest { user: Some("nobody-here".into()), ..BindRequest::vfio("0000:02:00.0") }
    )
    .is_err());
    restore(&*fs, None).unwrap();
    assert_eq!(current_driver(&*fs, a("0000:00:04.0")).as_deref(), Some("edu"));
}

#[test]
fn guards_refuse_host_devices_unless_forced() {
    let h = host();
    let fs = h.fs();
    for (dev, what) in [
        ("0000:00:02.0", "boot display"),
        ("0000:04:00.0", "mounted"),
        ("0000:06:00.0", "default route"),
    ] {
        let e = plan_bind(&*fs, &BindRequest::vfio(dev)).unwrap_err();
        assert!(matches!(e, Error::InUse { .. }), "{dev}: {e}");
        assert!(e.to_string().contains(what), "{dev}: {e}");
        assert!(plan_bind(&*fs, &BindRequest { force: true, ..BindRequest::vfio(dev) }).is_ok());
    }
    let e = plan_bind(&*fs, &BindRequest::vfio("0000:00:1c.0")).unwrap_err();
    assert!(e.to_string().contains("bridge"), "{e}");
    assert!(plan_bind(&*fs, &BindRequest::vfio("0000:09:00.0")).is_err());
}

#[test]
fn binding_a_pf_names_the_vfs_it_removes_and_refuses_vfs_in_use() {
    let h = host();
    let fs = h.fs();
    // 02:00.0 has 2 VFs (on igbvf): a warning names them.
    let plan = plan_bind(&*fs, &BindRequest::vfio("0000:02:00.0")).unwrap();
    let w = plan.warnings.iter().find(|w| w.contains("sriov_numvfs")).unwrap();
    assert!(w.contains("its 2 VFs disappear (0000:02:10.0, 0000:02:10.1)"), "{w}");
    // One VF on vfio-pci, the other carrying the host's route: refused, naming both.
    bind(&*fs, &BindRequest::vfio("0000:02:10.0")).unwrap();
    h.state().sys.nets.push(SimNet {
        name: "eth7".into(),
        device: a("0000:02:10.1"),
        default_route: false,
        ipv4: vec!["10.0.0.7/24".into()],
    });
    let e = plan_bind(&*fs, &BindRequest::vfio("0000:02:00.0")).unwrap_err();
    assert!(matches!(e, Error::VfsInUse { .. }), "{e}");
    let e = e.to_string();
    assert!(
        e.starts_with("binding 0000:02:00.0 to vfio-pci (which sets its sriov_numvfs to 0) would remove VFs in use: 0000:02:10.0 (bound to vfio-pci), 0000:02:10.1 (network interface eth7 has an address")
            && e.contains("unbind them from vfio-pci first (0000:02:10.0)")
            && e.ends_with("or force the change to remove them anyway"),
        "{e}"
    );
    // Forced: planned, with the VFs in use named in the warning.
    let plan =
        plan_bind(&*fs, &BindRequest { force: true, ..BindRequest::vfio("0000:02:00.0") }).unwrap();
    let w = plan.warnings.iter().find(|w| w.contains("sriov_numvfs")).unwrap();
    assert!(w.contains("0000:02:10.0 (bound to vfio-pci)"), "{w}");
    // A PF without VFs on: no such warning.
    let plan = plan_bind(&*fs, &BindRequest::vfio("0000:00:04.0")).unwrap();
    assert!(plan.warnings.iter().all(|w| !w.contains("sriov_numvfs")));
}

#[test]
fn slot_and_group_binds() {
    let h = host();
    let fs = h.fs();
    // One function of the GPU: bound, with a warning about its group.
    let plan = plan_bind(&*fs, &BindRequest::vfio("0000:05:00.1")).unwrap();
    assert_eq!(plan.devices.len(), 1);
    assert!(plan.warnings[0].contains("0000:05:00.0 (nouveau)"), "{:?}", plan.warnings);
    // The slot: both functions.
    let out = bind(&*fs, &BindRequest::vfio("05:00")).unwrap();
    assert_eq!(out.plan.devices.len(), 2);
    assert!(out.plan.warnings.is_empty());
    restore(&*fs, None).unwrap();
    // The group: both functions, not the bridge.
    let out =
        bind(&*fs, &BindRequest { group: true, ..BindRequest::vfio("0000:05:00.1") }).unwrap();
    let moved: Vec<&str> = out.plan.devices.iter().map(|e| e.address.as_str()).collect();
    assert_eq!(moved, vec!["0000:05:00.0", "0000:05:00.1"]);
    assert_eq!(current_driver(&*fs, a("0000:00:1c.0")).as_deref(), Some("pcieport"));
    let g = crate::host::groups::read_group(&*fs, 7, &Default::default()).unwrap();
    assert!(g.viable);
}

#[test]
fn dry_run_plans_without_changing_anything() {
    let h = host();
    let fs = h.fs();
    let before = snapshot(&h);
    let plan = plan_bind(&*fs, &BindRequest::vfio("0000:02:00.0")).unwrap();
    let text: Vec<String> = plan.steps.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        text,
        vec![
            "modprobe vfio-pci",
            "echo 0 > /sys/bus/pci/devices/0000:02:00.0/sriov_numvfs",
            "echo vfio-pci > /sys/bus/pci/devices/0000:02:00.0/driver_override",
            "echo 0000:02:00.0 > /sys/bus/pci/devices/0000:02:00.0/driver/unbind",
            "echo 0000:02:00.0 > /sys/bus/pci/drivers_probe",
        ]
    );
    assert_eq!(snapshot(&h), before);
    assert!(!fs.exists(Path::new(JOURNAL)));
    assert!(!fs.exists(Path::new("/sys/module/vfio_pci")));
}

#[test]
fn unbind_of_an_open_device_is_reported_and_journal_kept() {
    let h = host();
    let fs = h.fs();
    bind(&*fs, &BindRequest::vfio("0000:00:04.0")).unwrap();
    h.set_device_open(a("0000:00:04.0"), true);
    let e = unbind(&*fs, a("0000:00:04.0")).unwrap_err().to_string();
    assert!(e.contains("holds the device open"), "{e}");
    assert_eq!(read_journal(&*fs).unwrap().devices.len(), 1);
    h.set_device_open(a("0000:00:04.0"), false);
    assert_eq!(unbind(&*fs, a("0000:00:04.0")).unwrap().driver.as_deref(), Some("edu"));
    // Without a journal: back to the native driver.
    h.set_driver(a("0000:00:04.0"), Some("vfio-pci"));
    assert_eq!(unbind(&*fs, a("0000:00:04.0")).unwrap().driver.as_deref(), Some("edu"));
    // A device on its own driver, not journaled, is left alone.
    let e = unbind(&*fs, a("0000:00:04.0")).unwrap_err().to_string();
    assert!(e.contains("it is on edu and not in the journal"), "{e}");
    assert_eq!(current_driver(&*fs, a("0000:00:04.0")).as_deref(), Some("edu"));
}

#[test]
fn missing_module_or_iommu_is_a_clear_error() {
    let h = host().with_sys(|s| s.available_modules.clear());
    let fs = h.fs();
    let before = snapshot(&h);
    let e = bind(&*fs, &BindRequest::vfio("0000:00:04.0")).unwrap_err().to_string();
    assert!(e.contains("modprobe") && e.contains("rolled back"), "{e}");
    assert_eq!(snapshot(&h), before);
    // No IOMMU registered and no no-IOMMU mode: no group can ever appear.
    let h = MockHost::new([DeviceSpec::edu("0000:00:04.0").driver("edu")])
        .with_sys(|s| s.iommus.clear());
    let e = plan_bind(&*h.fs(), &BindRequest::vfio("0000:00:04.0")).unwrap_err().to_string();
    assert!(e.contains("no IOMMU group"), "{e}");
    // An IOMMU that attaches devices at probe (virtio-iommu): the group comes with
    // vfio-pci, so the bind is planned.
    let h = MockHost::new([DeviceSpec::edu("0000:00:04.0").driver("edu")])
        .with_sys(|s| *s = SysState::intel_ready());
    let plan = plan_bind(&*h.fs(), &BindRequest::vfio("0000:00:04.0"));
    assert!(plan.is_ok(), "{plan:?}");
    // No IOMMU but vfio's no-IOMMU mode: the no-IOMMU group is made at probe.
    let h = MockHost::new([DeviceSpec::edu("0000:00:04.0").driver("edu")]).with_sys(|s| {
        s.iommus.clear();
        s.load_vfio();
        s.module_params.insert(("vfio".into(), "enable_unsafe_noiommu_mode".into()), "Y".into());
    });
    let plan = plan_bind(&*h.fs(), &BindRequest::vfio("0000:00:04.0"));
    assert!(plan.is_ok(), "{plan:?}");
}

/// virtio-iommu gives a driverless device its group only when vfio-pci probes it (seen
/// in the VM lab): with an IOMMU active the bind goes ahead and finds the group after.
#[test]
fn a_group_that_appears_at_probe_time_is_found_after_the_bind() {
    let mut edu = DeviceSpec::edu("0000:00:04.0").group(3);
    edu.group_at_probe = true;
    let with_iommu = MockHost::new([edu.clone()]).with_sys(|s| *s = SysState::intel_ready());
    let fs = with_iommu.fs();
    assert_eq!(iommu_group(&*fs, a("0000:00:04.0")), None);
    let plan = plan_bind(&*fs, &BindRequest::vfio("0000:00:04.0")).unwrap();
    assert!(plan.warnings.iter().any(|w| w.contains("no IOMMU group yet")), "{plan:?}");
    let out = bind(&*fs, &BindRequest::vfio("0000:00:04.0")).unwrap();
    assert_eq!(out.dev_nodes, vec!["/dev/vfio/3"]);
    restore(&*fs, Some(a("0000:00:04.0"))).unwrap();
    assert_eq!(iommu_group(&*fs, a("0000:00:04.0")), None);
    // --user cannot be planned before the group exists: a clear error, nothing done.
    let mut req = BindRequest::vfio("0000:00:04.0");
    req.user = Some("0".into());
    let e = bind(&*fs, &req).unwrap_err().to_string();
    assert!(e.contains("then bind it again for the user"), "{e}");
    // Without an IOMMU (and without no-IOMMU mode) it is refused as before.
    let without = MockHost::new([edu]).with_sys(|s| s.load_vfio());
    let e = plan_bind(&*without.fs(), &BindRequest::vfio("0000:00:04.0")).unwrap_err();
    assert!(e.to_string().contains("enable the IOMMU first"), "{e}");
}
