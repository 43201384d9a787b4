//! iommufd (`/dev/iommu`) and its I/O address spaces (IOAS).

use std::sync::Arc;

use iommufd_bindings::iommufd::{
    iommufd_ioas_map_flags_IOMMU_IOAS_MAP_FIXED_IOVA as MAP_FIXED_IOVA,
    iommufd_ioas_map_flags_IOMMU_IOAS_MAP_READABLE as MAP_READABLE,
    iommufd_ioas_map_flags_IOMMU_IOAS_MAP_WRITEABLE as MAP_WRITEABLE,
};

use crate::dma_perm::{check_range, memlock_hint, DmaPerm};
use crate::error::{Error, Result};
use crate::info::IovaRange;
use crate::kernel::{
    iommu_ioas_alloc, iommu_ioas_iova_ranges, iommu_ioas_map, iommu_ioas_unmap, iommu_iova_range,
    Errno, KernelFd, KernelOp, VfioKernel,
};

/// An open `/dev/iommu`.
#[derive(Debug)]
pub struct Iommufd {
    kernel: Arc<dyn VfioKernel>,
    fd: Option<KernelFd>,
}

impl Iommufd {
    /// Opens `/dev/iommu`.
    pub fn open(kernel: Arc<dyn VfioKernel>) -> Result<Arc<Self>> {
        let fd = Iommufd::open_node(&kernel)?;
        Ok(Arc::new(Iommufd { kernel, fd: Some(fd) }))
    }

    /// Opens `/dev/iommu`, with the fix for each failure.
    pub(crate) fn open_node(kernel: &Arc<dyn VfioKernel>) -> Result<KernelFd> {
        kernel.open_iommufd().map_err(|e| {
            let err = Error::kernel(KernelOp::OpenIommufd, "iommufd", e);
            match e {
                Errno::ENOENT => err.with_hint(
                    "the kernel has no iommufd (CONFIG_IOMMUFD): use the container interface",
                ),
                Errno::EACCES | Errno::EPERM => err.with_hint("no permission on /dev/iommu"),
                _ => err,
            }
        })
    }

    /// An iommufd on a `/dev/iommu` descriptor opened elsewhere (a privileged parent, or
    /// a VMM's management stack, passed it). It may already hold IOASes:
    /// [`Iommufd::ioas`] reuses one by id.
    pub fn from_fd(kernel: Arc<dyn VfioKernel>, fd: std::os::fd::OwnedFd) -> Result<Arc<Self>> {
        let fd = kernel.adopt(fd).map_err(|e| Error::kernel(KernelOp::AdoptFd, "iommufd", e))?;
        Ok(Arc::new(Iommufd { kernel, fd: Some(fd) }))
    }

    /// An IOAS that already exists on this iommufd (allocated by whoever passed the fd),
    /// checked to exist. It is not destroyed when dropped: its owner keeps it.
    pub fn ioas(self: &Arc<Self>, id: u32) -> Result<Arc<Ioas>> {
        let ioas = Ioas { iommufd: self.clone(), id, owned: false };
        ioas.iova_ranges()
            .map_err(|e| e.with_hint(format!("IOAS {id} does not exist on this iommufd")))?;
        Ok(Arc::new(ioas))
    }

    pub(crate) fn fd(&self) -> &KernelFd {
        self.fd.as_ref().expect("iommufd is present until drop")
    }

    pub(crate) fn kernel(&self) -> &Arc<dyn VfioKernel> {
        &self.kernel
    }

    /// Allocates a new I/O address space.
    pub fn alloc_ioas(self: &Arc<Self>) -> Result<Arc<Ioas>> {
        let mut a = iommu_ioas_alloc {
            size: std::mem::size_of::<iommu_ioas_alloc>() as u32,
            flags: 0,
            out_ioas_id: 0,
        };
        self.kernel
            .ioas_alloc(self.fd(), &mut a)
            .map_err(|e| Error::kernel(KernelOp::IoasAlloc, "iommufd", e))?;
        Ok(Arc::new(Ioas { iommufd: self.clone(), id: a.out_ioas_id, owned: true }))
    }
}

impl Drop for Iommufd {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            self.kernel.close(fd);
        }
    }
}

/// An iommufd I/O address space: devices attached to it share its DMA mappings.
#[derive(Debug)]
pub struct Ioas {
    iommufd: Arc<Iommufd>,
    id: u32,
    /// Allocated here (destroyed on drop), or reused by id (left to its owner).
    owned: bool,
}

impl Ioas {
    /// The IOAS object id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The iommufd the IOAS belongs to.
    pub fn iommufd(&self) -> &Arc<Iommufd> {
        &self.iommufd
    }

    fn target(&self) -> String {
        format!("IOAS {}", self.id)
    }

    /// Maps `size` bytes at `vaddr`. With `iova` `Some`, at that IOVA
    /// (`IOMMU_IOAS_MAP_FIXED_IOVA`); with `None`, where the kernel chooses. Returns the IOVA.
    ///
    /// # Safety
    /// The memory at `vaddr..vaddr+size` must stay mapped, and must not be relied on by
    /// anything else not to change, until it is unmapped: the device may read and (with
    /// `DmaPerm::ReadWrite`) write it at any time.
    pub unsafe fn map_dma(
        &self,
        vaddr: u64,
        iova: Option<u64>,
        size: u64,
        perm: DmaPerm,
    ) -> Result<u64> {
        check_range(iova.unwrap_or(0), Some(vaddr), size)?;
        let mut flags = MAP_READABLE;
        if perm == DmaPerm::ReadWrite {
            flags |= MAP_WRITEABLE;
        }
        if iova.is_some() {
            flags |= MAP_FIXED_IOVA;
        }
        let mut map = iommu_ioas_map {
            size: std::mem::size_of::<iommu_ioas_map>() as u32,
            flags,
            ioas_id: self.id,
            __reserved: 0,
            user_va: vaddr,
            length: size,
            iova: iova.unwrap_or(0),
        };
        // SAFETY: this function's own contract (`# Safety` above) is the seam's.
        match unsafe { self.iommufd.kernel.ioas_map(self.iommufd.fd(), &mut map) } {
            Ok(()) => Ok(map.iova),
            Err(e) => Err(self.map_error(e, size)),
        }
    }

    #[cold]
    fn map_error(&self, e: Errno, size: u64) -> Error {
        let err = Error::kernel(KernelOp::IoasMap, self.target(), e);
        match e {
            Errno::ENOMEM => err.with_hint(memlock_hint(&*self.iommufd.kernel, size)),
            Errno::EEXIST => err.with_hint("the IOVA range overlaps an existing mapping"),
            _ => err,
        }
    }

    /// Unmaps `[iova, iova + size)`; returns the bytes unmapped.
    pub fn unmap_dma(&self, iova: u64, size: u64) -> Result<u64> {
        check_range(iova, None, size)?;
        let mut u = iommu_ioas_unmap {
            size: std::mem::size_of::<iommu_ioas_unmap>() as u32,
            ioas_id: self.id,
            iova,
            length: size,
        };
        self.iommufd
            .kernel
            .ioas_unmap(self.iommufd.fd(), &mut u)
            .map_err(|e| Error::kernel(KernelOp::IoasUnmap, self.target(), e))?;
        Ok(u.length)
    }

    /// Unmaps everything; returns the bytes unmapped.
    pub fn unmap_all(&self) -> Result<u64> {
        self.unmap_dma(0, u64::MAX)
    }

    /// The usable IOVA ranges (`IOMMU_IOAS_IOVA_RANGES`).
    pub fn iova_ranges(&self) -> Result<Vec<IovaRange>> {
        let hdr = std::mem::size_of::<iommu_ioas_iova_ranges>();
        let ent = std::mem::size_of::<iommu_iova_range>();
        let mut room = 4u32;
        for _ in 0..4 {
            let mut buf = vec![0u8; hdr + ent * room as usize];
            let h = iommu_ioas_iova_ranges {
                size: hdr as u32,
                ioas_id: self.id,
                num_iovas: room,
                __reserved: 0,
                allowed_iovas: 0,
                out_iova_alignment: 0,
            };
            // SAFETY: `buf` is at least `hdr` bytes; an unaligned write of a POD struct.
            unsafe { std::ptr::write_unaligned(buf.as_mut_ptr().cast(), h) };
            let r = self.iommufd.kernel.ioas_iova_ranges(self.iommufd.fd(), &mut buf);
            // SAFETY: as above, the buffer holds a header.
            let h: iommu_ioas_iova_ranges =
                unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
            match r {
                Ok(()) => {
                    let n = (h.num_iovas as usize).min(room as usize);
                    return Ok((0..n)
                        .map(|i| {
                            let at = hdr + i * ent;
                            let start = u64::from_ne_bytes(buf[at..at + 8].try_into().unwrap());
                            let last = u64::from_ne_bytes(buf[at + 8..at + 16].try_into().unwrap());
                            IovaRange { start, last }
                        })
                        .collect());
                }
                Err(Errno::EMSGSIZE) if h.num_iovas > room => room = h.num_iovas.min(4096),
                Err(e) => return Err(Error::kernel(KernelOp::IoasIovaRanges, self.target(), e)),
            }
        }
        Err(Error::kernel(KernelOp::IoasIovaRanges, self.target(), Errno::EMSGSIZE))
    }
}

impl Drop for Ioas {
    fn drop(&mut self) {
        // Destroying the IOAS drops its mappings. It fails while devices are attached;
        // devices hold an Arc to the IOAS, so by now none is.
        if self.owned {
            let _ = self.iommufd.kernel.iommufd_destroy(self.iommufd.fd(), self.id);
        }
    }
}

impl std::os::fd::AsRawFd for Iommufd {
    /// The raw descriptor, for interoperating with other VFIO code (a KVM device, a C
    /// library). It stays owned by this object: do not close it.
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd().raw()
    }
}

impl std::os::fd::AsFd for Iommufd {
    /// The descriptor, lent: it stays owned by this object (duplicate it with
    /// `try_clone_to_owned` to keep one).
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the descriptor is open for as long as this object lives (the kernel
        // seam's contract), and the borrow cannot outlive `self`.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd().raw()) }
    }
}
