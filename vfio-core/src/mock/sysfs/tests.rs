//! The host the subsystems' tests share, and the tests that go across subsystems.

use std::path::Path;

use super::{SimBlock, SimMdevParent, SimNet, SysState};
use crate::hostfs::{HostFs, NodeKind};
use crate::mock::{DeviceSpec, MdevTypeSpec, MockHost};
use crate::pci::PciAddress;

pub(super) fn a(s: &str) -> PciAddress {
    PciAddress::parse(s).unwrap()
}

pub(in crate::mock) fn host() -> MockHost {
    let nic = DeviceSpec::igb("0000:02:00.0").driver("igb").group(3);
    let mut gpu = DeviceSpec::new("0000:03:00.0").driver("i915").group(4);
    gpu.mdev_types = vec![MdevTypeSpec {
        id: "i915-GVTg_V5_4".into(),
        name: "GVTg_V5_4".into(),
        description: "low_gm_size: 128MB".into(),
        device_api: "vfio-pci".into(),
        max_instances: 2,
        device: None,
    }];
    gpu.rom = Some(vec![0x55, 0xaa, 1, 2]);
    MockHost::new([DeviceSpec::edu("0000:00:04.0").driver("edu").group(1), nic, gpu])
        .with_sys(|s| *s = SysState::intel_ready())
}

pub(in crate::mock) fn p(s: &str) -> &Path {
    Path::new(s)
}

#[test]
fn rom_reads_only_after_enable_and_mdev_create_remove() {
    let h = host();
    let fs = h.fs();
    let d = p("/sys/bus/pci/devices/0000:03:00.0");
    assert_eq!(fs.read(&d.join("rom")).unwrap_err().raw_os_error(), Some(libc::EINVAL));
    fs.write(&d.join("rom"), b"1").unwrap();
    assert_eq!(fs.read(&d.join("rom")).unwrap(), vec![0x55, 0xaa, 1, 2]);
    let t = d.join("mdev_supported_types/i915-GVTg_V5_4");
    assert_eq!(fs.read_string(&t.join("available_instances")).unwrap(), "2");
    let u = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";
    assert_eq!(
        fs.write(&t.join("create"), b"nope").unwrap_err().raw_os_error(),
        Some(libc::EINVAL)
    );
    fs.write(&t.join("create"), u.as_bytes()).unwrap();
    assert_eq!(
        fs.write(&t.join("create"), u.as_bytes()).unwrap_err().raw_os_error(),
        Some(libc::EEXIST)
    );
    assert_eq!(fs.read_string(&t.join("available_instances")).unwrap(), "1");
    assert_eq!(fs.read_dir(&t.join("devices")).unwrap(), vec![u]);
    fs.write(&p("/sys/bus/mdev/devices").join(u).join("remove"), b"1").unwrap();
    assert_eq!(fs.read_string(&t.join("available_instances")).unwrap(), "2");
}

#[test]
fn mdev_parents_are_links_in_the_mdev_bus_class() {
    let h = host().with_sys(|s| {
        s.mdev_parents.push(SimMdevParent::mtty());
        s.load_vfio();
    });
    let fs = h.fs();
    let bus = p("/sys/class/mdev_bus");
    assert_eq!(fs.read_dir(bus).unwrap(), ["0000:03:00.0", "mtty"]);
    assert_eq!(
        fs.read_link(&bus.join("0000:03:00.0")).unwrap(),
        p("../../devices/pci0000:03/0000:03:00.0")
    );
    assert_eq!(fs.read_link(&bus.join("mtty")).unwrap(), p("../../devices/virtual/mtty/mtty"));
    assert_eq!(fs.read_dir(p("/sys/devices/virtual")).unwrap(), ["iommu", "mtty"]);
    assert_eq!(fs.read_dir(&bus.join("mtty")).unwrap(), ["mdev_supported_types"]);
    let t = bus.join("mtty/mdev_supported_types/mtty-1");
    assert_eq!(
        fs.read_dir(&t).unwrap(),
        ["available_instances", "create", "device_api", "devices", "name"]
    );
    assert_eq!(fs.read_string(&t.join("name")).unwrap(), "Single port serial");
    let u = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";
    fs.write(&t.join("create"), u.as_bytes()).unwrap();
    assert_eq!(fs.read_string(&t.join("available_instances")).unwrap(), "23");
    let inst = p("/sys/bus/mdev/devices").join(u);
    assert_eq!(
        fs.read_link(&inst).unwrap(),
        p("../../../devices/virtual/mtty/mtty/83b8f4f2-509f-382f-3c1e-e6bfe0fa1001")
    );
    assert_eq!(fs.read_dir(&bus.join("mtty")).unwrap(), [u, "mdev_supported_types"]);
    assert_eq!(fs.read_link(&inst.join("mdev_type")).unwrap(), p("../mdev_supported_types/mtty-1"));
    // A VFIO device in a group of its own (the lowest free number), with a cdev.
    assert_eq!(
        fs.read_link(&inst.join("iommu_group")).unwrap(),
        p("../../../../../kernel/iommu_groups/0")
    );
    assert_eq!(
        fs.read_link(&inst.join("driver")).unwrap(),
        p("../../../../../bus/mdev/drivers/mtty")
    );
    assert!(fs.read_dir(&inst.join("driver")).unwrap().is_empty());
    assert_eq!(fs.read_dir(&inst.join("vfio-dev")).unwrap(), ["vfio0"]);
    let g = p("/sys/kernel/iommu_groups/0");
    assert_eq!(fs.read_string(&g.join("name")).unwrap(), "vfio-noiommu");
    assert_eq!(fs.read_string(&g.join("type")).unwrap(), "unknown");
    assert_eq!(fs.read_dir(&g.join("devices")).unwrap(), [u]);
    assert!(fs.exists(&g.join("devices").join(u).join("remove")));
    assert_eq!(fs.metadata(p("/dev/vfio/0")).unwrap().kind, NodeKind::CharDevice);
    assert!(!fs.exists(p("/dev/vfio/noiommu-0")));
    assert!(fs.exists(&t.join("devices").join(u).join("remove")));
    fs.write(&inst.join("remove"), b"1").unwrap();
    assert!(!fs.exists(&inst));
    assert!(!fs.exists(p("/sys/kernel/iommu_groups/0")) && !fs.exists(p("/dev/vfio/0")));
    // A PCI parent is listed while its driver is bound (its types exist only then).
    h.set_driver(a("0000:03:00.0"), None);
    assert_eq!(fs.read_dir(bus).unwrap(), ["mtty"]);
    assert!(!fs.exists(&bus.join("0000:03:00.0")));
}

#[test]
fn host_facts_modules_and_dev_nodes() {
    let h = host();
    let fs = h.fs();
    assert!(!fs.exists(p("/sys/module/vfio_pci")));
    assert!(!fs.exists(p("/dev/vfio/vfio")));
    assert!(fs.modprobe("nosuch").is_err());
    fs.modprobe("vfio-pci").unwrap();
    assert!(fs.exists(p("/sys/module/vfio_pci")));
    assert_eq!(fs.metadata(p("/dev/vfio/vfio")).unwrap().kind, NodeKind::CharDevice);
    assert_eq!(
        fs.read_string(p("/sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts"))
            .unwrap(),
        "N"
    );
    assert_eq!(fs.read_string(p("/sys/class/iommu/dmar0/intel-iommu/ecap")).unwrap(), "f0205e");
    assert!(fs.read_dir(p("/etc")).unwrap().contains(&"default".to_string()));
    fs.create_dir_all(p("/run/vfiotool"), 0o700).unwrap();
    assert!(fs.read_dir(p("/run/vfiotool")).unwrap().is_empty());
    assert_eq!(
        fs.write(p("/sys/bus/pci/nosuch"), b"1").unwrap_err().raw_os_error(),
        Some(libc::EACCES)
    );
}

#[test]
fn config_is_the_live_image_and_procfs_follows_the_description() {
    let h = host().with_sys(|s| {
        s.nets.push(SimNet {
            name: "eth0".into(),
            device: a("0000:02:00.0"),
            default_route: true,
            ipv4: vec!["10.0.0.2/24".into()],
        });
        s.blocks.push(SimBlock { name: "sda".into(), device: a("0000:00:04.0") });
        s.mounts.push("/dev/sda1 / ext4 rw 0 0".into());
        s.memlock = Some(65536);
        s.modules.insert("iommufd".into());
    });
    let fs = h.fs();
    h.state().devices.get_mut(&a("0000:00:04.0")).unwrap().config[0x40] = 0xab;
    assert_eq!(fs.read(p("/sys/bus/pci/devices/0000:00:04.0/config")).unwrap()[0x40], 0xab);
    let route = fs.read_string(p("/proc/net/route")).unwrap();
    assert!(route.lines().any(|l| l.starts_with("eth0\t00000000")), "{route}");
    assert_eq!(
        fs.read_link(p("/sys/class/net/eth0")).unwrap(),
        p("../../devices/pci0000:02/0000:02:00.0/net/eth0")
    );
    assert_eq!(fs.read_string(p("/sys/class/net/eth0/device/vendor")).unwrap(), "0x8086");
    assert_eq!(fs.read_string(p("/sys/block/sda/device/device")).unwrap(), "0x11e8");
    assert!(fs.read_string(p("/proc/mounts")).unwrap().contains("/dev/sda1 /"));
    assert!(fs.read_string(p("/proc/self/limits")).unwrap().contains("65536"));
    let m = fs.metadata(p("/dev/iommu")).unwrap();
    assert_eq!((m.kind, m.mode, m.uid), (NodeKind::CharDevice, 0o600, 0));
    fs.chown(p("/dev/iommu"), Some(107), None).unwrap();
    assert_eq!(fs.metadata(p("/dev/iommu")).unwrap().uid, 107);
}
