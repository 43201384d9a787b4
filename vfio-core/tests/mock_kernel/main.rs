//! The mock kernel driven through the kernel seam: every rule checked by value or errno.
//!
//! One file per kernel object, as in `vfio-core/src/mock/kernel/`; this one holds what
//! they share (hosts, a legacy container, DMA and payload helpers).
//!
//! | file | checks |
//! | --- | --- |
//! | `group.rs` | groups and containers: viability, nodes, ordering, extensions |
//! | `type1.rs` | the type1 IOMMU: info, DMA map and unmap, limits |
//! | `iommufd.rs` | iommufd: IOASes, IOVA ranges, device cdevs, pinning |
//! | `noiommu.rs` | no-IOMMU groups |
//! | `device.rs` | device info, regions, config space, BAR mmap, ROM |
//! | `irq.rs` | IRQ info, `SET_IRQS`, interrupt delivery |
//! | `reset.rs` | function reset and hot reset |
//! | `fds.rs` | fault injection, call and leak counters |

mod device;
mod fds;
mod group;
mod iommufd;
mod irq;
mod noiommu;
mod reset;
mod type1;

use std::ffi::CString;
use std::sync::Arc;

use vfio_bindings::bindings::vfio::*;
use vfio_core::kernel::*;
use vfio_core::mock::*;
use vfio_core::PciAddress;

const EDU: &str = "0000:00:04.0";
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

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// The descriptors of a `SET_IRQS` or hot-reset payload.
fn fd_bytes(list: &[i32]) -> Vec<u8> {
    list.iter().flat_map(|f| f.to_le_bytes()).collect()
}

fn ranges(k: &MockKernel, io: &KernelFd, id: u32, room: u32) -> (KResult<()>, Vec<u8>) {
    let mut b = vec![0u8; 32 + 16 * room as usize];
    b[4..8].copy_from_slice(&id.to_le_bytes());
    b[8..12].copy_from_slice(&room.to_le_bytes());
    let r = k.ioas_iova_ranges(io, &mut b);
    (r, b)
}

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
