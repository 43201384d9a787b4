//! The mock VFIO/iommufd kernel: [`MockKernel`], an implementation of
//! [`VfioKernel`] over the shared simulated host.
//!
//! Every rule below carries a comment naming the Linux source it models
//! (`container.c` = drivers/vfio/container.c, `group.c` = drivers/vfio/group.c,
//! `type1` = drivers/vfio/vfio_iommu_type1.c, `pci_core` = drivers/vfio/pci/vfio_pci_core.c,
//! `pci_intrs` = drivers/vfio/pci/vfio_pci_intrs.c, `pci_rdwr` = drivers/vfio/pci/vfio_pci_rdwr.c,
//! `iommufd/*` = drivers/iommu/iommufd/*, `device_cdev.c` = drivers/vfio/device_cdev.c).
//!
//! Not modelled: no-IOMMU device cdevs, privilege checks (CAP_SYS_RAWIO, CAP_IPC_LOCK
//! apart from [`MockKernelConfig::cap_ipc_lock`]), slot resets, dirty-page tracking,
//! PASID attach, host drivers refusing to bind into a group owned by a user, vfio's
//! split between the virtual and the hardware config space (one image with write masks
//! here), migration, dirty-page logging and dma-buf export (`VFIO_DEVICE_FEATURE`
//! answers as vfio-pci does for a plain PCI function), power states in config space, and
//! `VFIO_DEVICE_IOEVENTFD`.
//!
//! Descriptors handed out by the mock are real descriptors of the process (each backed by
//! an empty memfd), so that objects can lend them as `BorrowedFd` and a descriptor handed
//! out with `export` and back with `adopt` (fd passing) is recognised by its inode, as
//! the kernel recognises its file.
//! Interrupts are delivered on real eventfds: `SET_IRQS` duplicates the caller's eventfd
//! and a trigger writes to it. BARs are backed by a memfd each, so `mmap` returns a real
//! shared mapping that `pread`/`pwrite` see.
//!
//! The files follow the kernel's objects, and this one is the table of operations: each
//! [`VfioKernel`] method enters the kernel (`fds.rs`: counts the call, fires an injected
//! fault, takes the lock) and hands the locked state to the function that models it.
//!
//! | file | models |
//! | --- | --- |
//! | `state.rs` | [`KernelState`] and the kernel objects in it |
//! | `fds.rs` | the descriptor table, the calls' gate, call and leak counters |
//! | `group.rs` | vfio groups and no-IOMMU groups (`group.c`) |
//! | `type1.rs` | containers and the type1 IOMMU (`container.c`, `type1`) |
//! | `iommufd.rs` | iommufd contexts, IOASes, auto domains (`iommufd/*`) |
//! | `cdev.rs` | device cdevs: bind, attach, detach (`device_cdev.c`) |
//! | `device.rs` | device open and close, device info (`pci_core`) |
//! | `region.rs` | region info, region read/write, BAR mmap, ROM (`pci_core`, `pci_rdwr`) |
//! | `config.rs` | config space and its write masks (`vfio_pci_config.c`) |
//! | `irq.rs` | IRQ info, `SET_IRQS`, eventfd delivery (`pci_intrs`) |
//! | `reset.rs` | function reset, hot reset (`pci_core`) |
//! | `feature.rs` | `VFIO_DEVICE_FEATURE`: low power, VF tokens (`vfio_main.c`, `pci_core`) |
//! | `dma.rs` | pinning checks and device DMA through the IOMMU |
//! | `model.rs` | [`DeviceModel`] and [`ModelCtx`] |
//! | `host.rs` | the kernel's side of [`MockHost`] |
//! | `info.rs`, `le.rs` | `*_GET_INFO` capability chains; little-endian fields |

mod cdev;
mod config;
mod device;
mod dma;
mod fds;
mod feature;
mod group;
mod host;
mod info;
mod iommufd;
mod irq;
mod le;
mod model;
mod region;
mod reset;
mod state;
mod type1;

use std::ffi::CStr;
use std::os::fd::OwnedFd;
use std::ptr::NonNull;

use super::MockHost;
use crate::kernel::*;

pub use fds::MOCK_FD_BASE;
pub(crate) use group::refresh_noiommu;
pub use model::{DeviceModel, ModelCtx};
pub use state::KernelState;

use region::Rw;

const PAGE: u64 = 4096;
/// `VFIO_PCI_OFFSET_SHIFT` (vfio_pci_priv.h): region index in bits 40 and up.
const OFFSET_SHIFT: u32 = 40;
const NUM_REGIONS: u32 = 9;
const NUM_IRQS: u32 = 5;
const ROM_INDEX: u32 = 6;
const CONFIG_INDEX: u32 = 7;
const VGA_INDEX: u32 = 8;
const INTX: u32 = 0;
const MSI: u32 = 1;
const MSIX: u32 = 2;
const ERR: u32 = 3;
const REQ: u32 = 4;

/// Kernel-level knobs of the mock: which interfaces exist and the module parameters and
/// limits the real kernel would have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockKernelConfig {
    /// `/dev/vfio/vfio` exists (CONFIG_VFIO_CONTAINER).
    pub container: bool,
    /// `/dev/vfio/vfio` is iommufd's compat container (CONFIG_IOMMUFD_VFIO_CONTAINER)
    /// instead of the legacy type1 one: no DMA entry limit (`dma_avail` u32::MAX), no
    /// `VFIO_UPDATE_VADDR`, iommufd's unmap rules (type1v2: ENOENT for a range that cuts
    /// a mapping; type1: the mapping is cut and exactly the range unmapped), and ENODEV
    /// from DMA ioctls of a no-IOMMU container.
    pub compat_container: bool,
    /// vfio_iommu_type1 offers `VFIO_TYPE1_IOMMU`.
    pub type1: bool,
    /// vfio_iommu_type1 offers `VFIO_TYPE1v2_IOMMU`.
    pub type1v2: bool,
    /// `/dev/iommu` and the device cdevs `/dev/vfio/devices/vfioN` exist.
    pub iommufd: bool,
    /// vfio's `enable_unsafe_noiommu_mode`: devices without an IOMMU group get
    /// `/dev/vfio/noiommu-N` groups.
    pub noiommu: bool,
    /// Usable IOVA ranges, inclusive `(start, last)`, sorted (the IOMMU aperture minus
    /// reserved regions such as the x86 MSI window).
    pub iova_ranges: Vec<(u64, u64)>,
    /// IOMMU page sizes supported (bit n = 2^n bytes).
    pub pgsize_bitmap: u64,
    /// vfio_iommu_type1's `dma_entry_limit` (mappings per container).
    pub dma_entry_limit: u32,
    /// `RLIMIT_MEMLOCK` of the process, in bytes (`u64::MAX` = unlimited).
    pub memlock_limit: u64,
    /// The process has CAP_IPC_LOCK (root): pinned memory is not limited.
    pub cap_ipc_lock: bool,
    /// The host IOMMU offers interrupt remapping (isolated MSI).
    pub interrupt_remapping: bool,
    /// `allow_unsafe_interrupts` of vfio_iommu_type1 and iommufd.
    pub allow_unsafe_interrupts: bool,
    /// Kernel 4.16 and later: the BAR holding the MSI-X table is mmap-able whole and
    /// reports `VFIO_REGION_INFO_CAP_MSIX_MAPPABLE`. `false` models older kernels: a
    /// sparse-mmap capability that leaves out the MSI-X table pages.
    pub msix_mappable: bool,
    /// The platform can allocate MSI-X vectors dynamically (kernel 6.5+, x86): the MSI-X
    /// IRQ info lacks `NORESIZE` and vectors can be added while MSI-X is enabled.
    pub dyn_msix: bool,
    /// CONFIG_VFIO_PCI_VGA: VGA-class devices expose the VGA region.
    pub vga: bool,
    /// Kernels before 6.18 answer a DMA map/unmap range wrapping past 2^64 with EINVAL
    /// instead of EOVERFLOW.
    pub wrap_einval: bool,
    /// Kernel 6.13 and later: iommufd has `IOMMU_IOAS_MAP_FILE` and
    /// `IOMMU_IOAS_CHANGE_PROCESS` (live update); `false` answers both with ENOTTY.
    pub ioas_map_file: bool,
    /// CONFIG_PM: a device whose low power was allowed (`LOW_POWER_ENTRY*`) suspends, and
    /// an access resumes it, signalling the wake-up eventfd of
    /// `LOW_POWER_ENTRY_WITH_WAKEUP`. Without it the device never suspends.
    pub runtime_pm: bool,
    /// CONFIG_VFIO_PCI_DMABUF (6.19+, with PCI_P2PDMA): vfio-pci offers
    /// `VFIO_DEVICE_FEATURE_DMA_BUF` (GET).
    pub dma_buf: bool,
    /// vfio handles `VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2` itself (EINVAL for a device
    /// without pre-copy, seen on 7.2), instead of passing it to the driver (ENOTTY).
    pub precopy_info_v2: bool,
    /// `VFIO_DEVICE_BIND_IOMMUFD` takes `VFIO_DEVICE_BIND_FLAG_TOKEN` and checks VF tokens
    /// (7.2 does; 6.12 refuses any flag with EINVAL and checks no token on the cdev).
    pub bind_token: bool,
}

impl Default for MockKernelConfig {
    fn default() -> Self {
        MockKernelConfig {
            container: true,
            compat_container: false,
            type1: true,
            type1v2: true,
            iommufd: true,
            noiommu: false,
            // x86: the aperture of a 48-bit IOMMU minus the MSI window 0xfee00000..0xfeefffff.
            iova_ranges: vec![(0, 0xfedf_ffff), (0xfef0_0000, (1 << 48) - 1)],
            pgsize_bitmap: (1 << 12) | (1 << 21) | (1 << 30),
            dma_entry_limit: 65535,
            memlock_limit: 8 << 20,
            cap_ipc_lock: false,
            interrupt_remapping: true,
            allow_unsafe_interrupts: false,
            msix_mappable: true,
            dyn_msix: true,
            vga: true,
            wrap_einval: false,
            ioas_map_file: true,
            runtime_pm: true,
            dma_buf: true,
            precopy_info_v2: true,
            bind_token: true,
        }
    }
}

impl MockKernelConfig {
    /// The mock imitating Linux `major.minor` where kernels answer differently (every
    /// other field as [`Default`]): the MSI-X BAR mmap-able whole from 4.16, dynamic MSI-X
    /// from 6.5, iommufd's `IOMMU_IOAS_MAP_FILE` and `IOMMU_IOAS_CHANGE_PROCESS` from 6.13,
    /// EOVERFLOW for a DMA range wrapping past 2^64 from 6.18 (EINVAL before).
    /// from 6.5, EOVERFLOW for a DMA range wrapping past 2^64 from 6.18 (EINVAL before),
    /// `VFIO_DEVICE_FEATURE_DMA_BUF` from 6.19 (where the build has it), vfio's own answer
    /// to `MIG_PRECOPY_INFOv2` on 7.2 (ENOTTY from vfio-pci on 6.12), VF tokens in the
    /// cdev's bind from 6.17.
    /// The VM lab checks these against the real 6.12 and 7.2 (`tests/conformance/`).
    ///
    /// ```
    /// use vfio_core::mock::MockKernelConfig;
    /// assert!(MockKernelConfig::linux(6, 12).wrap_einval);
    /// assert!(!MockKernelConfig::linux(7, 2).wrap_einval);
    /// assert!(!MockKernelConfig::linux(6, 12).ioas_map_file);
    /// ```
    pub fn linux(major: u32, minor: u32) -> MockKernelConfig {
        let at_least = |m: u32, n: u32| (major, minor) >= (m, n);
        MockKernelConfig {
            msix_mappable: at_least(4, 16),
            dyn_msix: at_least(6, 5),
            wrap_einval: !at_least(6, 18),
            ioas_map_file: at_least(6, 13),
            dma_buf: at_least(6, 19),
            precopy_info_v2: at_least(7, 2),
            bind_token: at_least(6, 17),
            ..MockKernelConfig::default()
        }
    }

    /// The smallest IOMMU page size (at least 4 KiB): the IOVA alignment of mappings.
    fn iommu_page(&self) -> u64 {
        1 << self.pgsize_bitmap.trailing_zeros().max(12)
    }

    /// Devices may be given to the user as far as interrupts go: MSI is isolated
    /// (interrupt remapping), or `allow_unsafe_interrupts` is set.
    fn msi_safe(&self) -> bool {
        self.interrupt_remapping || self.allow_unsafe_interrupts
    }

    /// RLIMIT_MEMLOCK accounting: ENOMEM unless `pages` more pinned on top of `locked`
    /// stay within the limit (or the process has CAP_IPC_LOCK).
    fn check_memlock(&self, locked: u64, pages: u64) -> KResult<()> {
        if !self.cap_ipc_lock && locked + pages > self.memlock_limit / PAGE {
            return Err(Errno::ENOMEM);
        }
        Ok(())
    }

    /// The errno of a DMA map/unmap range wrapping past 2^64: EOVERFLOW since 6.18
    /// (check_add_overflow), EINVAL before (see [`MockKernelConfig::wrap_einval`]).
    fn wrap_errno(&self) -> Errno {
        if self.wrap_einval {
            Errno::EINVAL
        } else {
            Errno::EOVERFLOW
        }
    }
}

/// The mock kernel: a handle on the kernel state of a [`MockHost`].
///
/// Every [`MockHost::kernel`] call returns a handle on the same kernel.
#[derive(Debug, Clone)]
pub struct MockKernel {
    host: MockHost,
}

impl MockKernel {
    /// The host this kernel belongs to.
    pub fn host(&self) -> &MockHost {
        &self.host
    }
}

// SAFETY: `mmap` hands out memfd mappings of the length asked (BARs are memfd-backed)
// that live until `munmap`; DMA maps only record ranges, and the simulated devices read
// and write through them only while they are mapped.
unsafe impl VfioKernel for MockKernel {
    fn open_container(&self) -> KResult<KernelFd> {
        type1::open_container(&mut self.enter(KernelOp::OpenContainer)?.kernel)
    }

    fn open_group(&self, group: GroupNode) -> KResult<KernelFd> {
        group::open(&mut *self.enter(KernelOp::OpenGroup)?, group)
    }

    fn open_iommufd(&self) -> KResult<KernelFd> {
        iommufd::open(&mut self.enter(KernelOp::OpenIommufd)?.kernel)
    }

    fn open_device_cdev(&self, index: u32) -> KResult<KernelFd> {
        cdev::open(&mut *self.enter(KernelOp::OpenDeviceCdev)?, index)
    }

    fn export(&self, fd: KernelFd) -> OwnedFd {
        fds::export(&mut self.host.state().kernel, fd)
    }

    /// Recognises a descriptor the mock handed out (with [`VfioKernel::export`]), by the
    /// inode of its file, under whatever number it arrives (passed over a socket, dup'ed
    /// by a parent). The object moves to the new descriptor, as if the parent had closed
    /// its copy; a descriptor the mock never handed out is EBADF.
    fn adopt(&self, fd: OwnedFd) -> KResult<KernelFd> {
        fds::adopt(&mut self.enter(KernelOp::AdoptFd)?.kernel, fd)
    }

    fn close(&self, fd: KernelFd) {
        // close() releases the descriptor even when it reports an error.
        let mut st = self.enter(KernelOp::Close).unwrap_or_else(|_| self.host.state());
        fds::close(&mut st, fd)
    }

    fn get_api_version(&self, container: &KernelFd) -> KResult<i32> {
        type1::get_api_version(&self.enter(KernelOp::GetApiVersion)?.kernel, container)
    }

    fn check_extension(&self, container: &KernelFd, extension: u32) -> KResult<u32> {
        let st = self.enter(KernelOp::CheckExtension)?;
        type1::check_extension(&st.kernel, container, extension)
    }

    fn set_iommu(&self, container: &KernelFd, iommu_type: u32) -> KResult<()> {
        type1::set_iommu(&mut self.enter(KernelOp::SetIommu)?.kernel, container, iommu_type)
    }

    fn iommu_get_info(&self, container: &KernelFd, buf: &mut [u8]) -> KResult<()> {
        type1::get_info(&self.enter(KernelOp::IommuGetInfo)?.kernel, container, buf)
    }

    unsafe fn map_dma(&self, container: &KernelFd, map: &vfio_iommu_type1_dma_map) -> KResult<()> {
        type1::map_dma(&mut self.enter(KernelOp::MapDma)?.kernel, container, map)
    }

    fn unmap_dma(
        &self,
        container: &KernelFd,
        unmap: &mut vfio_iommu_type1_dma_unmap,
    ) -> KResult<()> {
        type1::unmap_dma(&mut self.enter(KernelOp::UnmapDma)?.kernel, container, unmap)
    }

    fn group_get_status(&self, group: &KernelFd) -> KResult<u32> {
        group::get_status(&*self.enter(KernelOp::GroupGetStatus)?, group)
    }

    fn group_set_container(&self, group: &KernelFd, container: &KernelFd) -> KResult<()> {
        let mut st = self.enter(KernelOp::GroupSetContainer)?;
        group::set_container(&mut st, group, container)
    }

    fn group_unset_container(&self, group: &KernelFd) -> KResult<()> {
        let mut st = self.enter(KernelOp::GroupUnsetContainer)?;
        group::unset_container(&mut st.kernel, group)
    }

    fn group_get_device_fd(&self, group: &KernelFd, name: &CStr) -> KResult<KernelFd> {
        group::get_device_fd(&mut *self.enter(KernelOp::GroupGetDeviceFd)?, group, name)
    }

    fn device_get_info(&self, device: &KernelFd, buf: &mut [u8]) -> KResult<()> {
        device::get_info(&*self.enter(KernelOp::DeviceGetInfo)?, device, buf)
    }

    fn device_get_region_info(&self, device: &KernelFd, buf: &mut [u8]) -> KResult<()> {
        region::get_info(&*self.enter(KernelOp::DeviceGetRegionInfo)?, device, buf)
    }

    fn device_get_irq_info(&self, device: &KernelFd, info: &mut vfio_irq_info) -> KResult<()> {
        irq::get_info(&*self.enter(KernelOp::DeviceGetIrqInfo)?, device, info)
    }

    fn device_set_irqs(&self, device: &KernelFd, buf: &[u8]) -> KResult<()> {
        irq::set_irqs(&mut *self.enter(KernelOp::DeviceSetIrqs)?, device, buf)
    }

    fn device_reset(&self, device: &KernelFd) -> KResult<()> {
        reset::device_reset(&mut *self.enter(KernelOp::DeviceReset)?, device)
    }

    fn device_get_pci_hot_reset_info(&self, device: &KernelFd, buf: &mut [u8]) -> KResult<()> {
        reset::hot_reset_info(&*self.enter(KernelOp::DeviceGetPciHotResetInfo)?, device, buf)
    }

    fn device_pci_hot_reset(&self, device: &KernelFd, buf: &[u8]) -> KResult<()> {
        reset::hot_reset(&mut *self.enter(KernelOp::DevicePciHotReset)?, device, buf)
    }

    fn device_bind_iommufd(
        &self,
        device: &KernelFd,
        bind: &mut vfio_device_bind_iommufd,
    ) -> KResult<()> {
        cdev::bind_iommufd(&mut *self.enter(KernelOp::DeviceBindIommufd)?, device, bind)
    }

    fn device_attach_iommufd_pt(
        &self,
        device: &KernelFd,
        attach: &mut vfio_device_attach_iommufd_pt,
    ) -> KResult<()> {
        cdev::attach_pt(&mut self.enter(KernelOp::DeviceAttachIommufdPt)?.kernel, device, attach)
    }

    fn device_detach_iommufd_pt(
        &self,
        device: &KernelFd,
        detach: &mut vfio_device_detach_iommufd_pt,
    ) -> KResult<()> {
        cdev::detach_pt(&mut self.enter(KernelOp::DeviceDetachIommufdPt)?.kernel, device, detach)
    }

    fn region_read(&self, device: &KernelFd, offset: u64, buf: &mut [u8]) -> KResult<usize> {
        region::access(&mut *self.enter(KernelOp::RegionRead)?, device, offset, Rw::Read(buf))
    }

    fn region_write(&self, device: &KernelFd, offset: u64, buf: &[u8]) -> KResult<usize> {
        region::access(&mut *self.enter(KernelOp::RegionWrite)?, device, offset, Rw::Write(buf))
    }

    fn mmap(&self, device: &KernelFd, offset: u64, len: usize, prot: i32) -> KResult<NonNull<u8>> {
        region::mmap(&mut *self.enter(KernelOp::Mmap)?, device, offset, len, prot)
    }

    unsafe fn munmap(&self, addr: NonNull<u8>, len: usize) -> KResult<()> {
        let mut st = self.enter(KernelOp::Munmap)?;
        // SAFETY: the caller's promise (exactly a mapping from `mmap` that nothing uses
        // any more) is what `region::munmap` asks.
        unsafe { region::munmap(&mut st.kernel, addr, len) }
    }

    fn ioas_alloc(&self, iommufd: &KernelFd, alloc: &mut iommu_ioas_alloc) -> KResult<()> {
        iommufd::ioas_alloc(&mut self.enter(KernelOp::IoasAlloc)?.kernel, iommufd, alloc)
    }

    unsafe fn ioas_map(&self, iommufd: &KernelFd, map: &mut iommu_ioas_map) -> KResult<()> {
        iommufd::ioas_map(&mut self.enter(KernelOp::IoasMap)?.kernel, iommufd, map)
    }

    fn ioas_unmap(&self, iommufd: &KernelFd, unmap: &mut iommu_ioas_unmap) -> KResult<()> {
        iommufd::ioas_unmap(&mut self.enter(KernelOp::IoasUnmap)?.kernel, iommufd, unmap)
    }

    fn ioas_iova_ranges(&self, iommufd: &KernelFd, buf: &mut [u8]) -> KResult<()> {
        iommufd::ioas_iova_ranges(&self.enter(KernelOp::IoasIovaRanges)?.kernel, iommufd, buf)
    }

    unsafe fn ioas_map_file(
        &self,
        iommufd: &KernelFd,
        map: &mut iommu_ioas_map_file,
    ) -> KResult<()> {
        iommufd::ioas_map_file(&mut self.enter(KernelOp::IoasMapFile)?.kernel, iommufd, map)
    }

    fn ioas_change_process(
        &self,
        iommufd: &KernelFd,
        change: &mut iommu_ioas_change_process,
    ) -> KResult<()> {
        iommufd::change_process(&self.enter(KernelOp::IoasChangeProcess)?.kernel, iommufd, change)
    }

    fn iommufd_destroy(&self, iommufd: &KernelFd, id: u32) -> KResult<()> {
        iommufd::destroy(&mut self.enter(KernelOp::IommufdDestroy)?.kernel, iommufd, id)
    }

    fn eventfd(&self) -> KResult<vmm_sys_util::eventfd::EventFd> {
        let _st = self.enter(KernelOp::EventFd)?;
        irq::new_eventfd()
    }

    fn memlock_limit(&self) -> KResult<u64> {
        Ok(self.enter(KernelOp::MemlockLimit)?.kernel.config.memlock_limit)
    }

    fn device_feature(&self, device: &KernelFd, buf: &mut [u8]) -> KResult<i32> {
        feature::device_feature(&mut *self.enter(KernelOp::DeviceFeature)?, device, buf)
    }

    fn device_bind_iommufd_with_token(
        &self,
        device: &KernelFd,
        bind: &mut vfio_device_bind_iommufd,
        token: &[u8; 16],
    ) -> KResult<()> {
        let mut st = self.enter(KernelOp::DeviceBindIommufd)?;
        cdev::bind_iommufd_token(&mut st, device, bind, Some(token))
    }
}
