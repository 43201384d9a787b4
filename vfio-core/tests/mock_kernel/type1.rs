//! The type1 IOMMU: info and its capability chain, DMA map and unmap (v1 and v2),
//! vaddr updates, entry limit and memlock (`vfio_iommu_type1.c`).

use super::*;

fn dma_unmap(k: &MockKernel, c: &KernelFd, iova: u64, size: u64, flags: u32) -> KResult<u64> {
    let mut u =
        vfio_iommu_type1_dma_unmap { argsz: 24, flags, iova, size, data: Default::default() };
    k.unmap_dma(c, &mut u).map(|_| u.size)
}

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
