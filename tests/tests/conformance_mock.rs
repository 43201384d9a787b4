//! The conformance scenarios against the mock kernel, in every IOMMU mode: the mock must
//! answer exactly what the real 6.12 kernel answered in the VM lab
//! (`tests/conformance/edu-<mode>.expected`).

use vfio_core::container::IommuType;
use vfio_core::mock::{DeviceSpec, MockHost, MockKernelConfig};
use vfio_core::{Interface, PciAddress, Vfio};
use vfio_tests::conformance::{run, Report};

/// The lab's kernel as the mock models it: QEMU's virtio-iommu (4 KiB granule, whole
/// 64-bit space minus the MSI window, no interrupt remapping, so
/// allow_unsafe_interrupts), Linux 6.12, running as root.
fn lab_kernel() -> MockKernelConfig {
    MockKernelConfig {
        iova_ranges: vec![(0, 0xfedf_ffff), (0xfef0_0000, u64::MAX)],
        pgsize_bitmap: !0xfff,
        cap_ipc_lock: true,
        interrupt_remapping: false,
        allow_unsafe_interrupts: true,
        wrap_einval: true,
        ..MockKernelConfig::default()
    }
}

fn check(mode: &str, host: &MockHost, address: &str, interface: Interface) {
    let vfio = Vfio::new(host.kernel(), host.fs());
    let report = run(&vfio, PciAddress::parse(address).unwrap(), interface);
    let path = format!("{}/conformance/edu-{mode}.expected", env!("CARGO_MANIFEST_DIR"));
    let expected = Report::parse(&std::fs::read_to_string(&path).unwrap());
    let diff = report.diff(&expected);
    assert!(diff.is_empty(), "mock disagrees with the kernel ({mode}):\n{}", diff.join("\n"));
}

fn edu_host(config: MockKernelConfig) -> MockHost {
    let host = MockHost::new([DeviceSpec::edu("0000:00:04.0").group(1).driver("vfio-pci")]);
    host.set_kernel_config(config);
    host
}

#[test]
fn type1v2_matches_the_kernel() {
    check("type1v2", &edu_host(lab_kernel()), "0000:00:04.0", Interface::Container);
}

#[test]
fn type1_matches_the_kernel() {
    let host = edu_host(lab_kernel());
    check("type1", &host, "0000:00:04.0", Interface::ContainerWith(IommuType::Type1));
}

#[test]
fn iommufd_matches_the_kernel() {
    check("iommufd", &edu_host(lab_kernel()), "0000:00:04.0", Interface::Iommufd);
}

#[test]
fn noiommu_matches_the_kernel() {
    let host = MockHost::new([DeviceSpec::edu("0000:00:03.0").driver("vfio-pci")]);
    host.set_kernel_config(MockKernelConfig { noiommu: true, ..lab_kernel() });
    check("noiommu", &host, "0000:00:03.0", Interface::Auto);
}
