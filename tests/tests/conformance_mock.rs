//! The conformance scenarios against the mock kernel, in every IOMMU mode and for every
//! kernel the lab recorded: the mock must answer exactly what the real kernel answered in
//! the VM lab (`tests/conformance/<series>/edu-<mode>.expected`).

use vfio_core::container::IommuType;
use vfio_core::mock::{DeviceSpec, MockHost, MockKernelConfig};
use vfio_core::{Interface, PciAddress, Vfio};
use vfio_tests::conformance::{run, Report};

/// The lab's kernel of a series under a QEMU as the mock models it: Linux `series`
/// ([`MockKernelConfig::linux`]) behind QEMU's virtio-iommu (4 KiB granule, no interrupt
/// remapping, so allow_unsafe_interrupts), running as root. The aperture is QEMU's: the
/// whole 64-bit space on QEMU 7.2, 39 bits on QEMU 10 (q35's virtio-iommu `aw-bits`),
/// minus the MSI window either way.
fn lab_kernel(series: &str, qemu_major: u32) -> MockKernelConfig {
    let (major, minor) = series.split_once('.').unwrap();
    let top = if qemu_major >= 10 { (1 << 39) - 1 } else { u64::MAX };
    MockKernelConfig {
        iova_ranges: vec![(0, 0xfedf_ffff), (0xfef0_0000, top)],
        pgsize_bitmap: !0xfff,
        cap_ipc_lock: true,
        interrupt_remapping: false,
        allow_unsafe_interrupts: true,
        ..MockKernelConfig::linux(major.parse().unwrap(), minor.parse().unwrap())
    }
}

/// The QEMU major version a recorded file names in its source line.
fn qemu_major(text: &str) -> u32 {
    let source = text.lines().next().unwrap_or_default();
    let v = source.split(", QEMU ").nth(1).expect("the source line names QEMU");
    v.split('.').next().unwrap().parse().unwrap()
}

/// Whether a recorded file's source is one of the lab's custom kernels.
fn custom_kernel(text: &str) -> bool {
    text.lines().next().unwrap_or_default().contains("(custom")
}

fn check(path: &std::path::Path, host: &MockHost, address: &str, interface: Interface) {
    let vfio = Vfio::new(host.kernel(), host.fs());
    let report = run(&vfio, PciAddress::parse(address).unwrap(), interface);
    let expected = Report::parse(&std::fs::read_to_string(path).unwrap());
    let diff = report.diff(&expected);
    assert!(
        diff.is_empty(),
        "mock disagrees with the kernel ({}):\n{}",
        path.display(),
        diff.join("\n")
    );
}

fn edu_host(config: MockKernelConfig) -> MockHost {
    let host = MockHost::new([DeviceSpec::edu("0000:00:04.0").group(1).driver("vfio-pci")]);
    host.set_kernel_config(config);
    host
}

/// The mock, set up as the lab's kernel of `series` in `mode`, against every recorded
/// file: `tests/conformance/<series>/edu-<mode>.expected`.
#[test]
fn the_mock_answers_what_every_recorded_kernel_answered() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance");
    let mut checked = 0;
    for dir in std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()) {
        let series = dir.file_name().unwrap().to_string_lossy().into_owned();
        for f in std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()) {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            let mode = &name["edu-".len()..name.len() - ".expected".len()];
            let text = std::fs::read_to_string(&f).unwrap();
            let lab = lab_kernel(&series, qemu_major(&text));
            let config = MockKernelConfig {
                compat_container: mode.starts_with("compat-"),
                // The lab's custom kernels are built without PCI_P2PDMA, so without
                // CONFIG_VFIO_PCI_DMABUF; Debian's have it.
                dma_buf: lab.dma_buf && !custom_kernel(&text),
                ..lab
            };
            match mode.strip_prefix("compat-").unwrap_or(mode) {
                "type1v2" => check(&f, &edu_host(config), "0000:00:04.0", Interface::Container),
                "type1" => check(
                    &f,
                    &edu_host(config),
                    "0000:00:04.0",
                    Interface::ContainerWith(IommuType::Type1),
                ),
                "iommufd" => check(&f, &edu_host(config), "0000:00:04.0", Interface::Iommufd),
                "noiommu" => {
                    let host = MockHost::new([DeviceSpec::edu("0000:00:03.0").driver("vfio-pci")]);
                    host.set_kernel_config(MockKernelConfig { noiommu: true, ..config });
                    check(&f, &host, "0000:00:03.0", Interface::Auto)
                }
                other => panic!("{}: unknown mode {other}", f.display()),
            }
            checked += 1;
        }
    }
    assert!(checked >= 4, "{checked} recorded files");
}
