//! The hot paths allocate nothing: DMA map/unmap, region read/write, MMIO access, config
//! access and IRQ trigger, in every IOMMU mode.
//!
//! A counting global allocator counts heap allocations made by this process. The kernel
//! backend (here the mock, whose bookkeeping allocates where a real kernel would not touch
//! the process heap at all) runs with counting paused, so what is counted is exactly what
//! vfio-core itself allocates around each kernel call.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ffi::CStr;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use vfio_core::container::IommuType;
use vfio_core::kernel::*;
use vfio_core::mock::{DeviceSpec, MockHost, MockKernel, MockKernelConfig};
use vfio_core::{DmaPerm, Interface, IrqIndex, PciAddress, Vfio};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);
thread_local! {
    static PAUSED: Cell<bool> = const { Cell::new(false) };
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if ARMED.with(Cell::get) && !PAUSED.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if ARMED.with(Cell::get) && !PAUSED.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Counts allocations made on this thread while `f` runs (outside the kernel backend).
fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.load(Ordering::Relaxed);
    ARMED.with(|a| a.set(true));
    f();
    ARMED.with(|a| a.set(false));
    ALLOCS.load(Ordering::Relaxed) - before
}

/// The mock kernel with allocation counting paused inside every call.
#[derive(Debug)]
struct Paused(Arc<MockKernel>);

fn paused<T>(f: impl FnOnce() -> T) -> T {
    PAUSED.with(|p| p.set(true));
    let r = f();
    PAUSED.with(|p| p.set(false));
    r
}

// SAFETY: every method forwards to the wrapped kernel, which keeps the contract.
unsafe impl VfioKernel for Paused {
    fn open_container(&self) -> KResult<KernelFd> {
        paused(|| self.0.open_container())
    }
    fn open_group(&self, g: GroupNode) -> KResult<KernelFd> {
        paused(|| self.0.open_group(g))
    }
    fn open_iommufd(&self) -> KResult<KernelFd> {
        paused(|| self.0.open_iommufd())
    }
    fn open_device_cdev(&self, i: u32) -> KResult<KernelFd> {
        paused(|| self.0.open_device_cdev(i))
    }
    fn export(&self, fd: KernelFd) -> std::os::fd::OwnedFd {
        self.0.export(fd)
    }
    fn adopt(&self, fd: std::os::fd::OwnedFd) -> KResult<KernelFd> {
        self.0.adopt(fd)
    }
    fn close(&self, fd: KernelFd) {
        paused(|| self.0.close(fd))
    }
    fn get_api_version(&self, c: &KernelFd) -> KResult<i32> {
        paused(|| self.0.get_api_version(c))
    }
    fn check_extension(&self, c: &KernelFd, e: u32) -> KResult<u32> {
        paused(|| self.0.check_extension(c, e))
    }
    fn set_iommu(&self, c: &KernelFd, t: u32) -> KResult<()> {
        paused(|| self.0.set_iommu(c, t))
    }
    fn iommu_get_info(&self, c: &KernelFd, b: &mut [u8]) -> KResult<()> {
        paused(|| self.0.iommu_get_info(c, b))
    }
    unsafe fn map_dma(&self, c: &KernelFd, m: &vfio_iommu_type1_dma_map) -> KResult<()> {
        // SAFETY: the caller's contract is passed on unchanged.
        paused(|| unsafe { self.0.map_dma(c, m) })
    }
    fn unmap_dma(&self, c: &KernelFd, u: &mut vfio_iommu_type1_dma_unmap) -> KResult<()> {
        paused(|| self.0.unmap_dma(c, u))
    }
    fn group_get_status(&self, g: &KernelFd) -> KResult<u32> {
        paused(|| self.0.group_get_status(g))
    }
    fn group_set_container(&self, g: &KernelFd, c: &KernelFd) -> KResult<()> {
        paused(|| self.0.group_set_container(g, c))
    }
    fn group_unset_container(&self, g: &KernelFd) -> KResult<()> {
        paused(|| self.0.group_unset_container(g))
    }
    fn group_get_device_fd(&self, g: &KernelFd, n: &CStr) -> KResult<KernelFd> {
        paused(|| self.0.group_get_device_fd(g, n))
    }
    fn device_get_info(&self, d: &KernelFd, b: &mut [u8]) -> KResult<()> {
        paused(|| self.0.device_get_info(d, b))
    }
    fn device_get_region_info(&self, d: &KernelFd, b: &mut [u8]) -> KResult<()> {
        paused(|| self.0.device_get_region_info(d, b))
    }
    fn device_get_irq_info(&self, d: &KernelFd, i: &mut vfio_irq_info) -> KResult<()> {
        paused(|| self.0.device_get_irq_info(d, i))
    }
    fn device_set_irqs(&self, d: &KernelFd, b: &[u8]) -> KResult<()> {
        paused(|| self.0.device_set_irqs(d, b))
    }
    fn device_reset(&self, d: &KernelFd) -> KResult<()> {
        paused(|| self.0.device_reset(d))
    }
    fn device_get_pci_hot_reset_info(&self, d: &KernelFd, b: &mut [u8]) -> KResult<()> {
        paused(|| self.0.device_get_pci_hot_reset_info(d, b))
    }
    fn device_pci_hot_reset(&self, d: &KernelFd, b: &[u8]) -> KResult<()> {
        paused(|| self.0.device_pci_hot_reset(d, b))
    }
    fn device_bind_iommufd(&self, d: &KernelFd, b: &mut vfio_device_bind_iommufd) -> KResult<()> {
        paused(|| self.0.device_bind_iommufd(d, b))
    }
    fn device_attach_iommufd_pt(
        &self,
        d: &KernelFd,
        a: &mut vfio_device_attach_iommufd_pt,
    ) -> KResult<()> {
        paused(|| self.0.device_attach_iommufd_pt(d, a))
    }
    fn device_detach_iommufd_pt(
        &self,
        d: &KernelFd,
        a: &mut vfio_device_detach_iommufd_pt,
    ) -> KResult<()> {
        paused(|| self.0.device_detach_iommufd_pt(d, a))
    }
    fn region_read(&self, d: &KernelFd, o: u64, b: &mut [u8]) -> KResult<usize> {
        paused(|| self.0.region_read(d, o, b))
    }
    fn region_write(&self, d: &KernelFd, o: u64, b: &[u8]) -> KResult<usize> {
        paused(|| self.0.region_write(d, o, b))
    }
    fn mmap(&self, d: &KernelFd, o: u64, l: usize, p: i32) -> KResult<NonNull<u8>> {
        paused(|| self.0.mmap(d, o, l, p))
    }
    unsafe fn munmap(&self, a: NonNull<u8>, l: usize) -> KResult<()> {
        // SAFETY: forwarded contract.
        paused(|| unsafe { self.0.munmap(a, l) })
    }
    fn ioas_alloc(&self, i: &KernelFd, a: &mut iommu_ioas_alloc) -> KResult<()> {
        paused(|| self.0.ioas_alloc(i, a))
    }
    unsafe fn ioas_map(&self, i: &KernelFd, m: &mut iommu_ioas_map) -> KResult<()> {
        // SAFETY: the caller's contract is passed on unchanged.
        paused(|| unsafe { self.0.ioas_map(i, m) })
    }
    fn ioas_unmap(&self, i: &KernelFd, u: &mut iommu_ioas_unmap) -> KResult<()> {
        paused(|| self.0.ioas_unmap(i, u))
    }
    fn ioas_iova_ranges(&self, i: &KernelFd, b: &mut [u8]) -> KResult<()> {
        paused(|| self.0.ioas_iova_ranges(i, b))
    }
    unsafe fn ioas_map_file(&self, i: &KernelFd, m: &mut iommu_ioas_map_file) -> KResult<()> {
        // SAFETY: the caller's contract is passed on unchanged.
        paused(|| unsafe { self.0.ioas_map_file(i, m) })
    }
    fn ioas_change_process(&self, i: &KernelFd, c: &mut iommu_ioas_change_process) -> KResult<()> {
        paused(|| self.0.ioas_change_process(i, c))
    }
    fn iommufd_destroy(&self, i: &KernelFd, id: u32) -> KResult<()> {
        paused(|| self.0.iommufd_destroy(i, id))
    }
    fn eventfd(&self) -> KResult<vmm_sys_util::eventfd::EventFd> {
        paused(|| self.0.eventfd())
    }
    fn memlock_limit(&self) -> KResult<u64> {
        paused(|| self.0.memlock_limit())
    }
    fn device_feature(&self, d: &KernelFd, buf: &mut [u8]) -> KResult<i32> {
        paused(|| self.0.device_feature(d, buf))
    }
    fn device_bind_iommufd_with_token(
        &self,
        d: &KernelFd,
        bind: &mut vfio_device_bind_iommufd,
        token: &[u8; 16],
    ) -> KResult<()> {
        paused(|| self.0.device_bind_iommufd_with_token(d, bind, token))
    }
}

#[test]
fn hot_paths_allocate_nothing() {
    for interface in
        [Interface::Container, Interface::ContainerWith(IommuType::Type1), Interface::Iommufd]
    {
        let host = MockHost::new([DeviceSpec::nvme("0000:01:00.0").group(2).driver("vfio-pci")]);
        host.set_kernel_config(MockKernelConfig { cap_ipc_lock: true, ..Default::default() });
        let vfio = Vfio::new(Arc::new(Paused(host.kernel())), host.fs());
        let dev = vfio.open(PciAddress::parse("0000:01:00.0").unwrap(), interface).unwrap();
        let space = dev.address_space();
        let bar = dev.bar(0).unwrap();
        let fds = dev.new_eventfds(4).unwrap();
        dev.enable_irqs_all(IrqIndex::Msix, 0, &fds).unwrap();
        let mem = vec![0u8; 2 << 20];
        let va = (mem.as_ptr() as u64 + 4095) & !4095;
        let mut buf = [0u8; 64];

        let n = allocations(|| {
            for i in 0..100u64 {
                // SAFETY: `mem` outlives the mapping, undone on the next line.
                unsafe { space.map(va, 0x100_0000, 0x1000, DmaPerm::ReadWrite) }.unwrap();
                space.unmap(0x100_0000, 0x1000).unwrap();
                dev.read_region(0, 0, &mut buf).unwrap();
                dev.write_region(0, 0x40, &buf[..8]).unwrap();
                let _: u32 = bar.read(0x0).unwrap();
                bar.write(0x8, i as u32).unwrap();
                let _: u64 = bar.read(0x10).unwrap();
                let _ = dev.config_read_u32(0).unwrap();
                dev.config_write_u16(4, 0x6).unwrap();
                dev.trigger_irqs(IrqIndex::Msix, 0, 4).unwrap();
                dev.enable_irqs_all(IrqIndex::Msix, 0, &fds).unwrap();
            }
        });
        assert_eq!(n, 0, "{interface:?}: the hot paths allocated {n} times");
        // The counter works: the same check on something that allocates sees it.
        assert!(allocations(|| drop(vec![0u8; 16])) > 0);
    }
}
