//! The mock kernel driven through the kernel seam: every rule checked by value or errno.

use std::ffi::CString;
use std::sync::Arc;

use iommufd_bindings::iommufd::{iommu_ioas_alloc, iommu_ioas_map, iommu_ioas_unmap};
use vfio_bindings::bindings::vfio::*;
use vfio_core::kernel::*;
use vfio_core::mock::*;
use vfio_core::PciAddress;
use vmm_sys_util::eventfd::EventFd;

const EDU: &str = "0000:00:04.0";
const MB: u64 = 1 << 20;
const PAGE: u64 = 4096;
/// A user address that is never mapped (below vm.mmap_min_addr).
const UNMAPPED: u64 = 0x1000;

fn pa(s: &str) -> PciAddress {
    PciAddress::parse(s).unwrap()
}

fn edu_host() -> (MockHost, Arc<MockKernel>) {
    let host = MockHost::new([DeviceSpec::edu(EDU).group(1).driver("vfio-pci")]);
    let k = host.kernel();
    (host, k)
}

/// Container with the group in and type1v2 set.
fn legacy(k: &MockKernel, group: u32) -> (KernelFd, KernelFd) {
    let c = k.open_container().unwrap();
    let g = k.open_group(GroupNode::Iommu(group)).unwrap();
    k.group_set_container(&g, &c).unwrap();
    k.set_iommu(&c, VFIO_TYPE1v2_IOMMU).unwrap();
    (c, g)
}

fn dev_fd(k: &MockKernel, g: &KernelFd, name: &str) -> KResult<KernelFd> {
    k.group_get_device_fd(g, &CString::new(name).unwrap())
}

fn anon(len: usize) -> memmap2::MmapMut {
    memmap2::MmapMut::map_anon(len).unwrap()
}

fn dma_map(k: &MockKernel, c: &KernelFd, vaddr: u64, iova: u64, size: u64) -> KResult<()> {
    let m = vfio_iommu_type1_dma_map {
        argsz: std::mem::size_of::<vfio_iommu_type1_dma_map>() as u32,
        flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        vaddr,
        iova,
        size,
    };
    // SAFETY: the range is this test's memory or one no simulated device reaches.
    unsafe { k.map_dma(c, &m) }
}

fn dma_unmap(k: &MockKernel, c: &KernelFd, iova: u64, size: u64, flags: u32) -> KResult<u64> {
    let mut u =
        vfio_iommu_type1_dma_unmap { argsz: 24, flags, iova, size, data: Default::default() };
    k.unmap_dma(c, &mut u).map(|_| u.size)
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

fn region_info(k: &MockKernel, d: &KernelFd, index: u32, room: usize) -> KResult<Vec<u8>> {
    let mut b = vec![0u8; room];
    b[0..4].copy_from_slice(&(room as u32).to_le_bytes());
    b[8..12].copy_from_slice(&index.to_le_bytes());
    k.device_get_region_info(d, &mut b).map(|_| b)
}

fn irq_set(flags: u32, index: u32, start: u32, count: u32, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&((20 + data.len()) as u32).to_le_bytes());
    for v in [flags, index, start, count] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn fds(list: &[i32]) -> Vec<u8> {
    list.iter().flat_map(|f| f.to_le_bytes()).collect()
}

fn nb_eventfd() -> EventFd {
    EventFd::new(libc::EFD_NONBLOCK).unwrap()
}

/// The eventfd's counter (0 when it was not signalled).
fn fired(e: &EventFd) -> u64 {
    e.read().unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Groups and containers.

#[test]
fn group_node_exists_only_while_a_member_is_on_vfio_pci() {
    let host = MockHost::new([DeviceSpec::edu(EDU).group(3).driver("edu-host")]);
    let k = host.kernel();
    assert_eq!(k.open_group(GroupNode::Iommu(3)).unwrap_err(), Errno::ENOENT);
    host.set_driver(pa(EDU), Some("vfio-pci"));
    let g = k.open_group(GroupNode::Iommu(3)).unwrap();
    // One open at a time.
    assert_eq!(k.open_group(GroupNode::Iommu(3)).unwrap_err(), Errno::EBUSY);
    k.close(g);
    let g = k.open_group(GroupNode::Iommu(3)).unwrap();
    assert!(
        std::fs::read_link(format!("/proc/self/fd/{}", g.raw())).is_ok(),
        "mock fds are real descriptors of the process"
    );
    k.close(g);
    assert_eq!(k.open_fds(), 0);
}

#[test]
fn group_viability_follows_member_drivers() {
    let host = MockHost::new([
        DeviceSpec::edu("0000:02:00.0").group(5).driver("vfio-pci"),
        DeviceSpec::edu("0000:02:00.1").group(5).driver("e1000e"),
        DeviceSpec::bridge("0000:00:1c.0").group(5),
    ]);
    let k = host.kernel();
    let c = k.open_container().unwrap();
    let g = k.open_group(GroupNode::Iommu(5)).unwrap();
    assert_eq!(k.group_get_status(&g).unwrap(), 0);
    // iommu_group_claim_dma_owner refuses while a host driver owns DMA.
    assert_eq!(k.group_set_container(&g, &c).unwrap_err(), Errno::EPERM);
    host.set_driver(pa("0000:02:00.1"), None);
    assert_eq!(k.group_get_status(&g).unwrap(), VFIO_GROUP_FLAGS_VIABLE);
    // pcieport claims no DMA ownership either.
    host.set_driver(pa("0000:00:1c.0"), Some("pcieport"));
    assert_eq!(k.group_get_status(&g).unwrap(), VFIO_GROUP_FLAGS_VIABLE);
    k.group_set_container(&g, &c).unwrap();
    assert_eq!(
        k.group_get_status(&g).unwrap(),
        VFIO_GROUP_FLAGS_VIABLE | VFIO_GROUP_FLAGS_CONTAINER_SET
    );
    // A second SET_CONTAINER on the same group.
    assert_eq!(k.group_set_container(&g, &c).unwrap_err(), Errno::EINVAL);
}

#[test]
fn container_ordering_and_extensions() {
    let (_h, k) = edu_host();
    let c = k.open_container().unwrap();
    assert_eq!(k.get_api_version(&c).unwrap(), 0);
    assert_eq!(k.check_extension(&c, VFIO_TYPE1_IOMMU).unwrap(), 1);
    assert_eq!(k.check_extension(&c, VFIO_TYPE1v2_IOMMU).unwrap(), 1);
    assert_eq!(k.check_extension(&c, VFIO_NOIOMMU_IOMMU).unwrap(), 0);
    assert_eq!(k.check_extension(&c, 0xdead).unwrap(), 0);
    // SET_IOMMU before any group is in.
    assert_eq!(k.set_iommu(&c, VFIO_TYPE1v2_IOMMU).unwrap_err(), Errno::EINVAL);
    let g = k.open_group(GroupNode::Iommu(1)).unwrap();
    // GET_DEVICE_FD without a container, then without an IOMMU.
    assert_eq!(dev_fd(&k, &g, EDU).unwrap_err(), Errno::EINVAL);
    k.group_set_container(&g, &c).unwrap();
    assert_eq!(dev_fd(&k, &g, EDU).unwrap_err(), Errno::EINVAL);
    // An unknown type finds no driver.
    assert_eq!(k.set_iommu(&c, VFIO_NOIOMMU_IOMMU).unwrap_err(), Errno::ENODEV);
    k.set_iommu(&c, VFIO_TYPE1v2_IOMMU).unwrap();
    assert_eq!(k.set_iommu(&c, VFIO_TYPE1v2_IOMMU).unwrap_err(), Errno::EINVAL);
    // A name not in the group.
    assert_eq!(dev_fd(&k, &g, "0000:00:05.0").unwrap_err(), Errno::ENODEV);
    let d = dev_fd(&k, &g, EDU).unwrap();
    // cdev-only ioctls on a group-opened device.
    let mut at = vfio_device_attach_iommufd_pt { argsz: 16, pt_id: 1, ..Default::default() };
    assert_eq!(k.device_attach_iommufd_pt(&d, &mut at).unwrap_err(), Errno::ENOTTY);
    let mut bind = vfio_device_bind_iommufd { argsz: 24, iommufd: 0, ..Default::default() };
    assert_eq!(k.device_bind_iommufd(&d, &mut bind).unwrap_err(), Errno::EINVAL);
    k.close(d);
}

#[test]
fn type1_missing_or_interrupt_remapping_absent() {
    let (host, k) = edu_host();
    host.set_kernel_config(MockKernelConfig { type1v2: false, ..Default::default() });
    let c = k.open_container().unwrap();
    assert_eq!(k.check_extension(&c, VFIO_TYPE1v2_IOMMU).unwrap(), 0);
    let g = k.open_group(GroupNode::Iommu(1)).unwrap();
    k.group_set_container(&g, &c).unwrap();
    assert_eq!(k.set_iommu(&c, VFIO_TYPE1v2_IOMMU).unwrap_err(), Errno::ENODEV);
    host.set_kernel_config(MockKernelConfig { interrupt_remapping: false, ..Default::default() });
    assert_eq!(k.set_iommu(&c, VFIO_TYPE1v2_IOMMU).unwrap_err(), Errno::EPERM);
    host.set_kernel_config(MockKernelConfig {
        interrupt_remapping: false,
        allow_unsafe_interrupts: true,
        ..Default::default()
    });
    k.set_iommu(&c, VFIO_TYPE1v2_IOMMU).unwrap();
}

#[test]
fn groups_share_a_container_and_the_last_close_drops_the_iommu() {
    let host = MockHost::new([
        DeviceSpec::edu("0000:00:04.0").group(1).driver("vfio-pci"),
        DeviceSpec::edu("0000:00:05.0").group(2).driver("vfio-pci"),
    ]);
    let k = host.kernel();
    let (c, g1) = legacy(&k, 1);
    let g2 = k.open_group(GroupNode::Iommu(2)).unwrap();
    k.group_set_container(&g2, &c).unwrap();
    let d2 = dev_fd(&k, &g2, "0000:00:05.0").unwrap();
    let mem = anon(2 * PAGE as usize);
    dma_map(&k, &c, mem.as_ptr() as u64, 0x10_0000, 2 * PAGE).unwrap();
    assert_eq!(k.dma_mappings(), 1);
    k.close(g1);
    assert_eq!(k.dma_mappings(), 1, "group 2 still holds the container");
    // The device fd holds group 2 even after its fd is closed.
    k.close(g2);
    assert_eq!(k.dma_mappings(), 1);
    assert_eq!(k.open_group(GroupNode::Iommu(2)).unwrap_err(), Errno::EBUSY);
    assert_eq!(k.locked_bytes(), 2 * PAGE);
    k.close(d2);
    assert_eq!(k.dma_mappings(), 0);
    assert_eq!(k.locked_bytes(), 0);
    // The container is back to no IOMMU: map calls fail, SET_IOMMU needs a group again.
    assert_eq!(dma_map(&k, &c, mem.as_ptr() as u64, 0, PAGE).unwrap_err(), Errno::EINVAL);
    assert_eq!(k.set_iommu(&c, VFIO_TYPE1v2_IOMMU).unwrap_err(), Errno::EINVAL);
    k.close(c);
    assert_eq!(k.open_fds(), 0);
}

#[test]
fn unset_container_is_busy_while_a_device_is_open() {
    let (_h, k) = edu_host();
    let (_c, g) = legacy(&k, 1);
    let d = dev_fd(&k, &g, EDU).unwrap();
    assert_eq!(k.group_unset_container(&g).unwrap_err(), Errno::EBUSY);
    k.close(d);
    k.group_unset_container(&g).unwrap();
    assert_eq!(k.group_unset_container(&g).unwrap_err(), Errno::EINVAL);
    assert_eq!(k.group_get_status(&g).unwrap(), VFIO_GROUP_FLAGS_VIABLE);
}

#[test]
fn set_container_needs_a_container_fd() {
    let (_h, k) = edu_host();
    let g = k.open_group(GroupNode::Iommu(1)).unwrap();
    let io = k.open_iommufd().unwrap();
    assert_eq!(k.group_set_container(&g, &io).unwrap_err(), Errno::EBADFD);
    assert_eq!(
        k.group_set_container(&g, &KernelFd::from_raw(MOCK_FD_BASE + 999)).unwrap_err(),
        Errno::EBADF
    );
}

// ---------------------------------------------------------------------------------------
// Type1 info and DMA.

#[test]
fn iommu_info_reports_page_sizes_and_capability_chain() {
    let (_h, k) = edu_host();
    let (c, _g) = legacy(&k, 1);
    // Too small for the chain: argsz raised, cap_offset 0.
    let mut small = vec![0u8; 24];
    small[0..4].copy_from_slice(&24u32.to_le_bytes());
    k.iommu_get_info(&c, &mut small).unwrap();
    let need = u32_at(&small, 0) as usize;
    assert_eq!(need, 24 + 32 + 16 + 48);
    assert_eq!(u32_at(&small, 4), VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS);
    assert_eq!(u64_at(&small, 8), 0x4020_1000);
    assert_eq!(u32_at(&small, 16), 0);
    // Below minsz.
    let mut tiny = vec![0u8; 24];
    tiny[0..4].copy_from_slice(&8u32.to_le_bytes());
    assert_eq!(k.iommu_get_info(&c, &mut tiny).unwrap_err(), Errno::EINVAL);

    let mem = anon(PAGE as usize);
    dma_map(&k, &c, mem.as_ptr() as u64, 0, PAGE).unwrap();
    let mut b = vec![0u8; need];
    b[0..4].copy_from_slice(&(need as u32).to_le_bytes());
    k.iommu_get_info(&c, &mut b).unwrap();
    assert_eq!(u32_at(&b, 16), 24);
    // Walk the chain by id.
    let mut at = u32_at(&b, 16) as usize;
    let mut seen = Vec::new();
    while at != 0 {
        let id = u16::from_le_bytes([b[at], b[at + 1]]) as u32;
        seen.push(id);
        match id {
            VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL => assert_eq!(u32_at(&b, at + 8), 65534),
            VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE => {
                assert_eq!(u32_at(&b, at + 8), 2);
                assert_eq!(u64_at(&b, at + 16), 0);
                assert_eq!(u64_at(&b, at + 24), 0xfedf_ffff);
                assert_eq!(u64_at(&b, at + 32), 0xfef0_0000);
                assert_eq!(u64_at(&b, at + 40), (1 << 48) - 1);
            }
            VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION => assert_eq!(u64_at(&b, at + 16), 0x4020_1000),
            other => panic!("unexpected cap {other}"),
        }
        at = u32_at(&b, at + 4) as usize;
    }
    assert_eq!(
        seen,
        vec![
            VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION,
            VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL,
            VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE
        ]
    );
}

#[test]
fn map_dma_argument_checks() {
    let (host, k) = edu_host();
    let (c, _g) = legacy(&k, 1);
    let mem = anon(4 * PAGE as usize);
    let va = mem.as_ptr() as u64;
    assert_eq!(dma_map(&k, &c, va, 0, 0).unwrap_err(), Errno::EINVAL);
    assert_eq!(dma_map(&k, &c, va, 0x800, PAGE).unwrap_err(), Errno::EINVAL);
    assert_eq!(dma_map(&k, &c, va + 1, 0, PAGE).unwrap_err(), Errno::EINVAL);
    let bad = vfio_iommu_type1_dma_map { argsz: 32, flags: 0x80, vaddr: va, iova: 0, size: PAGE };
    // SAFETY: the range is this test's memory or one no simulated device reaches.
    assert_eq!(unsafe { k.map_dma(&c, &bad) }.unwrap_err(), Errno::EINVAL);
    let noprot = vfio_iommu_type1_dma_map { argsz: 32, flags: 0, vaddr: va, iova: 0, size: PAGE };
    // SAFETY: the range is this test's memory or one no simulated device reaches.
    assert_eq!(unsafe { k.map_dma(&c, &noprot) }.unwrap_err(), Errno::EINVAL);
    // The MSI window is outside the usable ranges.
    assert_eq!(dma_map(&k, &c, va, 0xfee0_0000, PAGE).unwrap_err(), Errno::EINVAL);
    // Crossing 2^64.
    assert_eq!(dma_map(&k, &c, va, u64::MAX - PAGE + 1, 2 * PAGE).unwrap_err(), Errno::EOVERFLOW);
    dma_map(&k, &c, va, 0x10000, 2 * PAGE).unwrap();
    assert_eq!(dma_map(&k, &c, va, 0x11000, 2 * PAGE).unwrap_err(), Errno::EEXIST);
    assert_eq!(dma_map(&k, &c, va, 0xf000, 2 * PAGE).unwrap_err(), Errno::EEXIST);
    // A device-writable mapping of read-only memory cannot be pinned for write.
    let ro = anon(PAGE as usize).make_read_only().unwrap();
    assert_eq!(dma_map(&k, &c, ro.as_ptr() as u64, 0x80000, PAGE).unwrap_err(), Errno::EFAULT);
    let read_only = vfio_iommu_type1_dma_map {
        argsz: 32,
        flags: VFIO_DMA_MAP_FLAG_READ,
        vaddr: ro.as_ptr() as u64,
        iova: 0x80000,
        size: PAGE,
    };
    // SAFETY: the range is this test's memory or one no simulated device reaches.
    unsafe { k.map_dma(&c, &read_only) }.unwrap();
    // Memory that is not mapped in the process (nothing is ever mapped below
    // vm.mmap_min_addr, so page 1 is a stable unmapped address).
    assert_eq!(dma_map(&k, &c, UNMAPPED, 0x40000, PAGE).unwrap_err(), Errno::EFAULT);
    drop(mem);
    // Older kernels answer the wrap with EINVAL.
    host.set_kernel_config(MockKernelConfig { wrap_einval: true, ..Default::default() });
    let mem = anon(PAGE as usize);
    assert_eq!(
        dma_map(&k, &c, mem.as_ptr() as u64, u64::MAX - PAGE + 1, 2 * PAGE).unwrap_err(),
        Errno::EINVAL
    );
}

#[test]
fn map_dma_entry_limit_and_memlock() {
    let (host, k) = edu_host();
    host.set_kernel_config(MockKernelConfig {
        dma_entry_limit: 2,
        memlock_limit: 3 * PAGE,
        ..Default::default()
    });
    let (c, _g) = legacy(&k, 1);
    let mem = anon(8 * PAGE as usize);
    let va = mem.as_ptr() as u64;
    dma_map(&k, &c, va, 0, PAGE).unwrap();
    // Two more pages would reach 4 pages > 3 allowed.
    assert_eq!(dma_map(&k, &c, va, 0x10000, 3 * PAGE).unwrap_err(), Errno::ENOMEM);
    dma_map(&k, &c, va, 0x10000, PAGE).unwrap();
    assert_eq!(dma_map(&k, &c, va, 0x20000, PAGE).unwrap_err(), Errno::ENOSPC);
    assert_eq!(k.memlock_limit().unwrap(), 3 * PAGE);
    // CAP_IPC_LOCK lifts the memlock limit.
    dma_unmap(&k, &c, 0x10000, PAGE, 0).unwrap();
    host.set_kernel_config(MockKernelConfig {
        memlock_limit: PAGE,
        cap_ipc_lock: true,
        ..Default::default()
    });
    dma_map(&k, &c, va, 0x40000, 4 * PAGE).unwrap();
}

#[test]
fn unmap_dma_v2_semantics() {
    let (_h, k) = edu_host();
    let (c, _g) = legacy(&k, 1);
    let mem = anon(8 * PAGE as usize);
    let va = mem.as_ptr() as u64;
    dma_map(&k, &c, va, 0x10000, 4 * PAGE).unwrap();
    dma_map(&k, &c, va, 0x20000, 2 * PAGE).unwrap();
    // Bisecting at either end.
    assert_eq!(dma_unmap(&k, &c, 0x11000, PAGE, 0).unwrap_err(), Errno::EINVAL);
    assert_eq!(dma_unmap(&k, &c, 0x10000, PAGE, 0).unwrap_err(), Errno::EINVAL);
    // Nothing there: success, size 0.
    assert_eq!(dma_unmap(&k, &c, 0x80000, PAGE, 0).unwrap(), 0);
    // Misaligned, zero, wrapping.
    assert_eq!(dma_unmap(&k, &c, 0x10800, PAGE, 0).unwrap_err(), Errno::EINVAL);
    assert_eq!(dma_unmap(&k, &c, 0x10000, 0, 0).unwrap_err(), Errno::EINVAL);
    assert_eq!(dma_unmap(&k, &c, u64::MAX - PAGE + 1, 2 * PAGE, 0).unwrap_err(), Errno::EOVERFLOW);
    // Exactly the mapping: its size.
    assert_eq!(dma_unmap(&k, &c, 0x10000, 4 * PAGE, 0).unwrap(), 4 * PAGE);
    // ALL needs iova = size = 0.
    assert_eq!(dma_unmap(&k, &c, 0, PAGE, VFIO_DMA_UNMAP_FLAG_ALL).unwrap_err(), Errno::EINVAL);
    dma_map(&k, &c, va, 0x40000, PAGE).unwrap();
    assert_eq!(dma_unmap(&k, &c, 0, 0, VFIO_DMA_UNMAP_FLAG_ALL).unwrap(), 3 * PAGE);
    assert_eq!(k.dma_mappings(), 0);
    assert_eq!(dma_unmap(&k, &c, 0, 0, 0x100).unwrap_err(), Errno::EINVAL);
}

#[test]
fn update_vaddr_invalidates_then_remaps() {
    let (_h, k) = edu_host();
    let c = k.open_container().unwrap();
    assert_eq!(k.check_extension(&c, VFIO_UPDATE_VADDR).unwrap(), 0, "no IOMMU yet");
    let g = k.open_group(GroupNode::Iommu(1)).unwrap();
    k.group_set_container(&g, &c).unwrap();
    k.set_iommu(&c, VFIO_TYPE1v2_IOMMU).unwrap();
    assert_eq!(k.check_extension(&c, VFIO_UPDATE_VADDR).unwrap(), 1);
    let (a, b) = (anon(PAGE as usize), anon(PAGE as usize));
    dma_map(&k, &c, a.as_ptr() as u64, 0x10000, PAGE).unwrap();
    let vaddr = |va: u64, iova: u64| vfio_iommu_type1_dma_map {
        argsz: 32,
        flags: VFIO_DMA_MAP_FLAG_VADDR,
        vaddr: va,
        iova,
        size: PAGE,
    };
    // Not invalidated yet; nothing at that IOVA.
    // SAFETY: the range is this test's memory or one no simulated device reaches.
    assert_eq!(
        unsafe { k.map_dma(&c, &vaddr(b.as_ptr() as u64, 0x10000)) }.unwrap_err(),
        Errno::EINVAL
    );
    // SAFETY: the range is this test's memory or one no simulated device reaches.
    assert_eq!(
        unsafe { k.map_dma(&c, &vaddr(b.as_ptr() as u64, 0x50000)) }.unwrap_err(),
        Errno::ENOENT
    );
    assert_eq!(dma_unmap(&k, &c, 0x10000, PAGE, VFIO_DMA_UNMAP_FLAG_VADDR).unwrap(), PAGE);
    assert_eq!(k.dma_mappings(), 1, "the mapping stays");
    assert_eq!(
        dma_unmap(&k, &c, 0x10000, PAGE, VFIO_DMA_UNMAP_FLAG_VADDR).unwrap_err(),
        Errno::EINVAL
    );
    // SAFETY: the range is this test's memory or one no simulated device reaches.
    unsafe { k.map_dma(&c, &vaddr(b.as_ptr() as u64, 0x10000)) }.unwrap();
}

#[test]
fn unmap_dma_v1_semantics() {
    let (_h, k) = edu_host();
    let c = k.open_container().unwrap();
    let g = k.open_group(GroupNode::Iommu(1)).unwrap();
    k.group_set_container(&g, &c).unwrap();
    k.set_iommu(&c, VFIO_TYPE1_IOMMU).unwrap();
    let mem = anon(4 * PAGE as usize);
    dma_map(&k, &c, mem.as_ptr() as u64, 0x10000, 4 * PAGE).unwrap();
    // Offset into a mapping: success with nothing unmapped.
    assert_eq!(dma_unmap(&k, &c, 0x11000, PAGE, 0).unwrap(), 0);
    assert_eq!(k.dma_mappings(), 1);
    // Covering the first iova: the whole mapping goes.
    assert_eq!(dma_unmap(&k, &c, 0x10000, PAGE, 0).unwrap(), 4 * PAGE);
    assert_eq!(k.dma_mappings(), 0);
}

// ---------------------------------------------------------------------------------------
// iommufd.

fn ioas(k: &MockKernel, io: &KernelFd) -> u32 {
    let mut a = iommu_ioas_alloc { size: 12, flags: 0, out_ioas_id: 0 };
    k.ioas_alloc(io, &mut a).unwrap();
    a.out_ioas_id
}

fn ioas_map(
    k: &MockKernel,
    io: &KernelFd,
    id: u32,
    va: u64,
    len: u64,
    iova: Option<u64>,
) -> KResult<u64> {
    let mut m = iommu_ioas_map {
        size: 40,
        flags: 2 | 4 | u32::from(iova.is_some()),
        ioas_id: id,
        __reserved: 0,
        user_va: va,
        length: len,
        iova: iova.unwrap_or(0),
    };
    // SAFETY: the range is this test's memory or one no simulated device reaches.
    unsafe { k.ioas_map(io, &mut m) }.map(|_| m.iova)
}

fn ioas_unmap(k: &MockKernel, io: &KernelFd, id: u32, iova: u64, len: u64) -> KResult<u64> {
    let mut u = iommu_ioas_unmap { size: 24, ioas_id: id, iova, length: len };
    k.ioas_unmap(io, &mut u).map(|_| u.length)
}

fn ranges(k: &MockKernel, io: &KernelFd, id: u32, room: u32) -> (KResult<()>, Vec<u8>) {
    let mut b = vec![0u8; 32 + 16 * room as usize];
    b[4..8].copy_from_slice(&id.to_le_bytes());
    b[8..12].copy_from_slice(&room.to_le_bytes());
    let r = k.ioas_iova_ranges(io, &mut b);
    (r, b)
}

#[test]
fn iommufd_node_follows_config() {
    let (host, k) = edu_host();
    host.set_kernel_config(MockKernelConfig { iommufd: false, ..Default::default() });
    assert_eq!(k.open_iommufd().unwrap_err(), Errno::ENOENT);
    assert_eq!(k.open_device_cdev(0).unwrap_err(), Errno::ENOENT);
    host.set_kernel_config(MockKernelConfig::default());
    let io = k.open_iommufd().unwrap();
    let d = k.open_device_cdev(0).unwrap();
    assert_eq!(k.open_device_cdev(1).unwrap_err(), Errno::ENOENT);
    k.close(d);
    k.close(io);
    host.set_kernel_config(MockKernelConfig { container: false, ..Default::default() });
    assert_eq!(k.open_container().unwrap_err(), Errno::ENOENT);
}

#[test]
fn ioas_map_chooses_iova_and_unmaps() {
    let (_h, k) = edu_host();
    let io = k.open_iommufd().unwrap();
    let a = ioas(&k, &io);
    let b = ioas(&k, &io);
    assert_eq!((a, b), (1, 2));
    let mem = anon(16 * PAGE as usize);
    let va = mem.as_ptr() as u64;
    // Kernel-chosen: never 0, aligned to min(roundup_pow2(len), alignment of va).
    let i1 = ioas_map(&k, &io, a, va, PAGE, None).unwrap();
    assert_eq!(i1, PAGE);
    let i2 = ioas_map(&k, &io, a, va, 4 * PAGE, None).unwrap();
    assert_eq!(i2 % (4 * PAGE).min(1 << va.trailing_zeros()), 0);
    assert!(i2 >= 2 * PAGE);
    // Fixed IOVA overlapping.
    assert_eq!(ioas_map(&k, &io, a, va, PAGE, Some(i1)).unwrap_err(), Errno::EEXIST);
    let f = ioas_map(&k, &io, a, va, 2 * PAGE, Some(0x100_0000)).unwrap();
    assert_eq!(f, 0x100_0000);
    // Bad flags, no prot, unknown IOAS, zero length.
    let mut m = iommu_ioas_map {
        size: 40,
        flags: 0x40,
        ioas_id: a,
        __reserved: 0,
        user_va: va,
        length: PAGE,
        iova: 0,
    };
    // SAFETY: the range is this test's memory or one no simulated device reaches.
    assert_eq!(unsafe { k.ioas_map(&io, &mut m) }.unwrap_err(), Errno::EOPNOTSUPP);
    m.flags = 1;
    // SAFETY: the range is this test's memory or one no simulated device reaches.
    assert_eq!(unsafe { k.ioas_map(&io, &mut m) }.unwrap_err(), Errno::EINVAL);
    assert_eq!(ioas_map(&k, &io, 77, va, PAGE, None).unwrap_err(), Errno::ENOENT);
    // iopt_alloc_pages refuses a zero length before any IOVA is looked for.
    assert_eq!(ioas_map(&k, &io, a, va, 0, None).unwrap_err(), Errno::EINVAL);
    assert_eq!(ioas_map(&k, &io, a, va, 0, Some(0x900_0000)).unwrap_err(), Errno::EINVAL);
    // Partial area: ENOENT; nothing: ENOENT (seen on 6.12); all: the total length, and 0
    // once empty.
    assert_eq!(ioas_unmap(&k, &io, a, f, PAGE).unwrap_err(), Errno::ENOENT);
    assert_eq!(ioas_unmap(&k, &io, a, 0x4000_0000, PAGE).unwrap_err(), Errno::ENOENT);
    assert_eq!(ioas_unmap(&k, &io, a, i1, PAGE).unwrap(), PAGE);
    assert_eq!(k.dma_mappings(), 2);
    assert_eq!(ioas_unmap(&k, &io, a, 0, u64::MAX).unwrap(), 6 * PAGE);
    assert_eq!(k.dma_mappings(), 0);
    assert_eq!(ioas_unmap(&k, &io, a, 0, u64::MAX).unwrap(), 0);
    assert_eq!(ioas_unmap(&k, &io, a, 0, 0).unwrap_err(), Errno::EINVAL);
    // Destroy: ENOENT for unknown ids.
    k.iommufd_destroy(&io, b).unwrap();
    assert_eq!(k.iommufd_destroy(&io, b).unwrap_err(), Errno::ENOENT);
}

#[test]
fn iova_ranges_grow_from_whole_space_to_device_ranges() {
    let (_h, k) = edu_host();
    let io = k.open_iommufd().unwrap();
    let a = ioas(&k, &io);
    let (r, b) = ranges(&k, &io, a, 1);
    r.unwrap();
    assert_eq!(u32_at(&b, 8), 1);
    assert_eq!((u64_at(&b, 32), u64_at(&b, 40)), (0, u64::MAX));
    assert_eq!(u64_at(&b, 24), 1);
    // Attach a device: its usable ranges apply.
    let d = k.open_device_cdev(0).unwrap();
    let mut bind = vfio_device_bind_iommufd { argsz: 24, iommufd: io.raw(), ..Default::default() };
    k.device_bind_iommufd(&d, &mut bind).unwrap();
    let mut at = vfio_device_attach_iommufd_pt { argsz: 16, pt_id: a, ..Default::default() };
    k.device_attach_iommufd_pt(&d, &mut at).unwrap();
    let (r, b) = ranges(&k, &io, a, 1);
    assert_eq!(r.unwrap_err(), Errno::EMSGSIZE);
    assert_eq!(u32_at(&b, 8), 2);
    assert_eq!((u64_at(&b, 32), u64_at(&b, 40)), (0, 0xfedf_ffff));
    let (r, b) = ranges(&k, &io, a, 2);
    r.unwrap();
    assert_eq!((u64_at(&b, 48), u64_at(&b, 56)), (0xfef0_0000, (1 << 48) - 1));
    assert_eq!(u64_at(&b, 24), PAGE);
    // Busy objects cannot be destroyed.
    assert_eq!(k.iommufd_destroy(&io, a).unwrap_err(), Errno::EBUSY);
    assert_eq!(k.iommufd_destroy(&io, bind.out_devid).unwrap_err(), Errno::EBUSY);
}

#[test]
fn cdev_needs_bind_then_attach_for_dma() {
    let (host, k) = edu_host();
    let io = k.open_iommufd().unwrap();
    let d = k.open_device_cdev(0).unwrap();
    // Every device ioctl before BIND_IOMMUFD fails with EINVAL.
    let mut info = vec![0u8; 24];
    info[0..4].copy_from_slice(&24u32.to_le_bytes());
    assert_eq!(k.device_get_info(&d, &mut info).unwrap_err(), Errno::EINVAL);
    assert_eq!(k.region_read(&d, 7 << 40, &mut [0u8; 4]).unwrap_err(), Errno::EINVAL);
    assert_eq!(k.device_reset(&d).unwrap_err(), Errno::EINVAL);
    // Bad bind arguments.
    let mut bind = vfio_device_bind_iommufd { argsz: 24, iommufd: -1, ..Default::default() };
    assert_eq!(k.device_bind_iommufd(&d, &mut bind).unwrap_err(), Errno::EINVAL);
    bind.iommufd = MOCK_FD_BASE + 4242;
    assert_eq!(k.device_bind_iommufd(&d, &mut bind).unwrap_err(), Errno::EBADF);
    let c = k.open_container().unwrap();
    bind.iommufd = c.raw();
    assert_eq!(k.device_bind_iommufd(&d, &mut bind).unwrap_err(), Errno::EBADFD);
    bind.iommufd = io.raw();
    k.device_bind_iommufd(&d, &mut bind).unwrap();
    assert!(bind.out_devid >= 1);
    assert_eq!(k.device_bind_iommufd(&d, &mut bind).unwrap_err(), Errno::EINVAL);
    k.device_get_info(&d, &mut info).unwrap();
    // The group cannot be opened while a member is bound through its cdev.
    assert_eq!(k.open_group(GroupNode::Iommu(1)).unwrap_err(), Errno::EBUSY);

    let a = ioas(&k, &io);
    let mut mem = anon(PAGE as usize);
    mem[..4].copy_from_slice(b"edu!");
    let iova = ioas_map(&k, &io, a, mem.as_ptr() as u64, PAGE, Some(0x10000)).unwrap();
    let mut got = [0u8; 4];
    // No DMA before attach: an IOMMU fault.
    assert_eq!(host.dma_read(pa(EDU), iova, &mut got).unwrap_err(), Errno::EFAULT);
    let mut at = vfio_device_attach_iommufd_pt { argsz: 16, pt_id: 999, ..Default::default() };
    assert_eq!(k.device_attach_iommufd_pt(&d, &mut at).unwrap_err(), Errno::ENOENT);
    at.pt_id = a;
    k.device_attach_iommufd_pt(&d, &mut at).unwrap();
    assert_ne!(at.pt_id, a, "attaching to an IOAS reports the auto domain's id");
    host.dma_read(pa(EDU), iova, &mut got).unwrap();
    assert_eq!(&got, b"edu!");
    host.dma_write(pa(EDU), iova + 8, b"back").unwrap();
    assert_eq!(&mem[8..12], b"back");
    assert_eq!(host.dma_read(pa(EDU), iova + PAGE, &mut got).unwrap_err(), Errno::EFAULT);
    let mut det = vfio_device_detach_iommufd_pt { argsz: 12, ..Default::default() };
    k.device_detach_iommufd_pt(&d, &mut det).unwrap();
    assert_eq!(host.dma_read(pa(EDU), iova, &mut got).unwrap_err(), Errno::EFAULT);
    k.close(d);
    k.close(io);
    k.close(c);
    assert_eq!(k.open_fds(), 0);
    assert_eq!(k.dma_mappings(), 0);
}

#[test]
fn iommufd_pins_at_attach_against_memlock() {
    let (host, k) = edu_host();
    host.set_kernel_config(MockKernelConfig { memlock_limit: 2 * PAGE, ..Default::default() });
    let io = k.open_iommufd().unwrap();
    let a = ioas(&k, &io);
    let mem = anon(4 * PAGE as usize);
    // Without a domain nothing is pinned, so the map succeeds.
    ioas_map(&k, &io, a, mem.as_ptr() as u64, 4 * PAGE, Some(0x10000)).unwrap();
    assert_eq!(k.locked_bytes(), 0);
    let d = k.open_device_cdev(0).unwrap();
    let mut bind = vfio_device_bind_iommufd { argsz: 24, iommufd: io.raw(), ..Default::default() };
    k.device_bind_iommufd(&d, &mut bind).unwrap();
    let mut at = vfio_device_attach_iommufd_pt { argsz: 16, pt_id: a, ..Default::default() };
    assert_eq!(k.device_attach_iommufd_pt(&d, &mut at).unwrap_err(), Errno::ENOMEM);
    ioas_unmap(&k, &io, a, 0, u64::MAX).unwrap();
    k.device_attach_iommufd_pt(&d, &mut at).unwrap();
    ioas_map(&k, &io, a, mem.as_ptr() as u64, PAGE, Some(0x10000)).unwrap();
    assert_eq!(k.locked_bytes(), PAGE);
    assert_eq!(
        ioas_map(&k, &io, a, mem.as_ptr() as u64, 2 * PAGE, Some(0x20000)).unwrap_err(),
        Errno::ENOMEM
    );
    // With a domain the pages are pinned at map time: unmapped memory faults.
    assert_eq!(ioas_map(&k, &io, a, UNMAPPED, PAGE, Some(0x90000)).unwrap_err(), Errno::EFAULT);
    // With a domain the IOVA must avoid the reserved MSI window.
    assert_eq!(
        ioas_map(&k, &io, a, mem.as_ptr() as u64, PAGE, Some(0xfee0_0000)).unwrap_err(),
        Errno::EINVAL
    );
}

#[test]
fn ioas_has_no_entry_limit() {
    let (host, k) = edu_host();
    host.set_kernel_config(MockKernelConfig { dma_entry_limit: 1, ..Default::default() });
    let io = k.open_iommufd().unwrap();
    let a = ioas(&k, &io);
    let mem = anon(PAGE as usize);
    for i in 0..3 {
        ioas_map(&k, &io, a, mem.as_ptr() as u64, PAGE, Some(0x10000 * (i + 1))).unwrap();
    }
    assert_eq!(k.dma_mappings(), 3);
    // Closing the iommufd frees everything.
    k.close(io);
    assert_eq!(k.dma_mappings(), 0);
}

#[test]
fn bind_refuses_without_interrupt_remapping() {
    let (host, k) = edu_host();
    host.set_kernel_config(MockKernelConfig { interrupt_remapping: false, ..Default::default() });
    let io = k.open_iommufd().unwrap();
    let d = k.open_device_cdev(0).unwrap();
    let mut bind = vfio_device_bind_iommufd { argsz: 24, iommufd: io.raw(), ..Default::default() };
    assert_eq!(k.device_bind_iommufd(&d, &mut bind).unwrap_err(), Errno::EPERM);
}

// ---------------------------------------------------------------------------------------
// no-IOMMU.

#[test]
fn noiommu_groups_and_container() {
    let host = MockHost::new([
        DeviceSpec::edu(EDU).driver("vfio-pci"),
        DeviceSpec::edu("0000:00:05.0").group(0),
    ]);
    let k = host.kernel();
    assert_eq!(host.noiommu_group(pa(EDU)), None);
    assert_eq!(k.open_group(GroupNode::NoIommu(1)).unwrap_err(), Errno::ENOENT);
    host.set_kernel_config(MockKernelConfig { noiommu: true, ..Default::default() });
    // Group 0 is taken by a real group: the fake group gets the lowest free id.
    assert_eq!(host.noiommu_group(pa(EDU)), Some(1));
    let c = k.open_container().unwrap();
    assert_eq!(k.check_extension(&c, VFIO_NOIOMMU_IOMMU).unwrap(), 1);
    let g = k.open_group(GroupNode::NoIommu(1)).unwrap();
    assert_eq!(k.group_get_status(&g).unwrap(), VFIO_GROUP_FLAGS_VIABLE);
    k.group_set_container(&g, &c).unwrap();
    assert_eq!(k.check_extension(&c, VFIO_TYPE1v2_IOMMU).unwrap(), 0);
    assert_eq!(k.set_iommu(&c, VFIO_TYPE1v2_IOMMU).unwrap_err(), Errno::ENODEV);
    k.set_iommu(&c, VFIO_NOIOMMU_IOMMU).unwrap();
    let mem = anon(PAGE as usize);
    assert_eq!(dma_map(&k, &c, mem.as_ptr() as u64, 0, PAGE).unwrap_err(), Errno::ENOTTY);
    let mut info = vec![0u8; 24];
    info[0..4].copy_from_slice(&24u32.to_le_bytes());
    assert_eq!(k.iommu_get_info(&c, &mut info).unwrap_err(), Errno::ENOTTY);
    let d = dev_fd(&k, &g, EDU).unwrap();
    k.close(d);
}

// ---------------------------------------------------------------------------------------
// Device info, regions, config, mmap.

fn open_edu(k: &MockKernel) -> KernelFd {
    let (_c, g) = legacy(k, 1);
    dev_fd(k, &g, EDU).unwrap()
}

fn nvme_host(bus: &str) -> (MockHost, Arc<MockKernel>, KernelFd) {
    let host = MockHost::new([DeviceSpec::nvme(bus).group(7).driver("vfio-pci")]);
    let k = host.kernel();
    let (_c, g) = legacy(&k, 7);
    let d = dev_fd(&k, &g, bus).unwrap();
    (host, k, d)
}

#[test]
fn device_info_flags_and_counts() {
    let (_h, k) = edu_host();
    let d = open_edu(&k);
    let mut b = vec![0u8; 24];
    b[0..4].copy_from_slice(&24u32.to_le_bytes());
    k.device_get_info(&d, &mut b).unwrap();
    assert_eq!(u32_at(&b, 4), VFIO_DEVICE_FLAGS_PCI);
    assert_eq!((u32_at(&b, 8), u32_at(&b, 12)), (9, 5));
    let (_h2, k2, d2) = nvme_host("0000:01:00.0");
    k2.device_get_info(&d2, &mut b).unwrap();
    assert_eq!(u32_at(&b, 4), VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET);
    b[0..4].copy_from_slice(&8u32.to_le_bytes());
    assert_eq!(k2.device_get_info(&d2, &mut b).unwrap_err(), Errno::EINVAL);
}

#[test]
fn region_info_for_standard_regions() {
    let (_h, k) = edu_host();
    let d = open_edu(&k);
    let b = region_info(&k, &d, 0, 32).unwrap();
    assert_eq!(
        u32_at(&b, 4),
        VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE | VFIO_REGION_INFO_FLAG_MMAP
    );
    assert_eq!((u64_at(&b, 16), u64_at(&b, 24)), (MB, 0));
    let b = region_info(&k, &d, 1, 32).unwrap();
    assert_eq!((u32_at(&b, 4), u64_at(&b, 16), u64_at(&b, 24)), (0, 0, 1 << 40));
    let b = region_info(&k, &d, 7, 32).unwrap();
    assert_eq!((u64_at(&b, 16), u64_at(&b, 24)), (256, 7 << 40), "conventional PCI: 256 bytes");
    let b = region_info(&k, &d, 6, 32).unwrap();
    assert_eq!((u32_at(&b, 4), u64_at(&b, 16)), (0, 0), "no ROM");
    assert_eq!(region_info(&k, &d, 8, 32).unwrap_err(), Errno::EINVAL, "not VGA");
    assert_eq!(region_info(&k, &d, 9, 32).unwrap_err(), Errno::EINVAL);
    // argsz below offsetofend(offset).
    let mut b = vec![0u8; 32];
    b[0..4].copy_from_slice(&16u32.to_le_bytes());
    assert_eq!(k.device_get_region_info(&d, &mut b).unwrap_err(), Errno::EINVAL);
}

#[test]
fn msix_bar_capabilities_new_and_old_kernels() {
    let (host, k, d) = nvme_host("0000:01:00.0");
    let b = region_info(&k, &d, 0, 32).unwrap();
    assert_ne!(u32_at(&b, 4) & VFIO_REGION_INFO_FLAG_CAPS, 0);
    assert_eq!(u32_at(&b, 0), 40, "argsz raised for the 8-byte MSI-X mappable cap");
    assert_eq!(u32_at(&b, 12), 0);
    let b = region_info(&k, &d, 0, 40).unwrap();
    assert_eq!(u32_at(&b, 12), 32);
    assert_eq!(u16::from_le_bytes([b[32], b[33]]) as u32, VFIO_REGION_INFO_CAP_MSIX_MAPPABLE);
    assert_eq!(u32_at(&b, 36), 0);
    host.set_kernel_config(MockKernelConfig { msix_mappable: false, ..Default::default() });
    let b = region_info(&k, &d, 0, 128).unwrap();
    let at = u32_at(&b, 12) as usize;
    assert_eq!(u16::from_le_bytes([b[at], b[at + 1]]) as u32, VFIO_REGION_INFO_CAP_SPARSE_MMAP);
    // 16 KiB BAR, table at 0x2000 (65 * 16 bytes): areas [0, 0x2000) and [0x3000, 0x4000).
    assert_eq!(u32_at(&b, at + 8), 2);
    assert_eq!((u64_at(&b, at + 16), u64_at(&b, at + 24)), (0, 0x2000));
    assert_eq!((u64_at(&b, at + 32), u64_at(&b, at + 40)), (0x3000, 0x1000));
    // Old kernels refuse mmaps over the table.
    assert_eq!(k.mmap(&d, 0x2000, PAGE as usize, libc::PROT_READ).unwrap_err(), Errno::EINVAL);
    let p = k.mmap(&d, 0, PAGE as usize, libc::PROT_READ).unwrap();
    // SAFETY: exactly the mapping just made, unused afterwards.
    unsafe { k.munmap(p, PAGE as usize).unwrap() };
}

#[test]
fn atomic_completer_capability_and_vga_region() {
    let mut spec = DeviceSpec::nvme("0000:01:00.0").group(7).driver("vfio-pci");
    spec.class = 0x030000; // VGA controller
    let host = MockHost::new([spec]);
    {
        let mut st = host.state();
        let c = &mut st.devices.get_mut(&pa("0000:01:00.0")).unwrap().config;
        let mut p = c[0x34] as usize;
        while c[p] != 0x10 {
            p = c[p + 1] as usize;
        }
        c[p + 0x24] |= 0x80; // DEVCAP2 bit 7: 32-bit AtomicOp completer
        c[p + 0x25] |= 0x01; // bit 8: 64-bit completer
    }
    let k = host.kernel();
    let (_c, g) = legacy(&k, 7);
    let d = dev_fd(&k, &g, "0000:01:00.0").unwrap();
    let mut b = vec![0u8; 24];
    b[0..4].copy_from_slice(&24u32.to_le_bytes());
    k.device_get_info(&d, &mut b).unwrap();
    assert_eq!(u32_at(&b, 4) & VFIO_DEVICE_FLAGS_CAPS, VFIO_DEVICE_FLAGS_CAPS);
    assert_eq!((u32_at(&b, 0), u32_at(&b, 16)), (40, 0));
    let mut b = vec![0u8; 40];
    b[0..4].copy_from_slice(&40u32.to_le_bytes());
    k.device_get_info(&d, &mut b).unwrap();
    assert_eq!(u32_at(&b, 16), 24);
    assert_eq!(u16::from_le_bytes([b[24], b[25]]) as u32, VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP);
    assert_eq!(u32_at(&b, 32), VFIO_PCI_ATOMIC_COMP32 | VFIO_PCI_ATOMIC_COMP64);
    // A VGA-class device has the legacy VGA region.
    let v = region_info(&k, &d, 8, 32).unwrap();
    assert_eq!((u64_at(&v, 16), u64_at(&v, 24)), (0xc0000, 8 << 40));
    host.set_kernel_config(MockKernelConfig { vga: false, ..Default::default() });
    assert_eq!(region_info(&k, &d, 8, 32).unwrap_err(), Errno::EINVAL);
}

#[test]
fn extra_region_reports_its_type() {
    let mut spec = DeviceSpec::edu(EDU).group(1).driver("vfio-pci");
    spec.extra_regions.push(RegionSpec {
        region_type: VFIO_REGION_TYPE_GFX,
        subtype: VFIO_REGION_SUBTYPE_GFX_EDID,
        size: 0x100,
        writable: true,
        data: b"EDID".to_vec(),
    });
    let host = MockHost::new([spec]);
    let k = host.kernel();
    let d = open_edu(&k);
    let mut info = vec![0u8; 24];
    info[0..4].copy_from_slice(&24u32.to_le_bytes());
    k.device_get_info(&d, &mut info).unwrap();
    assert_eq!(u32_at(&info, 8), 10);
    let b = region_info(&k, &d, 9, 48).unwrap();
    assert_eq!(u64_at(&b, 24), 9 << 40);
    assert_eq!(u64_at(&b, 16), 0x100);
    assert_eq!(u16::from_le_bytes([b[32], b[33]]) as u32, VFIO_REGION_INFO_CAP_TYPE);
    assert_eq!(
        (u32_at(&b, 40), u32_at(&b, 44)),
        (VFIO_REGION_TYPE_GFX, VFIO_REGION_SUBTYPE_GFX_EDID)
    );
    let mut r = [0u8; 4];
    k.region_read(&d, 9 << 40, &mut r).unwrap();
    assert_eq!(&r, b"EDID");
}

#[test]
fn config_space_masks_and_bar_sizing() {
    let (host, k) = edu_host();
    let d = open_edu(&k);
    let cfg = 7u64 << 40;
    let mut b = [0u8; 4];
    k.region_read(&k_dev(&d), cfg, &mut b).unwrap();
    assert_eq!(b, [0x34, 0x12, 0xe8, 0x11]);
    // IDs are read-only.
    k.region_write(&d, cfg, &[0xff; 4]).unwrap();
    k.region_read(&d, cfg, &mut b).unwrap();
    assert_eq!(b, [0x34, 0x12, 0xe8, 0x11]);
    // Opening enabled memory decode; bus master is writable; the write shows in sysfs.
    let mut cmd = [0u8; 2];
    k.region_read(&d, cfg + 4, &mut cmd).unwrap();
    assert_eq!(cmd[0] & 0x2, 0x2);
    k.region_write(&d, cfg + 4, &[cmd[0] | 0x4 | 0x80, cmd[1]]).unwrap();
    k.region_read(&d, cfg + 4, &mut cmd).unwrap();
    assert_eq!(cmd[0] & 0x86, 0x06, "bit 7 is reserved, read-only");
    assert_eq!(host.state().devices[&pa(EDU)].config[4] & 0x4, 0x4);
    // BAR sizing: all ones reads back the size mask with the type bits.
    k.region_write(&d, cfg + 0x10, &[0xff; 4]).unwrap();
    k.region_read(&d, cfg + 0x10, &mut b).unwrap();
    assert_eq!(u32::from_le_bytes(b), 0xfff0_0000);
    // Unimplemented BAR reads 0 after sizing.
    k.region_write(&d, cfg + 0x14, &[0xff; 4]).unwrap();
    k.region_read(&d, cfg + 0x14, &mut b).unwrap();
    assert_eq!(u32::from_le_bytes(b), 0);
    // MSI enable bit writable; the next pointer is not.
    let msi = host.state().devices[&pa(EDU)].config[0x41] as u64;
    let mut ctl = [0u8; 4];
    k.region_read(&d, cfg + msi, &mut ctl).unwrap();
    k.region_write(&d, cfg + msi, &[0xff, 0xff, ctl[2] | 1, ctl[3]]).unwrap();
    let mut after = [0u8; 4];
    k.region_read(&d, cfg + msi, &mut after).unwrap();
    assert_eq!(&after[..2], &ctl[..2]);
    assert_eq!(after[2] & 1, 1);
    // Bounds: at the end a short read, past it EINVAL.
    let mut big = [0u8; 16];
    assert_eq!(k.region_read(&d, cfg + 250, &mut big).unwrap(), 6);
    assert_eq!(k.region_read(&d, cfg + 256, &mut big).unwrap_err(), Errno::EINVAL);
    assert_eq!(k.region_read(&d, 20 << 40, &mut big).unwrap_err(), Errno::EINVAL);
}

/// The same descriptor (keeps call sites symmetric).
fn k_dev(d: &KernelFd) -> KernelFd {
    KernelFd::from_raw(d.raw())
}

#[test]
fn bar_mmap_and_pread_share_memory() {
    let (_h, k) = edu_host();
    let d = open_edu(&k);
    let p = k.mmap(&d, 0, PAGE as usize, libc::PROT_READ | libc::PROT_WRITE).unwrap();
    assert_eq!(k.mmaps(), 1);
    // SAFETY: p is a live 4 KiB shared mapping of BAR0.
    unsafe { p.as_ptr().add(0x10).copy_from_nonoverlapping(b"abcd".as_ptr(), 4) };
    let mut b = [0u8; 4];
    k.region_read(&d, 0x10, &mut b).unwrap();
    assert_eq!(&b, b"abcd");
    k.region_write(&d, 0x20, b"wxyz").unwrap();
    // SAFETY: as above.
    let seen = unsafe { std::slice::from_raw_parts(p.as_ptr().add(0x20), 4) }.to_vec();
    assert_eq!(&seen, b"wxyz");
    // SAFETY: exactly the mapping returned above, not used afterwards.
    unsafe { k.munmap(p, PAGE as usize).unwrap() };
    assert_eq!(k.mmaps(), 0);
    assert_eq!(k.mmap(&d, MB, PAGE as usize, libc::PROT_READ).unwrap_err(), Errno::EINVAL);
    assert_eq!(k.mmap(&d, 0x800, PAGE as usize, libc::PROT_READ).unwrap_err(), Errno::EINVAL);
    assert_eq!(k.mmap(&d, 7 << 40, PAGE as usize, libc::PROT_READ).unwrap_err(), Errno::EINVAL);
    // Short read at the end of the BAR, EINVAL past it.
    let mut big = [0u8; 8];
    assert_eq!(k.region_read(&d, MB - 4, &mut big).unwrap(), 4);
    assert_eq!(k.region_read(&d, MB, &mut big).unwrap_err(), Errno::EINVAL);
    // Memory decode off: BAR access fails with EIO.
    let mut cmd = [0u8; 2];
    k.region_read(&d, (7 << 40) + 4, &mut cmd).unwrap();
    k.region_write(&d, (7 << 40) + 4, &[cmd[0] & !2, cmd[1]]).unwrap();
    assert_eq!(k.region_read(&d, 0, &mut big).unwrap_err(), Errno::EIO);
}

#[test]
fn msix_table_is_hidden_from_pread() {
    let (_h, k, d) = nvme_host("0000:01:00.0");
    k.region_write(&d, 0x2000, &[1, 2, 3, 4]).unwrap();
    let mut b = [0u8; 4];
    k.region_read(&d, 0x2000, &mut b).unwrap();
    assert_eq!(b, [0xff; 4]);
    k.region_write(&d, 0x3000, &[1, 2, 3, 4]).unwrap();
    k.region_read(&d, 0x3000, &mut b).unwrap();
    assert_eq!(b, [1, 2, 3, 4]);
    // The config region of a PCIe device is 4 KiB.
    let b = region_info(&k, &d, 7, 32).unwrap();
    assert_eq!(u64_at(&b, 16), 4096);
}

/// A one-image legacy ROM of `blocks` 512-byte units, PCIR at 0x1c, last image.
fn rom_image(blocks: u16) -> Vec<u8> {
    let mut r = vec![0u8; 512 * blocks as usize];
    r[0] = 0x55;
    r[1] = 0xaa;
    r[2] = blocks as u8;
    r[0x18..0x1a].copy_from_slice(&0x1cu16.to_le_bytes());
    r[0x1c..0x20].copy_from_slice(b"PCIR");
    r[0x1c + 16..0x1c + 18].copy_from_slice(&blocks.to_le_bytes());
    r[0x1c + 21] = 0x80;
    r
}

#[test]
fn rom_region_reads_image_then_ones() {
    let mut spec = DeviceSpec::edu(EDU).group(1).driver("vfio-pci");
    let mut rom = rom_image(1);
    rom.extend_from_slice(&[0xab; 600]); // junk past the image
    spec.rom = Some(rom);
    let host = MockHost::new([spec]);
    let k = host.kernel();
    let d = open_edu(&k);
    let b = region_info(&k, &d, 6, 32).unwrap();
    assert_eq!((u32_at(&b, 4), u64_at(&b, 16)), (VFIO_REGION_INFO_FLAG_READ, 2048));
    let mut r = [0u8; 4];
    k.region_read(&d, 6 << 40, &mut r).unwrap();
    assert_eq!(r[..2], [0x55, 0xaa]);
    // Past the image (512 bytes) the ROM reads 0xff, not the junk behind it.
    k.region_read(&d, (6 << 40) + 512, &mut r).unwrap();
    assert_eq!(r, [0xff; 4]);
    assert_eq!(k.region_write(&d, 6 << 40, &r).unwrap_err(), Errno::EINVAL);
    assert_eq!(k.region_read(&d, (6 << 40) + 2048, &mut r).unwrap_err(), Errno::EINVAL);
    assert_eq!(k.region_read(&d, 6 << 40, &mut []).unwrap(), 0);
}

#[test]
fn rom_without_a_valid_image_is_empty() {
    let mut spec = DeviceSpec::edu(EDU).group(1).driver("vfio-pci");
    spec.rom = Some(vec![0x55, 0xaa, 0x01]); // no PCIR structure
    let host = MockHost::new([spec]);
    let k = host.kernel();
    let d = open_edu(&k);
    let b = region_info(&k, &d, 6, 32).unwrap();
    assert_eq!((u32_at(&b, 4), u64_at(&b, 16)), (0, 0));
    let mut r = [0u8; 4];
    assert_eq!(k.region_read(&d, 6 << 40, &mut r).unwrap_err(), Errno::ENOMEM);
}

// ---------------------------------------------------------------------------------------
// Interrupts.

fn irq_info(k: &MockKernel, d: &KernelFd, index: u32) -> KResult<vfio_irq_info> {
    let mut i = vfio_irq_info { argsz: 16, index, ..Default::default() };
    k.device_get_irq_info(d, &mut i).map(|_| i)
}

#[test]
fn irq_info_counts_and_flags() {
    let (_h, k) = edu_host();
    let d = open_edu(&k);
    let intx = irq_info(&k, &d, 0).unwrap();
    assert_eq!(intx.count, 1);
    assert_eq!(
        intx.flags,
        VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED
    );
    let msi = irq_info(&k, &d, 1).unwrap();
    assert_eq!((msi.count, msi.flags), (1, VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE));
    assert_eq!(irq_info(&k, &d, 2).unwrap().count, 0);
    assert_eq!(irq_info(&k, &d, 3).unwrap_err(), Errno::EINVAL, "ERR only for PCIe");
    assert_eq!(irq_info(&k, &d, 4).unwrap().count, 1);
    assert_eq!(irq_info(&k, &d, 5).unwrap_err(), Errno::EINVAL);
    let (_h2, k2, d2) = nvme_host("0000:01:00.0");
    let msix = irq_info(&k2, &d2, 2).unwrap();
    assert_eq!((msix.count, msix.flags), (65, VFIO_IRQ_INFO_EVENTFD));
    assert_eq!(irq_info(&k2, &d2, 3).unwrap().count, 1);
}

#[test]
fn set_irqs_validation() {
    let (_h, k, d) = nvme_host("0000:01:00.0");
    let e = nb_eventfd();
    let ev = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    // Two data types, no data type, index out of range, start+count beyond the vectors.
    let two = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER;
    assert_eq!(k.device_set_irqs(&d, &irq_set(two, 2, 0, 1, &[1])).unwrap_err(), Errno::EINVAL);
    assert_eq!(
        k.device_set_irqs(&d, &irq_set(VFIO_IRQ_SET_ACTION_TRIGGER, 2, 0, 1, &[])).unwrap_err(),
        Errno::EINVAL
    );
    assert_eq!(
        k.device_set_irqs(&d, &irq_set(ev, 5, 0, 1, &fds(&[e.as_raw_fd()]))).unwrap_err(),
        Errno::EINVAL
    );
    assert_eq!(
        k.device_set_irqs(&d, &irq_set(ev, 2, 64, 2, &fds(&[-1, -1]))).unwrap_err(),
        Errno::EINVAL
    );
    // argsz too small for the data.
    let mut short = irq_set(ev, 2, 0, 2, &fds(&[-1, -1]));
    short[0..4].copy_from_slice(&24u32.to_le_bytes());
    assert_eq!(k.device_set_irqs(&d, &short).unwrap_err(), Errno::EINVAL);
    // Two actions: no handler.
    let two_actions =
        VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_ACTION_TRIGGER;
    assert_eq!(
        k.device_set_irqs(&d, &irq_set(two_actions, 2, 0, 1, &[])).unwrap_err(),
        Errno::ENOTTY
    );
    // MSI-X masking is not supported.
    let mask = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK;
    assert_eq!(k.device_set_irqs(&d, &irq_set(mask, 2, 0, 1, &[])).unwrap_err(), Errno::ENOTTY);
    // Not an eventfd / a closed descriptor.
    let file = std::fs::File::open("/dev/null").unwrap();
    assert_eq!(
        k.device_set_irqs(&d, &irq_set(ev, 2, 0, 1, &fds(&[file.as_raw_fd()]))).unwrap_err(),
        Errno::EINVAL
    );
    assert_eq!(
        k.device_set_irqs(&d, &irq_set(ev, 2, 0, 1, &fds(&[MOCK_FD_BASE - 7]))).unwrap_err(),
        Errno::EBADF
    );
    // Loopback trigger before enabling.
    let trig = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
    assert_eq!(k.device_set_irqs(&d, &irq_set(trig, 2, 0, 1, &[])).unwrap_err(), Errno::EINVAL);
}

use std::os::fd::AsRawFd;

#[test]
fn msix_triggers_signal_eventfds_and_exclude_msi_and_intx() {
    let (host, k, d) = nvme_host("0000:01:00.0");
    let (e0, e1) = (nb_eventfd(), nb_eventfd());
    let ev = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    k.device_set_irqs(&d, &irq_set(ev, 2, 0, 2, &fds(&[e0.as_raw_fd(), e1.as_raw_fd()]))).unwrap();
    // Software trigger of vector 1 only (DATA_BOOL), then all (DATA_NONE).
    let boolt = VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER;
    k.device_set_irqs(&d, &irq_set(boolt, 2, 0, 2, &[0, 1])).unwrap();
    assert_eq!((fired(&e0), fired(&e1)), (0, 1));
    let none = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
    k.device_set_irqs(&d, &irq_set(none, 2, 0, 2, &[])).unwrap();
    assert_eq!((fired(&e0), fired(&e1)), (1, 1));
    // A device model raises vector 0.
    assert!(host.raise_irq(pa("0000:01:00.0"), 2, 0));
    assert_eq!(fired(&e0), 1);
    // Dynamic MSI-X: a vector added later.
    let e5 = nb_eventfd();
    k.device_set_irqs(&d, &irq_set(ev, 2, 5, 1, &fds(&[e5.as_raw_fd()]))).unwrap();
    assert!(host.raise_irq(pa("0000:01:00.0"), 2, 5));
    assert_eq!(fired(&e5), 1);
    // eventfd -1 disables one vector.
    k.device_set_irqs(&d, &irq_set(ev, 2, 1, 1, &fds(&[-1]))).unwrap();
    assert!(!host.raise_irq(pa("0000:01:00.0"), 2, 1));
    // INTx while MSI-X is on.
    assert_eq!(
        k.device_set_irqs(&d, &irq_set(ev, 0, 0, 1, &fds(&[e0.as_raw_fd()]))).unwrap_err(),
        Errno::EINVAL
    );
    // Disable with count 0, then INTx works.
    k.device_set_irqs(&d, &irq_set(none, 2, 0, 0, &[])).unwrap();
    assert!(!host.raise_irq(pa("0000:01:00.0"), 2, 0));
    k.device_set_irqs(&d, &irq_set(ev, 0, 0, 1, &fds(&[e0.as_raw_fd()]))).unwrap();
}

#[test]
fn msi_vectors_are_fixed_at_enable() {
    let mut spec = DeviceSpec::edu(EDU).group(1).driver("vfio-pci");
    spec.msi_vectors = 4;
    let host = MockHost::new([spec]);
    let k = host.kernel();
    let d = open_edu(&k);
    assert_eq!(irq_info(&k, &d, 1).unwrap().count, 4);
    let (e0, e3) = (nb_eventfd(), nb_eventfd());
    let ev = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    // Enabling zero vectors: pci_alloc_irq_vectors refuses with ERANGE.
    assert_eq!(k.device_set_irqs(&d, &irq_set(ev, 1, 0, 0, &[])).unwrap_err(), Errno::ERANGE);
    k.device_set_irqs(&d, &irq_set(ev, 1, 0, 1, &fds(&[e0.as_raw_fd()]))).unwrap();
    assert_eq!(
        k.device_set_irqs(&d, &irq_set(ev, 1, 3, 1, &fds(&[e3.as_raw_fd()]))).unwrap_err(),
        Errno::EINVAL
    );
    // Tearing down a vector (fd -1) past those allocated is harmless.
    k.device_set_irqs(&d, &irq_set(ev, 1, 3, 1, &fds(&[-1]))).unwrap();
    assert!(host.raise_irq(pa(EDU), 1, 0));
    assert_eq!(fired(&e0), 1);
    // Closing the device disables interrupts.
    k.close(d);
    assert!(!host.raise_irq(pa(EDU), 1, 0));
}

#[test]
fn intx_automask_and_unmask() {
    let (host, k) = edu_host();
    let d = open_edu(&k);
    let e = nb_eventfd();
    let ev = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    let mask = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK;
    let unmask = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK;
    // Masking needs INTx enabled.
    assert_eq!(k.device_set_irqs(&d, &irq_set(mask, 0, 0, 1, &[])).unwrap_err(), Errno::EINVAL);
    k.device_set_irqs(&d, &irq_set(ev, 0, 0, 1, &fds(&[e.as_raw_fd()]))).unwrap();
    assert!(host.raise_irq(pa(EDU), 0, 0));
    assert_eq!(fired(&e), 1);
    // Automasked: the next one is held pending until unmask.
    assert!(!host.raise_irq(pa(EDU), 0, 0));
    assert_eq!(fired(&e), 0);
    k.device_set_irqs(&d, &irq_set(unmask, 0, 0, 1, &[])).unwrap();
    assert_eq!(fired(&e), 1);
    k.device_set_irqs(&d, &irq_set(unmask, 0, 0, 1, &[])).unwrap();
    assert!(host.raise_irq(pa(EDU), 0, 0));
    assert_eq!(fired(&e), 1);
    // An unmask eventfd unmasks when written.
    let u = nb_eventfd();
    let unmask_ev = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_UNMASK;
    k.device_set_irqs(&d, &irq_set(unmask_ev, 0, 0, 1, &fds(&[u.as_raw_fd()]))).unwrap();
    u.write(1).unwrap();
    assert!(host.raise_irq(pa(EDU), 0, 0));
    // MSI while INTx is on.
    assert_eq!(
        k.device_set_irqs(&d, &irq_set(ev, 1, 0, 1, &fds(&[e.as_raw_fd()]))).unwrap_err(),
        Errno::EINVAL
    );
}

#[test]
fn err_and_req_triggers() {
    let (host, k, d) = nvme_host("0000:01:00.0");
    let e = nb_eventfd();
    let none = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
    assert_eq!(k.device_set_irqs(&d, &irq_set(none, 4, 0, 1, &[])).unwrap_err(), Errno::EINVAL);
    let ev = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    k.device_set_irqs(&d, &irq_set(ev, 4, 0, 1, &fds(&[e.as_raw_fd()]))).unwrap();
    k.device_set_irqs(&d, &irq_set(none, 4, 0, 1, &[])).unwrap();
    assert_eq!(fired(&e), 1);
    assert!(host.raise_irq(pa("0000:01:00.0"), 4, 0));
    assert_eq!(fired(&e), 1);
    k.device_set_irqs(&d, &irq_set(ev, 3, 0, 1, &fds(&[e.as_raw_fd()]))).unwrap();
    assert!(host.raise_irq(pa("0000:01:00.0"), 3, 0));
    assert_eq!(fired(&e), 1);
}

// ---------------------------------------------------------------------------------------
// Resets.

#[test]
fn device_reset_needs_flr() {
    let (host, k) = edu_host();
    let d = open_edu(&k);
    assert_eq!(k.device_reset(&d).unwrap_err(), Errno::EINVAL);
    let (h2, k2, d2) = nvme_host("0000:01:00.0");
    k2.device_reset(&d2).unwrap();
    assert_eq!(h2.reset_count(pa("0000:01:00.0")), 1);
    // "Initiate FLR" in the PCIe device control register resets the function.
    let p = {
        let st = h2.state();
        let c = &st.devices[&pa("0000:01:00.0")].config;
        let mut p = c[0x34] as usize;
        while c[p] != 0x10 {
            p = c[p + 1] as usize;
        }
        p as u64
    };
    let mut ctl = [0u8; 2];
    k2.region_read(&d2, (7 << 40) + p + 8, &mut ctl).unwrap();
    k2.region_write(&d2, (7 << 40) + p + 8, &[ctl[0], ctl[1] | 0x80]).unwrap();
    assert_eq!(h2.reset_count(pa("0000:01:00.0")), 2);
    k2.region_read(&d2, (7 << 40) + p + 8, &mut ctl).unwrap();
    assert_eq!(ctl[1] & 0x80, 0, "the FLR bit reads back 0");
    // The last close resets a device whose reset works (vfio_pci_core_disable).
    k2.close(d2);
    assert_eq!(h2.reset_count(pa("0000:01:00.0")), 3);
    k.close(d);
    assert_eq!(host.reset_count(pa(EDU)), 0);
}

fn hot_reset_info(k: &MockKernel, d: &KernelFd, n: usize) -> (KResult<()>, Vec<u8>) {
    let mut b = vec![0u8; 12 + 8 * n];
    b[0..4].copy_from_slice(&((12 + 8 * n) as u32).to_le_bytes());
    let r = k.device_get_pci_hot_reset_info(d, &mut b);
    (r, b)
}

fn hot_reset(k: &MockKernel, d: &KernelFd, groups: &[i32]) -> KResult<()> {
    let mut b = Vec::new();
    b.extend_from_slice(&((12 + 4 * groups.len()) as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&(groups.len() as u32).to_le_bytes());
    b.extend_from_slice(&fds(groups));
    k.device_pci_hot_reset(d, &b)
}

#[test]
fn hot_reset_on_the_root_bus_is_unavailable() {
    let (_h, k) = edu_host();
    let d = open_edu(&k);
    assert_eq!(hot_reset_info(&k, &d, 4).0.unwrap_err(), Errno::ENODEV);
}

#[test]
fn hot_reset_info_and_legacy_reset() {
    let host = MockHost::new([
        DeviceSpec::nvme("0000:03:00.0").group(8).driver("vfio-pci"),
        DeviceSpec::edu("0000:03:00.1").group(9).driver("vfio-pci"),
    ]);
    let k = host.kernel();
    let (c, g8) = legacy(&k, 8);
    let g9 = k.open_group(GroupNode::Iommu(9)).unwrap();
    k.group_set_container(&g9, &c).unwrap();
    let d = dev_fd(&k, &g8, "0000:03:00.0").unwrap();
    let (r, b) = hot_reset_info(&k, &d, 1);
    assert_eq!(r.unwrap_err(), Errno::ENOSPC);
    assert_eq!(u32_at(&b, 8), 2);
    let (r, b) = hot_reset_info(&k, &d, 2);
    r.unwrap();
    assert_eq!((u32_at(&b, 4), u32_at(&b, 8)), (0, 2));
    assert_eq!((u32_at(&b, 12), b[18], b[19]), (8, 3, 0));
    assert_eq!((u32_at(&b, 20), b[26], b[27]), (9, 3, 1));
    // Legacy: count 0 is for cdevs; every affected group must be passed.
    assert_eq!(hot_reset(&k, &d, &[]).unwrap_err(), Errno::EINVAL);
    assert_eq!(hot_reset(&k, &d, &[g8.raw()]).unwrap_err(), Errno::EINVAL);
    assert_eq!(hot_reset(&k, &d, &[g8.raw(), c.raw()]).unwrap_err(), Errno::EINVAL);
    assert_eq!(hot_reset(&k, &d, &[g8.raw(), MOCK_FD_BASE + 5000]).unwrap_err(), Errno::EBADF);
    assert_eq!(hot_reset(&k, &d, &[g8.raw(), g9.raw(), g9.raw()]).unwrap_err(), Errno::EINVAL);
    hot_reset(&k, &d, &[g8.raw(), g9.raw()]).unwrap();
    assert_eq!(host.reset_count(pa("0000:03:00.1")), 1);
    // A device on the bus bound to a host driver blocks the reset.
    host.set_driver(pa("0000:03:00.1"), Some("e1000e"));
    assert_eq!(hot_reset(&k, &d, &[g8.raw(), g9.raw()]).unwrap_err(), Errno::EINVAL);
}

#[test]
fn hot_reset_through_cdev() {
    let host = MockHost::new([
        DeviceSpec::nvme("0000:03:00.0").group(8).driver("vfio-pci"),
        DeviceSpec::edu("0000:03:00.1").group(9).driver("vfio-pci"),
    ]);
    let k = host.kernel();
    let io = k.open_iommufd().unwrap();
    let bind = |idx: u32| {
        let d = k.open_device_cdev(idx).unwrap();
        let mut b = vfio_device_bind_iommufd { argsz: 24, iommufd: io.raw(), ..Default::default() };
        k.device_bind_iommufd(&d, &mut b).unwrap();
        (d, b.out_devid)
    };
    let (d0, id0) = bind(0);
    let (r, b) = hot_reset_info(&k, &d0, 2);
    r.unwrap();
    assert_eq!(u32_at(&b, 4), VFIO_PCI_HOT_RESET_FLAG_DEV_ID);
    assert_eq!(u32_at(&b, 12), id0);
    assert_eq!(u32_at(&b, 20), VFIO_PCI_DEVID_NOT_OWNED as u32);
    assert_eq!(hot_reset(&k, &d0, &[]).unwrap_err(), Errno::EINVAL);
    let (_d1, id1) = bind(1);
    let (_, b) = hot_reset_info(&k, &d0, 2);
    assert_eq!(
        u32_at(&b, 4),
        VFIO_PCI_HOT_RESET_FLAG_DEV_ID | VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED
    );
    assert_eq!(u32_at(&b, 20), id1);
    hot_reset(&k, &d0, &[]).unwrap();
    assert_eq!(host.reset_count(pa("0000:03:00.0")), 1);
}

// ---------------------------------------------------------------------------------------
// Fault injection and leak accounting.

#[test]
fn fault_injection_next_nth_always() {
    let (h, k) = edu_host();
    h.inject(Fault::kernel(KernelOp::OpenContainer).errno(Errno::EMFILE));
    assert_eq!(k.open_container().unwrap_err(), Errno::EMFILE);
    let c = k.open_container().unwrap();
    h.inject(Fault::kernel(KernelOp::GetApiVersion).errno(Errno::EIO).nth(3));
    assert_eq!(k.get_api_version(&c).unwrap(), 0);
    assert_eq!(k.get_api_version(&c).unwrap(), 0);
    assert_eq!(k.get_api_version(&c).unwrap_err(), Errno::EIO);
    assert_eq!(k.get_api_version(&c).unwrap(), 0);
    h.inject(Fault::kernel(KernelOp::CheckExtension).errno(Errno::ENOTTY).always());
    assert_eq!(k.check_extension(&c, VFIO_TYPE1v2_IOMMU).unwrap_err(), Errno::ENOTTY);
    assert_eq!(k.check_extension(&c, VFIO_TYPE1v2_IOMMU).unwrap_err(), Errno::ENOTTY);
    h.clear_faults();
    assert_eq!(k.check_extension(&c, VFIO_TYPE1v2_IOMMU).unwrap(), 1);
    assert_eq!(k.calls(KernelOp::OpenContainer), 2);
    assert_eq!(k.calls(KernelOp::GetApiVersion), 4);
    assert_eq!(k.calls(KernelOp::CheckExtension), 3);
    assert_eq!(k.open_fds(), 1);
    k.close(c);
    assert_eq!(k.open_fds(), 0);
    assert_eq!(k.calls(KernelOp::Close), 1);
}

#[test]
fn every_handle_is_the_same_kernel() {
    let (host, k) = edu_host();
    let k2 = host.kernel();
    let c = k.open_container().unwrap();
    assert_eq!(k2.open_fds(), 1);
    assert_eq!(k2.get_api_version(&c).unwrap(), 0);
    k2.close(c);
    assert_eq!(k.open_fds(), 0);
    let e = k.eventfd().unwrap();
    assert!(e.as_raw_fd() < MOCK_FD_BASE, "eventfds are real");
    assert_eq!(k.calls(KernelOp::EventFd), 1);
}
