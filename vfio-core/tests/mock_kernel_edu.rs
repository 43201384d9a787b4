//! The edu device model behind the mock kernel: registers, interrupts and DMA through
//! the mock IOMMU, driven only through the kernel seam.

use std::ffi::CString;
use std::os::fd::AsRawFd;

use vfio_bindings::bindings::vfio::*;
use vfio_core::kernel::*;
use vfio_core::mock::models::EduModel;
use vfio_core::mock::*;
use vfio_core::PciAddress;
use vmm_sys_util::eventfd::EventFd;

const EDU: &str = "0000:00:04.0";

struct Rig {
    _host: MockHost,
    k: std::sync::Arc<MockKernel>,
    c: KernelFd,
    d: KernelFd,
}

fn rig() -> Rig {
    let host = MockHost::new([DeviceSpec::edu(EDU).group(1).driver("vfio-pci")]);
    assert!(host.attach_model(PciAddress::parse(EDU).unwrap(), 0, Box::new(EduModel::new())));
    let k = host.kernel();
    let c = k.open_container().unwrap();
    let g = k.open_group(GroupNode::Iommu(1)).unwrap();
    k.group_set_container(&g, &c).unwrap();
    k.set_iommu(&c, VFIO_TYPE1v2_IOMMU).unwrap();
    let d = k.group_get_device_fd(&g, &CString::new(EDU).unwrap()).unwrap();
    Rig { _host: host, k, c, d }
}

fn rd32(r: &Rig, off: u64) -> u32 {
    let mut b = [0u8; 4];
    assert_eq!(r.k.region_read(&r.d, off, &mut b).unwrap(), 4);
    u32::from_le_bytes(b)
}

fn wr32(r: &Rig, off: u64, v: u32) {
    r.k.region_write(&r.d, off, &v.to_le_bytes()).unwrap();
}

fn wr64(r: &Rig, off: u64, v: u64) {
    r.k.region_write(&r.d, off, &v.to_le_bytes()).unwrap();
}

fn enable(r: &Rig, index: u32) -> EventFd {
    let e = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let mut b = Vec::new();
    for v in [24u32, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, index, 0, 1] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&e.as_raw_fd().to_le_bytes());
    r.k.device_set_irqs(&r.d, &b).unwrap();
    e
}

#[test]
fn model_bar_is_trapped_not_mmapped() {
    let r = rig();
    let mut b = vec![0u8; 32];
    b[0..4].copy_from_slice(&32u32.to_le_bytes());
    r.k.device_get_region_info(&r.d, &mut b).unwrap();
    let flags = u32::from_le_bytes(b[4..8].try_into().unwrap());
    assert_eq!(flags, VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE);
    assert_eq!(r.k.mmap(&r.d, 0, 4096, libc::PROT_READ).unwrap_err(), Errno::EINVAL);
}

#[test]
fn ident_liveness_and_access_sizes() {
    let r = rig();
    assert_eq!(rd32(&r, 0), 0x0100_00ed);
    wr32(&r, 4, 0x1234_5678);
    assert_eq!(rd32(&r, 4), !0x1234_5678);
    // A 2-byte access below 0x80 reads all ones.
    let mut h = [0u8; 2];
    r.k.region_read(&r.d, 0, &mut h).unwrap();
    assert_eq!(h, [0xff, 0xff]);
}

#[test]
fn factorial_raises_msi_when_asked() {
    let r = rig();
    let e = enable(&r, 1);
    wr32(&r, 0x20, 0x80);
    wr32(&r, 0x08, 5);
    assert_eq!(rd32(&r, 0x08), 120);
    assert_eq!(rd32(&r, 0x24), 1);
    assert_eq!(e.read().unwrap(), 1);
    wr32(&r, 0x64, 1);
    assert_eq!(rd32(&r, 0x24), 0);
    // Without the status bit, no interrupt.
    wr32(&r, 0x20, 0);
    wr32(&r, 0x08, 4);
    assert_eq!(rd32(&r, 0x08), 24);
    assert!(e.read().is_err());
}

#[test]
fn raise_register_uses_intx_when_msi_is_off() {
    let r = rig();
    let e = enable(&r, 0);
    wr32(&r, 0x60, 0x10);
    assert_eq!(rd32(&r, 0x24), 0x10);
    assert_eq!(e.read().unwrap(), 1);
}

#[test]
fn dma_round_trip_through_the_iommu() {
    let r = rig();
    let e = enable(&r, 1);
    let mut mem = memmap2::MmapMut::map_anon(8192).unwrap();
    mem[..5].copy_from_slice(b"hello");
    let m = vfio_iommu_type1_dma_map {
        argsz: 32,
        flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        vaddr: mem.as_ptr() as u64,
        iova: 0x10_0000,
        size: 8192,
    };
    // SAFETY: the range is this test's memory or one no simulated device reaches.
    unsafe { r.k.map_dma(&r.c, &m) }.unwrap();
    // RAM -> edu buffer, with completion interrupt.
    wr64(&r, 0x80, 0x10_0000);
    wr64(&r, 0x88, 0x40000);
    wr64(&r, 0x90, 5);
    wr64(&r, 0x98, 0x1 | 0x4);
    assert_eq!(e.read().unwrap(), 1);
    assert_eq!(rd32(&r, 0x24), 0x100);
    wr32(&r, 0x64, 0x100);
    // edu buffer -> RAM at another page.
    wr64(&r, 0x80, 0x40000);
    wr64(&r, 0x88, 0x10_1000);
    wr64(&r, 0x90, 5);
    wr64(&r, 0x98, 0x1 | 0x2);
    assert_eq!(&mem[4096..4101], b"hello");
    // An unmapped IOVA faults: the data does not land, the interrupt still comes.
    wr64(&r, 0x80, 0x40000);
    wr64(&r, 0x88, 0x20_0000);
    wr64(&r, 0x98, 0x1 | 0x2 | 0x4);
    assert_eq!(e.read().unwrap(), 1);
}
