//! The legacy VFIO container (`/dev/vfio/vfio`): an IOMMU context shared by groups.

use std::sync::{Arc, Mutex, Weak};

use vfio_bindings::bindings::vfio::{
    VFIO_TYPE1v2_IOMMU, VFIO_API_VERSION, VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_VADDR,
    VFIO_DMA_MAP_FLAG_WRITE, VFIO_DMA_UNMAP_FLAG_ALL, VFIO_DMA_UNMAP_FLAG_VADDR,
    VFIO_NOIOMMU_IOMMU, VFIO_TYPE1_IOMMU, VFIO_UPDATE_VADDR,
};

use crate::dma_perm::{check_range, memlock_hint, DmaPerm};
use crate::error::{Error, Result};
use crate::group::Group;
use crate::info::{parse_iommu_info, IommuInfo, IOMMU_INFO_SIZE};
use crate::kernel::{
    vfio_iommu_type1_dma_map, vfio_iommu_type1_dma_unmap, Errno, GroupNode, KernelFd, KernelOp,
    VfioKernel,
};

/// The IOMMU model a container uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum IommuType {
    /// `VFIO_TYPE1v2_IOMMU`: unmap never splits a mapping and reports exact sizes.
    Type1v2,
    /// `VFIO_TYPE1_IOMMU`, the original type1.
    Type1,
    /// `VFIO_NOIOMMU_IOMMU`: no translation, no isolation, no DMA mapping calls.
    NoIommu,
}

impl IommuType {
    /// The value passed to `VFIO_SET_IOMMU` / `VFIO_CHECK_EXTENSION`.
    pub fn raw(self) -> u32 {
        match self {
            IommuType::Type1v2 => VFIO_TYPE1v2_IOMMU,
            IommuType::Type1 => VFIO_TYPE1_IOMMU,
            IommuType::NoIommu => VFIO_NOIOMMU_IOMMU,
        }
    }
}

/// A VFIO container. Groups join it when a device is opened into it ([`crate::Vfio::open`],
/// [`crate::Vfio::open_in`]); its IOMMU type is
/// set when the first group joins; DMA mappings made through it apply to every device of
/// every group in it.
#[derive(Debug)]
pub struct Container {
    kernel: Arc<dyn VfioKernel>,
    fd: Option<KernelFd>,
    iommu: Mutex<Option<IommuType>>,
    /// The IOMMU type to ask for when the first group joins (`None`: Type1v2, then Type1).
    wanted: Option<IommuType>,
    /// Groups in the container, so that a second device of a group reuses its fd.
    groups: Mutex<Vec<Weak<Group>>>,
}

const TARGET: &str = "container";

impl Container {
    /// Opens `/dev/vfio/vfio` and checks the API version. `wanted` forces an IOMMU type;
    /// `None` picks type1v2 and falls back to type1.
    pub fn open(kernel: Arc<dyn VfioKernel>, wanted: Option<IommuType>) -> Result<Arc<Self>> {
        let fd = Container::open_node(&kernel)?;
        Container::init(kernel, fd, wanted)
    }

    /// Opens `/dev/vfio/vfio`, with the fix for each failure.
    pub(crate) fn open_node(kernel: &Arc<dyn VfioKernel>) -> Result<KernelFd> {
        kernel.open_container().map_err(|e| {
            let err = Error::kernel(KernelOp::OpenContainer, TARGET, e);
            match e {
                Errno::ENOENT => err.with_hint("the vfio module is not loaded: modprobe vfio-pci"),
                Errno::EACCES | Errno::EPERM => {
                    err.with_hint("no permission on /dev/vfio/vfio: run as root")
                }
                _ => err,
            }
        })
    }

    /// A container on a `/dev/vfio/vfio` descriptor opened elsewhere (a privileged parent
    /// passed it), as `open` leaves it: no group in it yet. Nothing is opened by path.
    pub fn from_fd(
        kernel: Arc<dyn VfioKernel>,
        fd: std::os::fd::OwnedFd,
        wanted: Option<IommuType>,
    ) -> Result<Arc<Self>> {
        let fd = kernel.adopt(fd).map_err(|e| Error::kernel(KernelOp::AdoptFd, TARGET, e))?;
        Container::init(kernel, fd, wanted)
    }

    fn init(
        kernel: Arc<dyn VfioKernel>,
        fd: KernelFd,
        wanted: Option<IommuType>,
    ) -> Result<Arc<Self>> {
        let c = Container {
            kernel,
            fd: Some(fd),
            iommu: Mutex::new(None),
            wanted,
            groups: Mutex::new(Vec::new()),
        };
        let version = c.kernel.get_api_version(c.fd()).map_err(|e| {
            Error::kernel(KernelOp::GetApiVersion, TARGET, e)
                .with_hint("is the descriptor /dev/vfio/vfio?")
        })?;
        if version != VFIO_API_VERSION as i32 {
            return Err(Error::Unsupported {
                what: format!("VFIO API version {version}"),
                hint: Some(format!("this toolkit speaks version {VFIO_API_VERSION}")),
            });
        }
        Ok(Arc::new(c))
    }

    #[inline]
    pub(crate) fn fd(&self) -> &KernelFd {
        self.fd.as_ref().expect("container fd is present until drop")
    }

    pub(crate) fn kernel(&self) -> &Arc<dyn VfioKernel> {
        &self.kernel
    }

    /// The group `node` in this container: the one already in it, or the node opened,
    /// checked for viability and attached. `not_viable` builds the error for a group that
    /// is not viable (the caller knows the host and can name the blocking devices).
    pub fn group(
        self: &Arc<Self>,
        node: GroupNode,
        not_viable: impl FnOnce() -> Error,
    ) -> Result<Arc<Group>> {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups.retain(|g| g.strong_count() > 0);
        if let Some(g) = groups.iter().filter_map(Weak::upgrade).find(|g| g.node() == node) {
            return Ok(g);
        }
        let fd = Group::open_node(&self.kernel, node)?;
        self.attach_group(node, fd, not_viable, &mut groups)
    }

    /// Puts a group whose descriptor was opened elsewhere (a privileged parent passed
    /// `/dev/vfio/N`) into this container; `node` names it (the parent knows which node it
    /// opened). Nothing is opened by path, and no sysfs is read: a group that is not
    /// viable is refused with the group number only.
    pub fn group_from_fd(
        self: &Arc<Self>,
        node: GroupNode,
        fd: std::os::fd::OwnedFd,
    ) -> Result<Arc<Group>> {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups.retain(|g| g.strong_count() > 0);
        let target = format!("group {}", node.id());
        let fd = self.kernel.adopt(fd).map_err(|e| Error::kernel(KernelOp::AdoptFd, target, e))?;
        let not_viable = || Error::GroupNotViable {
            group: node.id(),
            first: String::new(),
            blockers: Vec::new(),
        };
        self.attach_group(node, fd, not_viable, &mut groups)
    }

    fn attach_group(
        self: &Arc<Self>,
        node: GroupNode,
        fd: KernelFd,
        not_viable: impl FnOnce() -> Error,
        groups: &mut Vec<Weak<Group>>,
    ) -> Result<Arc<Group>> {
        let status = match Group::status_of(&self.kernel, node, &fd) {
            Ok(s) => s,
            Err(e) => {
                self.kernel.close(fd);
                return Err(e);
            }
        };
        if !status.viable {
            self.kernel.close(fd);
            return Err(not_viable());
        }
        let g = Group::attach(node, fd, self)?;
        groups.push(Arc::downgrade(&g));
        Ok(g)
    }

    /// `VFIO_GET_API_VERSION`: the cheapest VFIO call (the floor of every benchmark).
    #[inline]
    pub fn api_version(&self) -> Result<i32> {
        match self.kernel.get_api_version(self.fd()) {
            Ok(v) => Ok(v),
            Err(e) => Err(kernel_error(KernelOp::GetApiVersion, e)),
        }
    }

    /// Whether the kernel offers an extension (`VFIO_CHECK_EXTENSION`).
    pub fn check_extension(&self, ty: IommuType) -> Result<bool> {
        self.kernel
            .check_extension(self.fd(), ty.raw())
            .map(|v| v != 0)
            .map_err(|e| Error::kernel(KernelOp::CheckExtension, TARGET, e))
    }

    /// The IOMMU type in force (`None` until the first group has joined).
    pub fn iommu_type(&self) -> Option<IommuType> {
        *self.iommu.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the IOMMU type once a group is in; later calls are no-ops.
    pub(crate) fn ensure_iommu(&self, noiommu_group: bool) -> Result<IommuType> {
        let mut cur = self.iommu.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = *cur {
            return Ok(t);
        }
        let candidates: &[IommuType] = match (self.wanted, noiommu_group) {
            (Some(t), _) => &[t][..],
            (None, true) => &[IommuType::NoIommu],
            (None, false) => &[IommuType::Type1v2, IommuType::Type1],
        };
        // The first type the kernel offers is the one to use; a failure to set it is an
        // error to report (EPERM without interrupt remapping, say), not a reason to fall
        // back to an older type that would fail the same way or hide the cause.
        for &t in candidates {
            if !self.check_extension(t)? {
                continue;
            }
            return match self.kernel.set_iommu(self.fd(), t.raw()) {
                Ok(()) => {
                    *cur = Some(t);
                    Ok(t)
                }
                Err(e) => {
                    let err = Error::kernel(KernelOp::SetIommu, TARGET, e);
                    Err(if e == Errno::EPERM {
                        err.with_hint(
                            "the IOMMU has no interrupt remapping; if you accept the risk: \
                             options vfio_iommu_type1 allow_unsafe_interrupts=1",
                        )
                    } else {
                        err
                    })
                }
            };
        }
        Err(Error::Unsupported {
            what: format!("IOMMU type {candidates:?}"),
            hint: Some("load vfio_iommu_type1 (modprobe vfio_iommu_type1)".into()),
        })
    }

    /// `VFIO_IOMMU_GET_INFO`: page sizes, IOVA ranges, mappings still available.
    pub fn iommu_info(&self) -> Result<IommuInfo> {
        let mut buf = vec![0u8; IOMMU_INFO_SIZE];
        for _ in 0..4 {
            let len = buf.len() as u32;
            buf[..4].copy_from_slice(&len.to_ne_bytes());
            self.kernel
                .iommu_get_info(self.fd(), &mut buf)
                .map_err(|e| Error::kernel(KernelOp::IommuGetInfo, TARGET, e))?;
            let need = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if need <= buf.len() {
                break;
            }
            buf = vec![0u8; need.min(1 << 20)];
        }
        parse_iommu_info(&buf).ok_or_else(|| Error::Unsupported {
            what: "VFIO_IOMMU_GET_INFO reply".into(),
            hint: Some("the kernel returned a short struct".into()),
        })
    }

    /// Maps `size` bytes at `vaddr` to `iova` (`VFIO_IOMMU_MAP_DMA`).
    ///
    /// # Safety
    /// The memory at `vaddr..vaddr+size` must stay mapped, and must not be handed to
    /// anything else that relies on its contents not changing behind its back, until it
    /// is unmapped: the device may read and (with `DmaPerm::ReadWrite`) write it at any
    /// time. Unmapping is the caller's job (or use [`crate::dma::DmaPool`], which does it).
    pub unsafe fn map_dma(&self, vaddr: u64, iova: u64, size: u64, perm: DmaPerm) -> Result<()> {
        check_range(iova, Some(vaddr), size)?;
        let flags = match perm {
            DmaPerm::Read => VFIO_DMA_MAP_FLAG_READ,
            DmaPerm::ReadWrite => VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        };
        let map = vfio_iommu_type1_dma_map {
            argsz: std::mem::size_of::<vfio_iommu_type1_dma_map>() as u32,
            flags,
            vaddr,
            iova,
            size,
        };
        // SAFETY: this function's own contract (`# Safety` above) is the seam's.
        unsafe { self.kernel.map_dma(self.fd(), &map) }.map_err(|e| self.map_error(e, size))
    }

    #[cold]
    fn map_error(&self, e: Errno, size: u64) -> Error {
        let err = Error::kernel(KernelOp::MapDma, TARGET, e);
        match e {
            Errno::ENOMEM => err.with_hint(memlock_hint(&*self.kernel, size)),
            Errno::ENOSPC => err.with_hint(
                "the container reached vfio_iommu_type1's dma_entry_limit (65535 by default): \
                 map fewer, larger buffers (DmaPool::map_batch coalesces) or raise the module parameter",
            ),
            Errno::EEXIST => err.with_hint("the IOVA range overlaps an existing mapping"),
            _ => err,
        }
    }

    /// Unmaps `[iova, iova + size)` and returns the bytes unmapped.
    pub fn unmap_dma(&self, iova: u64, size: u64) -> Result<u64> {
        self.unmap(iova, size, 0)
    }

    /// Unmaps everything (`VFIO_DMA_UNMAP_FLAG_ALL`) and returns the bytes unmapped.
    pub fn unmap_all(&self) -> Result<u64> {
        self.unmap(0, 0, VFIO_DMA_UNMAP_FLAG_ALL)
    }

    /// Live update, step 1 (`VFIO_DMA_UNMAP_FLAG_VADDR`): the mappings of
    /// `[iova, iova + size)` stay in the IOMMU, with their pages pinned, but forget their
    /// process addresses, so the process can `exec` a new version of itself (QEMU's cpr,
    /// cloud-hypervisor's live upgrade). Device DMA continues; any kernel access that
    /// needs the address (a new map, an emulated access) blocks until step 2. With
    /// `size` 0 and `all`, every mapping. Needs `VFIO_UPDATE_VADDR` (type1v2).
    ///
    /// A container without `VFIO_UPDATE_VADDR` (iommufd's compat container, which
    /// answers EINVAL) gives [`Error::Unsupported`] naming the way out.
    pub fn invalidate_vaddr(&self, iova: u64, size: u64, all: bool) -> Result<u64> {
        let flags = VFIO_DMA_UNMAP_FLAG_VADDR | if all { VFIO_DMA_UNMAP_FLAG_ALL } else { 0 };
        self.unmap(iova, size, flags).map_err(|e| self.vaddr_error(e))
    }

    /// `VFIO_UPDATE_VADDR`: whether this container can do a live update
    /// ([`Container::invalidate_vaddr`], [`Container::update_vaddr`]). The legacy type1
    /// container can once its IOMMU is set; iommufd's compat container cannot.
    pub fn supports_vaddr_update(&self) -> Result<bool> {
        self.kernel
            .check_extension(self.fd(), VFIO_UPDATE_VADDR)
            .map(|v| v != 0)
            .map_err(|e| Error::kernel(KernelOp::CheckExtension, TARGET, e))
    }

    /// An EINVAL from a vaddr call on a container without `VFIO_UPDATE_VADDR` says so.
    #[cold]
    fn vaddr_error(&self, e: Error) -> Error {
        if e.errno() == Some(Errno::EINVAL) && matches!(self.supports_vaddr_update(), Ok(false)) {
            return Error::Unsupported {
                what: "updating the process addresses of DMA mappings (VFIO_UPDATE_VADDR)".into(),
                hint: Some(
                    "this container does not offer it (iommufd's compat container, or no \
                     IOMMU set yet): use the legacy type1v2 container, or keep the \
                     mappings' memory at the same address"
                        .into(),
                ),
            };
        }
        e
    }

    /// Live update, step 2 (`VFIO_DMA_MAP_FLAG_VADDR`): gives the mappings of
    /// `[iova, iova + size)` their process address in the new process.
    ///
    /// # Safety
    /// `vaddr..vaddr + size` must be the same memory (the same pages, mapped again, as
    /// from a memfd kept across `exec`) the mappings had before step 1, with
    /// [`Container::map_dma`]'s contract.
    pub unsafe fn update_vaddr(&self, vaddr: u64, iova: u64, size: u64) -> Result<()> {
        check_range(iova, Some(vaddr), size)?;
        let map = vfio_iommu_type1_dma_map {
            argsz: std::mem::size_of::<vfio_iommu_type1_dma_map>() as u32,
            flags: VFIO_DMA_MAP_FLAG_VADDR,
            vaddr,
            iova,
            size,
        };
        // SAFETY: this function's own contract (`# Safety` above) is the seam's.
        unsafe { self.kernel.map_dma(self.fd(), &map) }
            .map_err(|e| self.vaddr_error(self.map_error(e, size)))
    }

    #[inline]
    fn unmap(&self, iova: u64, size: u64, flags: u32) -> Result<u64> {
        check_range(iova, None, size)?;
        let mut unmap = vfio_iommu_type1_dma_unmap {
            argsz: std::mem::size_of::<vfio_iommu_type1_dma_unmap>() as u32,
            flags,
            iova,
            size,
            data: Default::default(),
        };
        match self.kernel.unmap_dma(self.fd(), &mut unmap) {
            Ok(()) => Ok(unmap.size),
            Err(e) => Err(kernel_error(KernelOp::UnmapDma, e)),
        }
    }
}

/// A kernel error on the container, built out of line so hot paths stay small.
#[cold]
fn kernel_error(op: KernelOp, e: Errno) -> Error {
    Error::kernel(op, TARGET, e)
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            self.kernel.close(fd);
        }
    }
}

impl std::os::fd::AsRawFd for Container {
    /// The raw descriptor, for interoperating with other VFIO code (a KVM device, a C
    /// library). It stays owned by this object: do not close it.
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd().raw()
    }
}

impl std::os::fd::AsFd for Container {
    /// The descriptor, lent: it stays owned by this object (duplicate it with
    /// `try_clone_to_owned` to keep one).
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the descriptor is open for as long as this object lives (the kernel
        // seam's contract), and the borrow cannot outlive `self`.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd().raw()) }
    }
}
