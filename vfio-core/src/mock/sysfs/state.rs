//! What the simulated host is, beyond its PCI functions: the facts sysfs and procfs
//! show (modules, command line, IOMMU units, mounts, interfaces, disks, plain files) and
//! the sysfs state that is not per device (VFs, mdevs, dynamic ids, owners).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::mock::{DeviceSpec, MdevTypeSpec, MockHost};
use crate::pci::PciAddress;

/// One IOMMU unit of the simulated host (`/sys/class/iommu/NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimIommu {
    /// The unit's name (`dmar0`, `ivhd0`, `virtio-iommu`...).
    pub name: String,
    /// Intel VT-d `ecap` register (bit 3: interrupt remapping); `None` for other vendors.
    pub intel_ecap: Option<u64>,
    /// AMD-Vi `features` (`None` for other vendors).
    pub amd_features: Option<u64>,
}

/// A network interface of the simulated host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimNet {
    /// Interface name (`eth0`).
    pub name: String,
    /// The PCI function behind it.
    pub device: PciAddress,
    /// Carries the default route.
    pub default_route: bool,
    /// IPv4 addresses with prefix length, as `a.b.c.d/len`.
    pub ipv4: Vec<String>,
}

/// A block device of the simulated host (`/sys/block/NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimBlock {
    /// Device name (`nvme0n1`, `sda`).
    pub name: String,
    /// The storage controller behind it.
    pub device: PciAddress,
}

/// A device that offers mdev types without being a PCI function, such as the `mtty`
/// sample driver's virtual device or s390's `matrix`: `/sys/devices/virtual/CLASS/NAME`,
/// listed in `/sys/class/mdev_bus` like a PCI parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimMdevParent {
    /// The device name (`mtty`), which is its `/sys/class/mdev_bus` link name.
    pub name: String,
    /// Its class, the directory under `/sys/devices/virtual` (`mtty`).
    pub class: String,
    /// The types it offers (an empty `description` means the type has no such file).
    pub types: Vec<MdevTypeSpec>,
}

impl SimMdevParent {
    /// The `mtty` sample driver's parent (samples/vfio-mdev/mtty.c): types `mtty-1`
    /// ("Single port serial") and `mtty-2` ("Dual port serial") over its 24 ports, with
    /// no description, whose instances are [`DeviceSpec::mtty`] devices. Each type's instances are counted on their own here, where the
    /// driver shares the ports between the two types.
    pub fn mtty() -> Self {
        let ty = |n: u32, name: &str| MdevTypeSpec {
            id: format!("mtty-{n}"),
            name: name.into(),
            description: String::new(),
            device_api: "vfio-pci".into(),
            max_instances: 24 / n,
            device: Some(Box::new(DeviceSpec::mtty(n as u8))),
        };
        SimMdevParent {
            name: "mtty".into(),
            class: "mtty".into(),
            types: vec![ty(1, "Single port serial"), ty(2, "Dual port serial")],
        }
    }
}

/// The parent of a simulated mdev instance.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimParent {
    /// A PCI function whose spec has [`mdev_types`](crate::mock::DeviceSpec::mdev_types).
    Pci(PciAddress),
    /// A [`SimMdevParent`], by name.
    Virtual(String),
}

/// Host-level facts of a simulated host, and the sysfs state that is not per device.
#[derive(Debug, Clone, Default)]
pub struct SysState {
    /// Loaded kernel modules (`vfio_pci`, `vfio_iommu_type1`...). A driver named `a-b`
    /// is registered when module `a_b` is loaded, when it is some device's native
    /// driver (built in), or when a device is bound to it.
    pub modules: BTreeSet<String>,
    /// Modules `modprobe` can load (it fails with `ENOENT` for others).
    pub available_modules: BTreeSet<String>,
    /// Module parameters: (module, parameter) to value.
    pub module_params: BTreeMap<(String, String), String>,
    /// `/proc/cmdline`.
    pub cmdline: String,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel_release: String,
    /// The IOMMU units (`/sys/class/iommu`).
    pub iommus: Vec<SimIommu>,
    /// `/proc/mounts` lines.
    pub mounts: Vec<String>,
    /// Network interfaces.
    pub nets: Vec<SimNet>,
    /// Block devices.
    pub blocks: Vec<SimBlock>,
    /// Plain files outside sysfs/procfs (`/etc/default/grub`, `/run/...`).
    pub files: BTreeMap<PathBuf, Vec<u8>>,
    /// Permission bits of plain files written with `replace_file` (others read 0o644).
    pub file_modes: BTreeMap<PathBuf, u32>,
    /// Directories created outside sysfs.
    pub dirs: BTreeSet<PathBuf>,
    /// Files whose lock ([`HostFs::lock`](crate::hostfs::HostFs::lock)) is held.
    pub locks: BTreeSet<PathBuf>,
    /// Owner overrides set by `chown` (path to uid, gid).
    pub owners: BTreeMap<PathBuf, (u32, u32)>,
    /// Mode overrides of device nodes.
    pub modes: BTreeMap<PathBuf, u32>,
    /// The reader is not root: `config` reads give only the first 64 bytes.
    pub unprivileged: bool,
    /// The boot VGA device (`boot_vga` reads 1).
    pub boot_vga: Option<PciAddress>,
    /// Native drivers, when not the spec's start driver.
    pub native_drivers: BTreeMap<PciAddress, String>,
    /// Dynamic ids added through `new_id`, per driver.
    pub dynids: BTreeMap<String, BTreeSet<(u16, u16)>>,
    /// Devices held open through VFIO (unbinding them fails with `EBUSY`).
    pub open_devices: BTreeSet<PciAddress>,
    /// Enabled VFs per physical function.
    pub numvfs: BTreeMap<PciAddress, u16>,
    /// Devices whose `rom` was enabled by writing 1.
    pub rom_enabled: BTreeSet<PciAddress>,
    /// Mdev parents that are not PCI functions.
    pub mdev_parents: Vec<SimMdevParent>,
    /// Mediated devices: UUID to (parent, type id).
    pub mdevs: BTreeMap<String, (SimParent, String)>,
    /// Devices whose `enable` is 1.
    pub enabled: BTreeSet<PciAddress>,
    /// The kernel log, served as `/var/log/kern.log` (`None` hides it).
    pub kernel_log: Option<String>,
    /// `RLIMIT_MEMLOCK` in bytes shown in `/proc/self/limits` (`None`: unlimited).
    pub memlock: Option<u64>,
    /// Every successful write, in order (path as given).
    pub writes: Vec<PathBuf>,
    /// Other processes running on the host: each shows as a `/proc/PID` directory.
    pub processes: BTreeSet<u32>,
}

impl SysState {
    /// A host ready for passthrough: an Intel IOMMU with interrupt remapping, the
    /// command line asking for it, the VFIO modules available (not loaded), GRUB.
    pub fn intel_ready() -> Self {
        let mut s = SysState {
            cmdline: "BOOT_IMAGE=/vmlinuz root=/dev/nvme0n1p1 ro quiet intel_iommu=on iommu=pt"
                .into(),
            kernel_release: "6.12.0-amd64".into(),
            iommus: vec![SimIommu {
                name: "dmar0".into(),
                intel_ecap: Some(0xf0205e),
                amd_features: None,
            }],
            kernel_log: Some(
                "DMAR: IOMMU enabled\nDMAR-IR: Enabled IRQ remapping in x2apic mode\n".into(),
            ),
            ..SysState::default()
        };
        for m in ["vfio", "vfio_iommu_type1", "vfio_pci", "vfio_pci_core", "iommufd"] {
            s.available_modules.insert(m.into());
        }
        s.files.insert(
            "/etc/default/grub".into(),
            b"GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet intel_iommu=on iommu=pt\"\n"
                .to_vec(),
        );
        s.files.insert(
            "/etc/passwd".into(),
            b"root:x:0:0:root:/root:/bin/sh\nqemu:x:107:111::/nonexistent:/usr/sbin/nologin\n"
                .to_vec(),
        );
        s.files.insert("/usr/sbin/update-initramfs".into(), b"#!/bin/sh\n".to_vec());
        s.files.insert("/usr/sbin/update-grub".into(), b"#!/bin/sh\n".to_vec());
        s
    }

    /// Loads the VFIO modules (as `modprobe vfio-pci` would).
    pub fn load_vfio(&mut self) {
        for m in ["vfio", "vfio_iommu_type1", "vfio_pci", "vfio_pci_core"] {
            self.modules.insert(m.into());
        }
        self.module_params
            .entry(("vfio_iommu_type1".into(), "allow_unsafe_interrupts".into()))
            .or_insert_with(|| "N".into());
    }
}

impl MockHost {
    /// Changes the host-level description (modules, command line, IOMMUs, files...).
    pub fn with_sys(self, f: impl FnOnce(&mut SysState)) -> Self {
        f(&mut self.state().sys);
        self
    }
}
