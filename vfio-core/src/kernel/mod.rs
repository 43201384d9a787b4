//! The kernel seam: every VFIO and iommufd device-node operation the toolkit issues.
//!
//! [`VfioKernel`] has one method per kernel operation (an `open`, an ioctl, a `pread`,
//! an `mmap`). Its arguments are the kernel's own ABI structs from `vfio-bindings` and
//! `iommufd-bindings`; variable-length calls (`*_GET_INFO` with capability chains,
//! `SET_IRQS` with a payload) take the raw byte buffer the kernel would see, so the
//! decoders above this layer parse exactly what a real kernel returns.
//!
//! Two implementations exist: [`RealKernel`] (the host's `/dev`) and, with the `mock`
//! feature, `mock::MockKernel`, which models the kernel's semantics.
//! Nothing above this module touches a VFIO file descriptor directly.

mod real;

use std::ffi::CStr;
use std::fmt;
use std::os::fd::RawFd;
use std::ptr::NonNull;

pub use nix::errno::Errno;
pub use real::RealKernel;

pub use iommufd_bindings::iommufd::{
    iommu_destroy, iommu_ioas_alloc, iommu_ioas_change_process, iommu_ioas_iova_ranges,
    iommu_ioas_map, iommu_ioas_map_file, iommu_ioas_unmap, iommu_iova_range,
};
pub use vfio_bindings::bindings::vfio::{
    vfio_device_attach_iommufd_pt, vfio_device_bind_iommufd, vfio_device_detach_iommufd_pt,
    vfio_device_info, vfio_info_cap_header, vfio_iommu_type1_dma_map, vfio_iommu_type1_dma_unmap,
    vfio_iommu_type1_info, vfio_irq_info, vfio_irq_set, vfio_pci_hot_reset,
    vfio_pci_hot_reset_info, vfio_region_info,
};

/// Result of one kernel operation: the value, or the errno the kernel returned.
pub type KResult<T> = Result<T, Errno>;

/// A file descriptor opened through a [`VfioKernel`].
///
/// It is deliberately neither `Clone` nor `Copy` and does not close itself: its owner
/// (a container, group, device or IOAS object) hands it back to
/// [`VfioKernel::close`] exactly once, so that a backend sees every close (the mock
/// needs that to model a group leaving its container, and to count leaks).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct KernelFd(RawFd);

impl KernelFd {
    /// Wraps a raw descriptor. Only backends create these.
    pub fn from_raw(fd: RawFd) -> Self {
        KernelFd(fd)
    }

    /// The raw descriptor number (for passing in ioctl payloads such as `SET_CONTAINER`
    /// or the group list of `PCI_HOT_RESET`).
    pub fn raw(&self) -> RawFd {
        self.0
    }
}

/// Which device node of a VFIO group to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupNode {
    /// `/dev/vfio/N`, a group behind a real IOMMU.
    Iommu(u32),
    /// `/dev/vfio/noiommu-N`, a group in unsafe no-IOMMU mode.
    NoIommu(u32),
}

impl GroupNode {
    /// The group number.
    pub fn id(self) -> u32 {
        match self {
            GroupNode::Iommu(n) | GroupNode::NoIommu(n) => n,
        }
    }

    /// The node's path relative to the `/dev` directory, e.g. `vfio/3`.
    pub fn dev_path(self) -> String {
        match self {
            GroupNode::Iommu(n) => format!("vfio/{n}"),
            GroupNode::NoIommu(n) => format!("vfio/noiommu-{n}"),
        }
    }
}

/// Every kernel operation the seam offers, named as the kernel names it.
///
/// Errors carry one of these, and the mock's fault injection selects operations by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum KernelOp {
    /// `open("/dev/vfio/vfio")`.
    OpenContainer,
    /// `open("/dev/vfio/N")` or `open("/dev/vfio/noiommu-N")`.
    OpenGroup,
    /// `open("/dev/iommu")`.
    OpenIommufd,
    /// `open("/dev/vfio/devices/vfioN")`.
    OpenDeviceCdev,
    /// `close(fd)`.
    Close,
    /// Taking in a descriptor opened elsewhere (fd passing).
    AdoptFd,
    /// `KVM_CREATE_DEVICE` (the KVM VFIO device).
    KvmCreateDevice,
    /// `KVM_SET_DEVICE_ATTR` on the KVM VFIO device (`KVM_DEV_VFIO_FILE_ADD`/`DEL`).
    KvmSetDeviceAttr,
    /// `KVM_SET_GSI_ROUTING`.
    KvmSetGsiRouting,
    /// `KVM_IRQFD`.
    KvmIrqfd,
    /// `VFIO_GET_API_VERSION`.
    GetApiVersion,
    /// `VFIO_CHECK_EXTENSION`.
    CheckExtension,
    /// `VFIO_SET_IOMMU`.
    SetIommu,
    /// `VFIO_IOMMU_GET_INFO`.
    IommuGetInfo,
    /// `VFIO_IOMMU_MAP_DMA`.
    MapDma,
    /// `VFIO_IOMMU_UNMAP_DMA`.
    UnmapDma,
    /// `VFIO_GROUP_GET_STATUS`.
    GroupGetStatus,
    /// `VFIO_GROUP_SET_CONTAINER`.
    GroupSetContainer,
    /// `VFIO_GROUP_UNSET_CONTAINER`.
    GroupUnsetContainer,
    /// `VFIO_GROUP_GET_DEVICE_FD`.
    GroupGetDeviceFd,
    /// `VFIO_DEVICE_GET_INFO`.
    DeviceGetInfo,
    /// `VFIO_DEVICE_GET_REGION_INFO`.
    DeviceGetRegionInfo,
    /// `VFIO_DEVICE_GET_IRQ_INFO`.
    DeviceGetIrqInfo,
    /// `VFIO_DEVICE_SET_IRQS`.
    DeviceSetIrqs,
    /// `VFIO_DEVICE_RESET`.
    DeviceReset,
    /// `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO`.
    DeviceGetPciHotResetInfo,
    /// `VFIO_DEVICE_PCI_HOT_RESET`.
    DevicePciHotReset,
    /// `VFIO_DEVICE_BIND_IOMMUFD`.
    DeviceBindIommufd,
    /// `VFIO_DEVICE_ATTACH_IOMMUFD_PT`.
    DeviceAttachIommufdPt,
    /// `VFIO_DEVICE_DETACH_IOMMUFD_PT`.
    DeviceDetachIommufdPt,
    /// `pread` on a device fd (region access).
    RegionRead,
    /// `pwrite` on a device fd (region access).
    RegionWrite,
    /// `mmap` of a device region.
    Mmap,
    /// `munmap` of a device region mapping.
    Munmap,
    /// `IOMMU_IOAS_ALLOC`.
    IoasAlloc,
    /// `IOMMU_IOAS_MAP`.
    IoasMap,
    /// `IOMMU_IOAS_UNMAP`.
    IoasUnmap,
    /// `IOMMU_IOAS_IOVA_RANGES`.
    IoasIovaRanges,
    /// `IOMMU_IOAS_MAP_FILE` (Linux 6.13+).
    IoasMapFile,
    /// `IOMMU_IOAS_CHANGE_PROCESS` (Linux 6.13+).
    IoasChangeProcess,
    /// `IOMMU_DESTROY`.
    IommufdDestroy,
    /// `eventfd(0, EFD_CLOEXEC)`.
    EventFd,
    /// `getrlimit(RLIMIT_MEMLOCK)`.
    MemlockLimit,
    /// `VFIO_DEVICE_FEATURE`.
    DeviceFeature,
}

impl KernelOp {
    /// The kernel's name for the operation (`VFIO_IOMMU_MAP_DMA`, `open /dev/vfio/vfio`, ...).
    pub fn kernel_name(self) -> &'static str {
        use KernelOp::*;
        match self {
            OpenContainer => "open /dev/vfio/vfio",
            OpenGroup => "open /dev/vfio/<group>",
            OpenIommufd => "open /dev/iommu",
            OpenDeviceCdev => "open /dev/vfio/devices/vfio<N>",
            Close => "close",
            AdoptFd => "adopt descriptor",
            KvmCreateDevice => "KVM_CREATE_DEVICE",
            KvmSetDeviceAttr => "KVM_SET_DEVICE_ATTR",
            KvmSetGsiRouting => "KVM_SET_GSI_ROUTING",
            KvmIrqfd => "KVM_IRQFD",
            GetApiVersion => "VFIO_GET_API_VERSION",
            CheckExtension => "VFIO_CHECK_EXTENSION",
            SetIommu => "VFIO_SET_IOMMU",
            IommuGetInfo => "VFIO_IOMMU_GET_INFO",
            MapDma => "VFIO_IOMMU_MAP_DMA",
            UnmapDma => "VFIO_IOMMU_UNMAP_DMA",
            GroupGetStatus => "VFIO_GROUP_GET_STATUS",
            GroupSetContainer => "VFIO_GROUP_SET_CONTAINER",
            GroupUnsetContainer => "VFIO_GROUP_UNSET_CONTAINER",
            GroupGetDeviceFd => "VFIO_GROUP_GET_DEVICE_FD",
            DeviceGetInfo => "VFIO_DEVICE_GET_INFO",
            DeviceGetRegionInfo => "VFIO_DEVICE_GET_REGION_INFO",
            DeviceGetIrqInfo => "VFIO_DEVICE_GET_IRQ_INFO",
            DeviceSetIrqs => "VFIO_DEVICE_SET_IRQS",
            DeviceReset => "VFIO_DEVICE_RESET",
            DeviceGetPciHotResetInfo => "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO",
            DevicePciHotReset => "VFIO_DEVICE_PCI_HOT_RESET",
            DeviceBindIommufd => "VFIO_DEVICE_BIND_IOMMUFD",
            DeviceAttachIommufdPt => "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
            DeviceDetachIommufdPt => "VFIO_DEVICE_DETACH_IOMMUFD_PT",
            RegionRead => "pread(region)",
            RegionWrite => "pwrite(region)",
            Mmap => "mmap(region)",
            Munmap => "munmap(region)",
            IoasAlloc => "IOMMU_IOAS_ALLOC",
            IoasMap => "IOMMU_IOAS_MAP",
            IoasUnmap => "IOMMU_IOAS_UNMAP",
            IoasIovaRanges => "IOMMU_IOAS_IOVA_RANGES",
            IoasMapFile => "IOMMU_IOAS_MAP_FILE",
            IoasChangeProcess => "IOMMU_IOAS_CHANGE_PROCESS",
            IommufdDestroy => "IOMMU_DESTROY",
            EventFd => "eventfd",
            MemlockLimit => "getrlimit(RLIMIT_MEMLOCK)",
            DeviceFeature => "VFIO_DEVICE_FEATURE",
        }
    }
}

impl fmt::Display for KernelOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kernel_name())
    }
}

/// The VFIO and iommufd kernel interface, one method per kernel operation.
///
/// Implementations are internally synchronised: every method takes `&self` and may be
/// called from several threads, as the kernel allows concurrent ioctls on one fd.
///
/// The caller fills every struct's `argsz` (or `size`) field, as with the ioctl itself.
/// Buffers passed as `&mut [u8]` hold the kernel struct named in the method's doc at
/// offset 0, with its `argsz` filled in by the caller; the callee fills the struct and
/// any capability chain that fits in `argsz` exactly as the kernel does (raising
/// `argsz` to the size it needs when the buffer is too small).
///
/// # Safety
///
/// The safe objects of this crate build references and volatile accesses on what an
/// implementation returns, so an implementation must keep the kernel's promises:
///
/// - [`VfioKernel::mmap`] returns the start of a live mapping of at least `len` bytes,
///   readable when `prot` has `PROT_READ` and writable when it has `PROT_WRITE`, that
///   stays valid until [`VfioKernel::munmap`] is called on it and is aliased by no Rust
///   reference;
/// - [`VfioKernel::map_dma`], [`VfioKernel::ioas_map`] and [`VfioKernel::ioas_map_file`]
///   let a device reach only the memory (or file pages) the caller named, and only until
///   it is unmapped;
/// - [`VfioKernel::region_read`] never returns more than `buf.len()`, and every method
///   writes only into the buffers it is given;
/// - every [`KernelFd`] it hands out is an open descriptor of this process until it is
///   given to [`VfioKernel::close`] or [`VfioKernel::export`] (objects lend it as a
///   `BorrowedFd`).
///
/// `RealKernel` keeps them by being the kernel; the mock keeps them by construction.
pub unsafe trait VfioKernel: Send + Sync + fmt::Debug {
    /// Opens the legacy container node `/dev/vfio/vfio`.
    fn open_container(&self) -> KResult<KernelFd>;
    /// Opens a group node.
    fn open_group(&self, group: GroupNode) -> KResult<KernelFd>;
    /// Opens the iommufd node `/dev/iommu`.
    fn open_iommufd(&self) -> KResult<KernelFd>;
    /// Opens the device cdev `/dev/vfio/devices/vfio<index>`.
    fn open_device_cdev(&self, index: u32) -> KResult<KernelFd>;
    /// Closes a descriptor opened through this kernel.
    fn close(&self, fd: KernelFd);
    /// Hands a descriptor out of this kernel's bookkeeping as an owned descriptor (to
    /// pass it to another process or to [`VfioKernel::adopt`] it elsewhere). The object
    /// behind it stays as it is.
    fn export(&self, fd: KernelFd) -> std::os::fd::OwnedFd;
    /// Takes in a VFIO, iommufd or device descriptor opened elsewhere (by a privileged
    /// parent, say), so that objects can be built on it. Which object it is shows at its
    /// first use, as with the kernel; an unknown descriptor fails there with the kernel's
    /// errno (EBADF, EINVAL or ENOTTY).
    fn adopt(&self, fd: std::os::fd::OwnedFd) -> KResult<KernelFd>;

    /// `VFIO_GET_API_VERSION` on a container.
    fn get_api_version(&self, container: &KernelFd) -> KResult<i32>;
    /// `VFIO_CHECK_EXTENSION`: the ioctl's return value (0 = not supported).
    fn check_extension(&self, container: &KernelFd, extension: u32) -> KResult<u32>;
    /// `VFIO_SET_IOMMU` with an IOMMU type (`VFIO_TYPE1v2_IOMMU`, `VFIO_NOIOMMU_IOMMU`, ...).
    fn set_iommu(&self, container: &KernelFd, iommu_type: u32) -> KResult<()>;
    /// `VFIO_IOMMU_GET_INFO`; `buf` holds a `vfio_iommu_type1_info`.
    fn iommu_get_info(&self, container: &KernelFd, buf: &mut [u8]) -> KResult<()>;
    /// `VFIO_IOMMU_MAP_DMA`.
    ///
    /// # Safety
    /// `map.vaddr .. map.vaddr + map.size` must be memory the caller owns and keeps
    /// mapped until the IOVA range is unmapped, and that no Rust reference assumes the
    /// device will not write (the device may write it at any time).
    unsafe fn map_dma(&self, container: &KernelFd, map: &vfio_iommu_type1_dma_map) -> KResult<()>;
    /// `VFIO_IOMMU_UNMAP_DMA`; the kernel writes the unmapped size back into `unmap.size`.
    fn unmap_dma(
        &self,
        container: &KernelFd,
        unmap: &mut vfio_iommu_type1_dma_unmap,
    ) -> KResult<()>;

    /// `VFIO_GROUP_GET_STATUS`: the status flags (`VFIO_GROUP_FLAGS_*`).
    fn group_get_status(&self, group: &KernelFd) -> KResult<u32>;
    /// `VFIO_GROUP_SET_CONTAINER`.
    fn group_set_container(&self, group: &KernelFd, container: &KernelFd) -> KResult<()>;
    /// `VFIO_GROUP_UNSET_CONTAINER`.
    fn group_unset_container(&self, group: &KernelFd) -> KResult<()>;
    /// `VFIO_GROUP_GET_DEVICE_FD` with the device name (`0000:01:00.0`).
    fn group_get_device_fd(&self, group: &KernelFd, name: &CStr) -> KResult<KernelFd>;

    /// `VFIO_DEVICE_GET_INFO`; `buf` holds a `vfio_device_info`.
    fn device_get_info(&self, device: &KernelFd, buf: &mut [u8]) -> KResult<()>;
    /// `VFIO_DEVICE_GET_REGION_INFO`; `buf` holds a `vfio_region_info` with `index` set.
    fn device_get_region_info(&self, device: &KernelFd, buf: &mut [u8]) -> KResult<()>;
    /// `VFIO_DEVICE_GET_IRQ_INFO`; `info.index` selects the IRQ index.
    fn device_get_irq_info(&self, device: &KernelFd, info: &mut vfio_irq_info) -> KResult<()>;
    /// `VFIO_DEVICE_SET_IRQS`; `buf` holds a `vfio_irq_set` followed by its data
    /// (nothing, `count` bytes of bools, or `count` `i32` eventfds).
    fn device_set_irqs(&self, device: &KernelFd, buf: &[u8]) -> KResult<()>;
    /// `VFIO_DEVICE_RESET`.
    fn device_reset(&self, device: &KernelFd) -> KResult<()>;
    /// `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO`; `buf` holds a `vfio_pci_hot_reset_info`
    /// followed by room for `vfio_pci_dependent_device` entries (ENOSPC with `count` set
    /// when there is not enough room).
    fn device_get_pci_hot_reset_info(&self, device: &KernelFd, buf: &mut [u8]) -> KResult<()>;
    /// `VFIO_DEVICE_PCI_HOT_RESET`; `buf` holds a `vfio_pci_hot_reset` followed by
    /// `count` `i32` group fds (legacy) or nothing / an iommufd (cdev).
    fn device_pci_hot_reset(&self, device: &KernelFd, buf: &[u8]) -> KResult<()>;
    /// `VFIO_DEVICE_BIND_IOMMUFD`; the kernel fills `bind.out_devid`.
    fn device_bind_iommufd(
        &self,
        device: &KernelFd,
        bind: &mut vfio_device_bind_iommufd,
    ) -> KResult<()>;
    /// `VFIO_DEVICE_ATTACH_IOMMUFD_PT`.
    fn device_attach_iommufd_pt(
        &self,
        device: &KernelFd,
        attach: &mut vfio_device_attach_iommufd_pt,
    ) -> KResult<()>;
    /// `VFIO_DEVICE_DETACH_IOMMUFD_PT`.
    fn device_detach_iommufd_pt(
        &self,
        device: &KernelFd,
        detach: &mut vfio_device_detach_iommufd_pt,
    ) -> KResult<()>;

    /// `pread` at a region offset (region index in the offset's high bits, as reported by
    /// `GET_REGION_INFO`). Returns the bytes read.
    fn region_read(&self, device: &KernelFd, offset: u64, buf: &mut [u8]) -> KResult<usize>;
    /// `pwrite` at a region offset. Returns the bytes written.
    fn region_write(&self, device: &KernelFd, offset: u64, buf: &[u8]) -> KResult<usize>;
    /// `mmap(NULL, len, prot, MAP_SHARED, device, offset)`.
    fn mmap(&self, device: &KernelFd, offset: u64, len: usize, prot: i32) -> KResult<NonNull<u8>>;
    /// `munmap` of a mapping returned by [`VfioKernel::mmap`].
    ///
    /// # Safety
    /// `addr`/`len` must be exactly a mapping returned by `mmap` on this kernel, and no
    /// reference into it may be used afterwards.
    unsafe fn munmap(&self, addr: NonNull<u8>, len: usize) -> KResult<()>;

    /// `IOMMU_IOAS_ALLOC`; the kernel fills `alloc.out_ioas_id`.
    fn ioas_alloc(&self, iommufd: &KernelFd, alloc: &mut iommu_ioas_alloc) -> KResult<()>;
    /// `IOMMU_IOAS_MAP`; the kernel fills `map.iova` unless `IOMMU_IOAS_MAP_FIXED_IOVA`.
    ///
    /// # Safety
    /// As for [`VfioKernel::map_dma`], for `map.user_va .. map.user_va + map.length`.
    unsafe fn ioas_map(&self, iommufd: &KernelFd, map: &mut iommu_ioas_map) -> KResult<()>;
    /// `IOMMU_IOAS_UNMAP`; the kernel writes the unmapped length into `unmap.length`.
    fn ioas_unmap(&self, iommufd: &KernelFd, unmap: &mut iommu_ioas_unmap) -> KResult<()>;
    /// `IOMMU_IOAS_IOVA_RANGES`; `buf` holds an `iommu_ioas_iova_ranges` followed by room
    /// for `num_iovas` `iommu_iova_range` entries, and `allowed_iovas` is ignored (the
    /// callee fills the entries right after the header). EMSGSIZE with `num_iovas` set
    /// when there is not enough room.
    fn ioas_iova_ranges(&self, iommufd: &KernelFd, buf: &mut [u8]) -> KResult<()>;
    /// `IOMMU_IOAS_MAP_FILE` (Linux 6.13+): maps `map.length` bytes of the file `map.fd`
    /// (a memfd: shmem or hugetlbfs) from byte `map.start`; the kernel fills `map.iova`
    /// unless `IOMMU_IOAS_MAP_FIXED_IOVA`. Older kernels answer ENOTTY.
    ///
    /// # Safety
    /// The device may read and (with `IOMMU_IOAS_MAP_WRITEABLE`) write the file's pages
    /// `map.start .. map.start + map.length` at any time until the IOVA range is unmapped:
    /// no Rust reference into any mapping of those pages (in this process or one that
    /// shares the file) may assume they do not change, and the file must not be one whose
    /// contents are promised unchanging (a write-sealed memfd: the kernel does not check
    /// seals or the descriptor's access mode when it pins).
    unsafe fn ioas_map_file(
        &self,
        iommufd: &KernelFd,
        map: &mut iommu_ioas_map_file,
    ) -> KResult<()>;
    /// `IOMMU_IOAS_CHANGE_PROCESS` (Linux 6.13+): moves the pinned-page accounting of
    /// every mapping of every IOAS of the iommufd to the calling process. EINVAL when a
    /// mapping was not made with `IOMMU_IOAS_MAP_FILE`; nothing changes on failure.
    fn ioas_change_process(
        &self,
        iommufd: &KernelFd,
        change: &mut iommu_ioas_change_process,
    ) -> KResult<()>;
    /// `IOMMU_DESTROY` of an iommufd object id.
    fn iommufd_destroy(&self, iommufd: &KernelFd, id: u32) -> KResult<()>;

    /// Creates an eventfd (`EFD_CLOEXEC`). Real in every backend: interrupts are
    /// delivered on real eventfds even by the mock.
    fn eventfd(&self) -> KResult<vmm_sys_util::eventfd::EventFd>;
    /// The soft `RLIMIT_MEMLOCK` in bytes (`u64::MAX` for unlimited).
    fn memlock_limit(&self) -> KResult<u64>;

    /// `VFIO_DEVICE_FEATURE`; `buf` holds a `vfio_device_feature` header (`argsz`, `flags`
    /// with the feature index and `PROBE`/`GET`/`SET`) followed by the feature's data,
    /// which a `GET` fills. Returns the ioctl's value (0, or a descriptor a feature
    /// creates, which the caller then owns).
    fn device_feature(&self, device: &KernelFd, buf: &mut [u8]) -> KResult<i32>;
    /// `VFIO_DEVICE_BIND_IOMMUFD` with `VFIO_DEVICE_BIND_FLAG_TOKEN`: as
    /// [`VfioKernel::device_bind_iommufd`], presenting `token` (a VF token UUID, the
    /// 16 bytes `VFIO_DEVICE_FEATURE_PCI_VF_TOKEN` takes) through `token_uuid_ptr`, which
    /// the callee fills (the caller's `token_uuid_ptr` and flag are ignored).
    fn device_bind_iommufd_with_token(
        &self,
        device: &KernelFd,
        bind: &mut vfio_device_bind_iommufd,
        token: &[u8; 16],
    ) -> KResult<()>;
}
