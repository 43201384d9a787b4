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
    iommu_ioas_alloc, iommu_ioas_change_process, iommu_ioas_iova_ranges, iommu_ioas_map,
    iommu_ioas_map_file, iommu_ioas_unmap, iommu_iova_range, Errno, KernelFd, KernelOp, VfioKernel,
};

/// The hint for ENOTTY from the live-update commands (EOPNOTSUPP too: the library sets
/// no flag or reserved field those kernels would refuse with it).
const PREDATES_MAP_FILE: &str = "this kernel predates IOMMU_IOAS_MAP_FILE (6.13): map guest memory with Ioas::map_dma, and live-update through a legacy type1v2 container (Container::invalidate_vaddr / update_vaddr)";

/// The `IOMMU_IOAS_MAP*` flags: readable, writeable with `DmaPerm::ReadWrite`, at a
/// fixed IOVA when one is given.
fn map_flags(iova: Option<u64>, perm: DmaPerm) -> u32 {
    let mut flags = MAP_READABLE;
    if perm == DmaPerm::ReadWrite {
        flags |= MAP_WRITEABLE;
    }
    if iova.is_some() {
        flags |= MAP_FIXED_IOVA;
    }
    flags
}

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

    /// Live update (`IOMMU_IOAS_CHANGE_PROCESS`, Linux 6.13+): moves the pinned-memory
    /// accounting of every mapping of every IOAS of this iommufd to the calling process.
    /// A new VMM process that inherited the iommufd and device descriptors (across `exec`
    /// or fd passing) calls it before the old one exits, so the pinned guest memory is
    /// charged to its `RLIMIT_MEMLOCK` and no longer to the old process.
    ///
    /// Every mapping must have been made with [`Ioas::map_file`]: the kernel refuses
    /// (EINVAL) when any was made from a user address ([`Ioas::map_dma`]), and then
    /// changes nothing.
    pub fn change_process(&self) -> Result<()> {
        let mut c = iommu_ioas_change_process {
            size: std::mem::size_of::<iommu_ioas_change_process>() as u32,
            __reserved: 0,
        };
        self.kernel.ioas_change_process(self.fd(), &mut c).map_err(|e| {
            let err = Error::kernel(KernelOp::IoasChangeProcess, "iommufd", e);
            match e {
                Errno::EINVAL => err.with_hint(
                    "a mapping of this iommufd was not made from a file: live update needs every mapping made with Ioas::map_file (unmap the others first)",
                ),
                Errno::ENOTTY | Errno::EOPNOTSUPP => err.with_hint(PREDATES_MAP_FILE),
                Errno::ENOMEM => err.with_hint(
                    "the calling process's RLIMIT_MEMLOCK cannot hold the pinned memory: raise it (or give it CAP_IPC_LOCK) before taking over",
                ),
                _ => err,
            }
        })
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
        let mut map = iommu_ioas_map {
            size: std::mem::size_of::<iommu_ioas_map>() as u32,
            flags: map_flags(iova, perm),
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

    /// Maps `length` bytes of a file from byte `start` (`IOMMU_IOAS_MAP_FILE`, Linux
    /// 6.13+): guest memory that survives the process, for live update
    /// ([`Iommufd::change_process`]). The file must be a memfd (shmem or hugetlbfs) at
    /// least `start + length` bytes long; the kernel pins its pages, not a process
    /// address, so the mapping stays valid whatever the process maps or unmaps. With
    /// `iova` `Some`, at that IOVA (`IOMMU_IOAS_MAP_FIXED_IOVA`); with `None`, where the
    /// kernel chooses (aligned like `start`). Returns the IOVA.
    ///
    /// It is `unsafe` for the same reason as [`Ioas::map_dma`], although no address is
    /// named: the device gets the file's pages, and the process (or another one sharing
    /// the file) may have them mapped.
    ///
    /// # Safety
    /// Until the IOVA range is unmapped, the device may read and (with
    /// `DmaPerm::ReadWrite`) write the file's bytes `start..start + length` at any time:
    /// nothing may rely on them not changing, in particular no Rust reference into a
    /// mapping of them (a slice over an mmap of the memfd, an allocator backed by it),
    /// and the file must not be one whose contents are promised unchanging (a
    /// write-sealed memfd: the kernel checks neither seals nor the descriptor's access
    /// mode when it pins).
    pub unsafe fn map_file(
        &self,
        file: std::os::fd::BorrowedFd<'_>,
        start: u64,
        iova: Option<u64>,
        length: u64,
        perm: DmaPerm,
    ) -> Result<u64> {
        use std::os::fd::AsRawFd;
        check_range(iova.unwrap_or(0), Some(start), length)?;
        let mut map = iommu_ioas_map_file {
            size: std::mem::size_of::<iommu_ioas_map_file>() as u32,
            flags: map_flags(iova, perm),
            ioas_id: self.id,
            fd: file.as_raw_fd(),
            start,
            length,
            iova: iova.unwrap_or(0),
        };
        // SAFETY: this function's own contract (`# Safety` above) is the seam's.
        match unsafe { self.iommufd.kernel.ioas_map_file(self.iommufd.fd(), &mut map) } {
            Ok(()) => Ok(map.iova),
            Err(e) => Err(self.map_file_error(e, length)),
        }
    }

    #[cold]
    fn map_file_error(&self, e: Errno, length: u64) -> Error {
        let err = Error::kernel(KernelOp::IoasMapFile, self.target(), e);
        match e {
            Errno::ENOTTY | Errno::EOPNOTSUPP => err.with_hint(PREDATES_MAP_FILE),
            Errno::EBADF => err.with_hint("the file descriptor is not open"),
            Errno::EINVAL => err.with_hint(
                "the kernel pins only a memfd (shmem or hugetlbfs) whose size covers start + length, at an IOVA, offset and length aligned to the IOMMU page",
            ),
            Errno::ENOMEM => err.with_hint(memlock_hint(&*self.iommufd.kernel, length)),
            Errno::EEXIST => err.with_hint("the IOVA range overlaps an existing mapping"),
            _ => err,
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
