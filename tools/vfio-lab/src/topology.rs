//! The lab's virtual machine: its PCI devices, their fixed guest addresses, and the QEMU
//! arguments that create them. This is the one place the addresses are written down; the
//! guest gets them as `VFIO_LAB_*` environment variables.

use std::path::{Path, PathBuf};

/// The option ROM QEMU loads into the e1000e (package ipxe-qemu): a legacy x86 iPXE image
/// followed by an EFI image. Passed explicitly so tests know the expected bytes.
pub const E1000E_ROM: &str = "/usr/lib/ipxe/qemu/efi-e1000e.rom";

/// Where the guest finds a copy of [`E1000E_ROM`].
pub const GUEST_E1000E_ROM: &str = "/lab/efi-e1000e.rom";

/// Where the guest finds the recorded conformance answers (`tests/conformance`).
pub const GUEST_CONFORMANCE: &str = "/lab/conformance";

/// One PCI function of the lab VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabDevice {
    /// Environment variable naming its guest address (`VFIO_LAB_EDU`, ...).
    pub env: &'static str,
    /// Guest PCI address, `0000:bb:dd.f`.
    pub bdf: &'static str,
    /// Vendor:device id as the guest sees it.
    pub id: &'static str,
    /// The guest driver it binds to at boot (None: no driver).
    pub driver: Option<&'static str>,
    /// What it is for.
    pub role: &'static str,
    /// The `-device` argument (None for devices QEMU's machine creates itself).
    pub qemu: Option<&'static str>,
}

/// Whether the VM has a virtual IOMMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IommuMode {
    /// `virtio-iommu-pci`: every device is translated, groups are real.
    Virtio,
    /// No IOMMU: VFIO only in no-IOMMU mode (`/dev/vfio/noiommu-N`), custom kernel only.
    None,
}

impl IommuMode {
    /// The value of `VFIO_LAB_IOMMU` in the guest.
    pub fn name(self) -> &'static str {
        match self {
            IommuMode::Virtio => "virtio-iommu",
            IommuMode::None => "none",
        }
    }
}

/// The virtio-iommu device.
pub const VIOMMU: LabDevice = LabDevice {
    env: "VFIO_LAB_VIOMMU",
    bdf: "0000:00:03.0",
    id: "1af4:1057",
    driver: Some("virtio-pci"),
    role: "paravirtual IOMMU (virtio-iommu)",
    qemu: Some("virtio-iommu-pci,bus=pcie.0,addr=0x3"),
};

/// The lab's devices besides the IOMMU, in address order.
pub const DEVICES: &[LabDevice] = &[
    LabDevice {
        env: "VFIO_LAB_EDU",
        bdf: "0000:00:04.0",
        id: "1234:11e8",
        driver: None,
        role: "edu test device, alone in its group: the device the tests drive",
        qemu: Some("edu,bus=pcie.0,addr=0x4"),
    },
    LabDevice {
        env: "VFIO_LAB_E1000E",
        bdf: "0000:00:05.0",
        id: "8086:10d3",
        driver: Some("e1000e"),
        role: "Intel 82574L NIC with the iPXE option ROM; host driver e1000e",
        qemu: Some(
            "e1000e,netdev=lab0,romfile=/usr/lib/ipxe/qemu/efi-e1000e.rom,bus=pcie.0,addr=0x5",
        ),
    },
    LabDevice {
        env: "VFIO_LAB_NVME",
        bdf: "0000:00:06.0",
        id: "1b36:0010",
        driver: Some("nvme"),
        role: "NVMe controller with a small scratch disk; host driver nvme",
        qemu: Some("nvme,serial=vfiolab0,drive=labdisk,bus=pcie.0,addr=0x6"),
    },
    LabDevice {
        env: "VFIO_LAB_ROOT_PORT",
        bdf: "0000:00:07.0",
        id: "1b36:000c",
        driver: Some("pcieport"),
        role: "PCIe root port (with ACS: its own group) leading to bus 01",
        qemu: Some("pcie-root-port,id=rp1,chassis=1,slot=1,bus=pcie.0,addr=0x7"),
    },
    LabDevice {
        env: "VFIO_LAB_EDU2",
        bdf: "0000:01:00.0",
        id: "1234:11e8",
        driver: None,
        role: "second edu, function 0 of a multifunction slot behind the root port",
        qemu: Some("edu,bus=rp1,addr=0x0.0x0,multifunction=on"),
    },
    LabDevice {
        env: "VFIO_LAB_TESTDEV",
        bdf: "0000:01:00.1",
        id: "1b36:0005",
        driver: None,
        role: "pci-testdev, function 1 of the same slot: shares edu2's IOMMU group (no ACS)",
        qemu: Some("pci-testdev,bus=rp1,addr=0x0.0x1"),
    },
];

/// Devices only QEMU 8 and later emulate: the SR-IOV NIC behind its own root port. Its VFs
/// appear at `02:10.0`, `02:10.2`, ... (the 82576's VF offset 0x80 and stride 2).
pub const NEWER_QEMU_DEVICES: &[LabDevice] = &[
    LabDevice {
        env: "VFIO_LAB_ROOT_PORT2",
        bdf: "0000:00:08.0",
        id: "1b36:000c",
        driver: Some("pcieport"),
        role: "PCIe root port (with ACS) leading to bus 02, the SR-IOV NIC",
        qemu: Some("pcie-root-port,id=rp2,chassis=2,slot=2,bus=pcie.0,addr=0x8"),
    },
    LabDevice {
        env: "VFIO_LAB_IGB",
        bdf: "0000:02:00.0",
        id: "8086:10c9",
        driver: Some("igb"),
        role: "Intel 82576 NIC with SR-IOV (up to 7 VFs); host driver igb; QEMU 8+",
        qemu: Some("igb,netdev=lab1,bus=rp2,addr=0x0"),
    },
];

/// How to boot the VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// QEMU binary.
    pub qemu: PathBuf,
    /// Its firmware directories (`-L`), for a QEMU unpacked outside `/usr`.
    pub firmware: Vec<PathBuf>,
    /// Its environment (`QEMU_MODULE_DIR` of an unpacked QEMU).
    pub qemu_env: Vec<(String, String)>,
    /// Whether QEMU emulates the newer devices ([`NEWER_QEMU_DEVICES`]).
    pub newer_devices: bool,
    /// Accelerator: `tcg` (default) or `kvm`.
    pub accel: String,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Guest CPUs.
    pub cpus: u32,
    /// Kernel image.
    pub kernel: PathBuf,
    /// Initramfs (gzip'd cpio).
    pub initrd: PathBuf,
    /// Backing file of the NVMe disk.
    pub nvme_image: PathBuf,
    /// IOMMU or not.
    pub iommu: IommuMode,
    /// Kernel command line.
    pub cmdline: String,
}

/// The QEMU arguments for a VM (serial console on stdio, no display, no reboot).
pub fn qemu_args(cfg: &VmConfig) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "-accel".into(),
        cfg.accel.clone(),
        // TCG's default CPU plus AMD's virtualisation, so the guest can load kvm-amd.
        "-cpu".into(),
        if cfg.accel == "tcg" { "qemu64,+svm,+npt".into() } else { "host".into() },
        "-M".into(),
        "q35".into(),
        "-m".into(),
        cfg.memory_mib.to_string(),
        "-smp".into(),
        cfg.cpus.to_string(),
        "-nodefaults".into(),
        "-display".into(),
        "none".into(),
        "-serial".into(),
        "mon:stdio".into(),
        "-no-reboot".into(),
        "-kernel".into(),
        path_arg(&cfg.kernel),
        "-initrd".into(),
        path_arg(&cfg.initrd),
        "-append".into(),
        cfg.cmdline.clone(),
        "-netdev".into(),
        "user,id=lab0,restrict=on".into(),
        "-drive".into(),
        format!(
            "file={},if=none,id=labdisk,format=raw",
            path_arg(&cfg.nvme_image).replace(',', ",,")
        ),
    ];
    for d in &cfg.firmware {
        a.push("-L".into());
        a.push(path_arg(d));
    }
    if cfg.iommu == IommuMode::Virtio {
        push_device(&mut a, &VIOMMU);
    }
    for d in devices(cfg.newer_devices) {
        push_device(&mut a, d);
    }
    if cfg.newer_devices {
        a.push("-netdev".into());
        a.push("user,id=lab1,restrict=on".into());
    }
    a
}

/// The devices of a VM, in address order.
pub fn devices(newer: bool) -> impl Iterator<Item = &'static LabDevice> {
    DEVICES.iter().chain(if newer { NEWER_QEMU_DEVICES } else { &[] })
}

fn push_device(a: &mut Vec<String>, d: &LabDevice) {
    if let Some(q) = d.qemu {
        a.push("-device".into());
        a.push(q.into());
    }
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The `VFIO_LAB_*` variables for the guest, as `NAME=value` pairs.
pub fn guest_env(
    kernel: &str,
    iommu: IommuMode,
    qemu_version: &str,
    newer: bool,
) -> Vec<(String, String)> {
    let mut v = vec![
        ("VFIO_LAB_KERNEL".to_string(), kernel.to_string()),
        ("VFIO_LAB_IOMMU".to_string(), iommu.name().to_string()),
        ("VFIO_LAB_QEMU".to_string(), qemu_version.to_string()),
        // Which container serves /dev/vfio/vfio: the custom newest kernel has iommufd's.
        (
            "VFIO_LAB_CONTAINER".to_string(),
            if kernel == "custom-newest" { "compat" } else { "legacy" }.to_string(),
        ),
        ("VFIO_LAB_CONFORMANCE".to_string(), GUEST_CONFORMANCE.to_string()),
    ];
    if iommu == IommuMode::Virtio {
        v.push((VIOMMU.env.to_string(), VIOMMU.bdf.to_string()));
    }
    for d in devices(newer) {
        v.push((d.env.to_string(), d.bdf.to_string()));
        v.push((format!("{}_ID", d.env), d.id.to_string()));
        v.push((format!("{}_DRIVER", d.env), d.driver.unwrap_or("").to_string()));
    }
    v.push((
        "VFIO_LAB_DEVICES".into(),
        devices(newer).map(|d| d.env).collect::<Vec<_>>().join(" "),
    ));
    v.push(("VFIO_LAB_E1000E_ROM".into(), GUEST_E1000E_ROM.into()));
    v.push((
        "VFIO_LAB_MULTI_GROUP".into(),
        ["VFIO_LAB_EDU2", "VFIO_LAB_TESTDEV"]
            .iter()
            .map(|e| DEVICES.iter().find(|d| d.env == *e).map(|d| d.bdf).unwrap_or(""))
            .collect::<Vec<_>>()
            .join(" "),
    ));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(iommu: IommuMode) -> VmConfig {
        VmConfig {
            qemu: "qemu-system-x86_64".into(),
            firmware: vec![],
            qemu_env: vec![],
            newer_devices: false,
            accel: "tcg".into(),
            memory_mib: 2048,
            cpus: 2,
            kernel: "/k/bzImage".into(),
            initrd: "/k/initrd.gz".into(),
            nvme_image: "/tmp/a,b.img".into(),
            iommu,
            cmdline: "console=ttyS0".into(),
        }
    }

    #[test]
    fn every_device_has_an_explicit_address() {
        for d in devices(true).chain([&VIOMMU]) {
            let q = d.qemu.unwrap();
            assert!(q.contains("addr=0x"), "{q}");
            assert!(q.contains("bus="), "{q}");
        }
    }

    #[test]
    fn addresses_match_qemu_slots_on_the_root_bus() {
        for d in devices(true).chain([&VIOMMU]) {
            let q = d.qemu.unwrap();
            if q.contains("bus=pcie.0") {
                let slot = q.split("addr=0x").nth(1).unwrap();
                let slot = u8::from_str_radix(slot.split(',').next().unwrap(), 16).unwrap();
                assert_eq!(&d.bdf[..10], format!("0000:00:{slot:02x}"), "{q}");
            }
        }
    }

    #[test]
    fn addresses_are_unique() {
        let mut all: Vec<&str> = devices(true).map(|d| d.bdf).collect();
        all.push(VIOMMU.bdf);
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
    }

    #[test]
    fn iommu_device_only_in_virtio_mode() {
        let with = qemu_args(&cfg(IommuMode::Virtio));
        let without = qemu_args(&cfg(IommuMode::None));
        assert!(with.iter().any(|a| a.starts_with("virtio-iommu-pci")));
        assert!(!without.iter().any(|a| a.starts_with("virtio-iommu-pci")));
        assert!(guest_env("custom", IommuMode::Virtio, "7.2.22", false)
            .iter()
            .any(|(k, _)| k == "VFIO_LAB_VIOMMU"));
        assert!(!guest_env("custom", IommuMode::None, "7.2.22", false)
            .iter()
            .any(|(k, _)| k == "VFIO_LAB_VIOMMU"));
    }

    #[test]
    fn e1000e_rom_is_explicit_and_drive_path_is_escaped() {
        let a = qemu_args(&cfg(IommuMode::Virtio));
        assert!(a.iter().any(|x| x.contains(&format!("romfile={E1000E_ROM}"))));
        assert!(a.iter().any(|x| x.starts_with("file=/tmp/a,,b.img,")));
    }

    #[test]
    fn guest_env_names_the_multi_device_group() {
        let env = guest_env("stock", IommuMode::Virtio, "7.2.22", false);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(get("VFIO_LAB_KERNEL"), "stock");
        assert_eq!(get("VFIO_LAB_EDU"), "0000:00:04.0");
        assert_eq!(get("VFIO_LAB_MULTI_GROUP"), "0000:01:00.0 0000:01:00.1");
        assert_eq!(get("VFIO_LAB_NVME_DRIVER"), "nvme");
        assert_eq!(get("VFIO_LAB_EDU_DRIVER"), "");
        assert_eq!(get("VFIO_LAB_EDU_ID"), "1234:11e8");
        assert!(get("VFIO_LAB_DEVICES").split(' ').any(|d| d == "VFIO_LAB_TESTDEV"));
        assert!(!env.iter().any(|(k, _)| k == "VFIO_LAB_IGB"));
    }

    #[test]
    fn the_sriov_nic_only_with_a_newer_qemu() {
        let mut c = cfg(IommuMode::Virtio);
        assert!(!qemu_args(&c).iter().any(|a| a.starts_with("igb,")));
        c.newer_devices = true;
        c.firmware = vec!["/q/share".into()];
        let a = qemu_args(&c);
        assert!(a.iter().any(|a| a.starts_with("igb,netdev=lab1,")));
        assert!(a.iter().any(|a| a == "user,id=lab1,restrict=on"));
        assert!(a.windows(2).any(|w| w[0] == "-L" && w[1] == "/q/share"));
        let env = guest_env("newest", IommuMode::Virtio, "10.0.2", true);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(get("VFIO_LAB_IGB"), "0000:02:00.0");
        assert_eq!(get("VFIO_LAB_QEMU"), "10.0.2");
        assert_eq!(get("VFIO_LAB_CONTAINER"), "legacy");
        let compat = guest_env("custom-newest", IommuMode::Virtio, "10.0.2", true);
        assert!(compat.contains(&("VFIO_LAB_CONTAINER".into(), "compat".into())));
        assert!(get("VFIO_LAB_DEVICES").split(' ').any(|d| d == "VFIO_LAB_IGB"));
    }
}
