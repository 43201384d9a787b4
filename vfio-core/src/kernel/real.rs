//! The real kernel: device nodes under a `/dev` directory and the ioctls on them.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use vmm_sys_util::ioctl::{
    ioctl, ioctl_with_mut_ptr, ioctl_with_mut_ref, ioctl_with_ptr, ioctl_with_ref, ioctl_with_val,
};
use vmm_sys_util::ioctl_io_nr;

use iommufd_bindings::iommufd::{
    IOMMUFD_CMD_DESTROY, IOMMUFD_CMD_IOAS_ALLOC, IOMMUFD_CMD_IOAS_CHANGE_PROCESS,
    IOMMUFD_CMD_IOAS_IOVA_RANGES, IOMMUFD_CMD_IOAS_MAP, IOMMUFD_CMD_IOAS_MAP_FILE,
    IOMMUFD_CMD_IOAS_UNMAP, IOMMUFD_TYPE,
};
use vfio_bindings::bindings::vfio::{VFIO_BASE, VFIO_DEVICE_BIND_FLAG_TOKEN, VFIO_TYPE};

use super::*;

ioctl_io_nr!(VFIO_GET_API_VERSION, VFIO_TYPE as u32, VFIO_BASE);
ioctl_io_nr!(VFIO_CHECK_EXTENSION, VFIO_TYPE as u32, VFIO_BASE + 1);
ioctl_io_nr!(VFIO_SET_IOMMU, VFIO_TYPE as u32, VFIO_BASE + 2);
ioctl_io_nr!(VFIO_GROUP_GET_STATUS, VFIO_TYPE as u32, VFIO_BASE + 3);
ioctl_io_nr!(VFIO_GROUP_SET_CONTAINER, VFIO_TYPE as u32, VFIO_BASE + 4);
ioctl_io_nr!(VFIO_GROUP_UNSET_CONTAINER, VFIO_TYPE as u32, VFIO_BASE + 5);
ioctl_io_nr!(VFIO_GROUP_GET_DEVICE_FD, VFIO_TYPE as u32, VFIO_BASE + 6);
ioctl_io_nr!(VFIO_DEVICE_GET_INFO, VFIO_TYPE as u32, VFIO_BASE + 7);
ioctl_io_nr!(VFIO_DEVICE_GET_REGION_INFO, VFIO_TYPE as u32, VFIO_BASE + 8);
ioctl_io_nr!(VFIO_DEVICE_GET_IRQ_INFO, VFIO_TYPE as u32, VFIO_BASE + 9);
ioctl_io_nr!(VFIO_DEVICE_SET_IRQS, VFIO_TYPE as u32, VFIO_BASE + 10);
ioctl_io_nr!(VFIO_DEVICE_RESET, VFIO_TYPE as u32, VFIO_BASE + 11);
ioctl_io_nr!(VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, VFIO_TYPE as u32, VFIO_BASE + 12);
ioctl_io_nr!(VFIO_IOMMU_GET_INFO, VFIO_TYPE as u32, VFIO_BASE + 12);
ioctl_io_nr!(VFIO_DEVICE_PCI_HOT_RESET, VFIO_TYPE as u32, VFIO_BASE + 13);
ioctl_io_nr!(VFIO_IOMMU_MAP_DMA, VFIO_TYPE as u32, VFIO_BASE + 13);
ioctl_io_nr!(VFIO_IOMMU_UNMAP_DMA, VFIO_TYPE as u32, VFIO_BASE + 14);
ioctl_io_nr!(VFIO_DEVICE_FEATURE, VFIO_TYPE as u32, VFIO_BASE + 17);
ioctl_io_nr!(VFIO_DEVICE_BIND_IOMMUFD, VFIO_TYPE as u32, VFIO_BASE + 18);
ioctl_io_nr!(VFIO_DEVICE_ATTACH_IOMMUFD_PT, VFIO_TYPE as u32, VFIO_BASE + 19);
ioctl_io_nr!(VFIO_DEVICE_DETACH_IOMMUFD_PT, VFIO_TYPE as u32, VFIO_BASE + 20);
ioctl_io_nr!(IOMMU_DESTROY, IOMMUFD_TYPE as u32, IOMMUFD_CMD_DESTROY);
ioctl_io_nr!(IOMMU_IOAS_ALLOC, IOMMUFD_TYPE as u32, IOMMUFD_CMD_IOAS_ALLOC);
ioctl_io_nr!(IOMMU_IOAS_IOVA_RANGES, IOMMUFD_TYPE as u32, IOMMUFD_CMD_IOAS_IOVA_RANGES);
ioctl_io_nr!(IOMMU_IOAS_MAP, IOMMUFD_TYPE as u32, IOMMUFD_CMD_IOAS_MAP);
ioctl_io_nr!(IOMMU_IOAS_UNMAP, IOMMUFD_TYPE as u32, IOMMUFD_CMD_IOAS_UNMAP);
ioctl_io_nr!(IOMMU_IOAS_MAP_FILE, IOMMUFD_TYPE as u32, IOMMUFD_CMD_IOAS_MAP_FILE);
ioctl_io_nr!(IOMMU_IOAS_CHANGE_PROCESS, IOMMUFD_TYPE as u32, IOMMUFD_CMD_IOAS_CHANGE_PROCESS);

/// The host kernel, reached through the device nodes under a `/dev` directory.
#[derive(Debug, Clone)]
pub struct RealKernel {
    dev_root: PathBuf,
}

impl Default for RealKernel {
    fn default() -> Self {
        RealKernel::new()
    }
}

impl RealKernel {
    /// The host's kernel through `/dev`.
    pub fn new() -> Self {
        RealKernel::with_dev_root("/dev")
    }

    /// The host's kernel through device nodes under another directory (a container's
    /// or chroot's `/dev`).
    pub fn with_dev_root(dev_root: impl Into<PathBuf>) -> Self {
        RealKernel { dev_root: dev_root.into() }
    }

    /// The directory device nodes are opened under.
    pub fn dev_root(&self) -> &Path {
        &self.dev_root
    }

    fn open_node(&self, rel: &str) -> KResult<KernelFd> {
        let path = CString::new(self.dev_root.join(rel).into_os_string().into_encoded_bytes())
            .map_err(|_| Errno::EINVAL)?;
        // SAFETY: `path` is a valid NUL-terminated string; open has no other preconditions.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            Err(Errno::last())
        } else {
            Ok(KernelFd::from_raw(fd))
        }
    }
}

/// Turns an ioctl return value into a result.
fn check(ret: i32) -> KResult<i32> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// A raw fd usable with vmm-sys-util's ioctl helpers.
struct Raw(RawFd);

impl std::os::fd::AsRawFd for Raw {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

fn fd(k: &KernelFd) -> Raw {
    Raw(k.raw())
}

/// Checks that a byte buffer can hold a kernel struct `T` at offset 0.
fn fits<T>(buf: &[u8]) -> KResult<()> {
    if buf.len() < std::mem::size_of::<T>() {
        Err(Errno::EINVAL)
    } else {
        Ok(())
    }
}

// SAFETY: every method is the kernel call it names; the kernel keeps the trait's promises
// (mmap returns a live mapping of the length asked, maps reach only the memory named).
unsafe impl VfioKernel for RealKernel {
    fn open_container(&self) -> KResult<KernelFd> {
        self.open_node("vfio/vfio")
    }

    fn open_group(&self, group: GroupNode) -> KResult<KernelFd> {
        self.open_node(&group.dev_path())
    }

    fn open_iommufd(&self) -> KResult<KernelFd> {
        self.open_node("iommu")
    }

    fn open_device_cdev(&self, index: u32) -> KResult<KernelFd> {
        self.open_node(&format!("vfio/devices/vfio{index}"))
    }

    fn close(&self, fd: KernelFd) {
        // SAFETY: the KernelFd was opened by this backend and is consumed here, so the
        // descriptor is closed exactly once.
        unsafe { libc::close(fd.raw()) };
    }

    fn export(&self, fd: KernelFd) -> std::os::fd::OwnedFd {
        // SAFETY: the KernelFd owns an open descriptor of this backend and is consumed
        // here, so ownership moves to the OwnedFd exactly once.
        unsafe { std::os::fd::FromRawFd::from_raw_fd(fd.raw()) }
    }

    fn adopt(&self, fd: std::os::fd::OwnedFd) -> KResult<KernelFd> {
        Ok(KernelFd::from_raw(std::os::fd::IntoRawFd::into_raw_fd(fd)))
    }

    fn get_api_version(&self, container: &KernelFd) -> KResult<i32> {
        // SAFETY: VFIO_GET_API_VERSION takes no argument and only returns a value.
        check(unsafe { ioctl(&fd(container), VFIO_GET_API_VERSION()) })
    }

    fn check_extension(&self, container: &KernelFd, extension: u32) -> KResult<u32> {
        // SAFETY: VFIO_CHECK_EXTENSION takes its argument by value and writes no memory.
        check(unsafe { ioctl_with_val(&fd(container), VFIO_CHECK_EXTENSION(), extension.into()) })
            .map(|v| v as u32)
    }

    fn set_iommu(&self, container: &KernelFd, iommu_type: u32) -> KResult<()> {
        // SAFETY: VFIO_SET_IOMMU takes its argument by value and writes no memory.
        check(unsafe { ioctl_with_val(&fd(container), VFIO_SET_IOMMU(), iommu_type.into()) })
            .map(drop)
    }

    fn iommu_get_info(&self, container: &KernelFd, buf: &mut [u8]) -> KResult<()> {
        fits::<vfio_iommu_type1_info>(buf)?;
        check_argsz(buf)?;
        // SAFETY: `buf` is writable for its whole length and its argsz says so, so the
        // kernel writes only inside it.
        check(unsafe {
            ioctl_with_mut_ptr(&fd(container), VFIO_IOMMU_GET_INFO(), buf.as_mut_ptr())
        })
        .map(drop)
    }

    unsafe fn map_dma(&self, container: &KernelFd, map: &vfio_iommu_type1_dma_map) -> KResult<()> {
        // SAFETY: the kernel reads the struct only; the memory it pins is the caller's
        // responsibility (see `Container::map_dma`'s safety contract).
        check(unsafe { ioctl_with_ref(&fd(container), VFIO_IOMMU_MAP_DMA(), map) }).map(drop)
    }

    fn unmap_dma(
        &self,
        container: &KernelFd,
        unmap: &mut vfio_iommu_type1_dma_unmap,
    ) -> KResult<()> {
        // SAFETY: the kernel writes back only inside the struct (no dirty bitmap requested
        // by this toolkit).
        check(unsafe { ioctl_with_mut_ref(&fd(container), VFIO_IOMMU_UNMAP_DMA(), unmap) })
            .map(drop)
    }

    fn group_get_status(&self, group: &KernelFd) -> KResult<u32> {
        let mut status = vfio_bindings::bindings::vfio::vfio_group_status {
            argsz: std::mem::size_of::<vfio_bindings::bindings::vfio::vfio_group_status>() as u32,
            flags: 0,
        };
        // SAFETY: the kernel writes only inside `status`, whose argsz is its size.
        check(unsafe { ioctl_with_mut_ref(&fd(group), VFIO_GROUP_GET_STATUS(), &mut status) })?;
        Ok(status.flags)
    }

    fn group_set_container(&self, group: &KernelFd, container: &KernelFd) -> KResult<()> {
        let raw: i32 = container.raw();
        // SAFETY: the kernel reads one i32 (the container fd) from the pointer.
        check(unsafe { ioctl_with_ref(&fd(group), VFIO_GROUP_SET_CONTAINER(), &raw) }).map(drop)
    }

    fn group_unset_container(&self, group: &KernelFd) -> KResult<()> {
        // SAFETY: no argument, no memory written.
        check(unsafe { ioctl(&fd(group), VFIO_GROUP_UNSET_CONTAINER()) }).map(drop)
    }

    fn group_get_device_fd(&self, group: &KernelFd, name: &CStr) -> KResult<KernelFd> {
        // SAFETY: the kernel reads a NUL-terminated string from the pointer.
        check(unsafe { ioctl_with_ptr(&fd(group), VFIO_GROUP_GET_DEVICE_FD(), name.as_ptr()) })
            .map(KernelFd::from_raw)
    }

    fn device_get_info(&self, device: &KernelFd, buf: &mut [u8]) -> KResult<()> {
        fits::<vfio_device_info>(buf)?;
        check_argsz(buf)?;
        // SAFETY: the kernel writes only inside `buf`, as its argsz says.
        check(unsafe { ioctl_with_mut_ptr(&fd(device), VFIO_DEVICE_GET_INFO(), buf.as_mut_ptr()) })
            .map(drop)
    }

    fn device_get_region_info(&self, device: &KernelFd, buf: &mut [u8]) -> KResult<()> {
        fits::<vfio_region_info>(buf)?;
        check_argsz(buf)?;
        // SAFETY: the kernel writes only inside `buf`, as its argsz says.
        check(unsafe {
            ioctl_with_mut_ptr(&fd(device), VFIO_DEVICE_GET_REGION_INFO(), buf.as_mut_ptr())
        })
        .map(drop)
    }

    fn device_get_irq_info(&self, device: &KernelFd, info: &mut vfio_irq_info) -> KResult<()> {
        // SAFETY: the kernel writes only inside `info`.
        check(unsafe { ioctl_with_mut_ref(&fd(device), VFIO_DEVICE_GET_IRQ_INFO(), info) })
            .map(drop)
    }

    fn device_set_irqs(&self, device: &KernelFd, buf: &[u8]) -> KResult<()> {
        fits::<vfio_irq_set>(buf)?;
        check_argsz(buf)?;
        // SAFETY: the kernel reads argsz bytes from `buf` (the caller's header says how
        // many) and writes nothing.
        check(unsafe { ioctl_with_ptr(&fd(device), VFIO_DEVICE_SET_IRQS(), buf.as_ptr()) })
            .map(drop)
    }

    fn device_reset(&self, device: &KernelFd) -> KResult<()> {
        // SAFETY: no argument, no memory written.
        check(unsafe { ioctl(&fd(device), VFIO_DEVICE_RESET()) }).map(drop)
    }

    fn device_get_pci_hot_reset_info(&self, device: &KernelFd, buf: &mut [u8]) -> KResult<()> {
        fits::<vfio_pci_hot_reset_info>(buf)?;
        check_argsz(buf)?;
        // SAFETY: the kernel writes only inside `buf`, as its argsz says.
        check(unsafe {
            ioctl_with_mut_ptr(&fd(device), VFIO_DEVICE_GET_PCI_HOT_RESET_INFO(), buf.as_mut_ptr())
        })
        .map(drop)
    }

    fn device_pci_hot_reset(&self, device: &KernelFd, buf: &[u8]) -> KResult<()> {
        fits::<vfio_pci_hot_reset>(buf)?;
        check_argsz(buf)?;
        // SAFETY: the kernel reads argsz bytes from `buf` and writes nothing.
        check(unsafe { ioctl_with_ptr(&fd(device), VFIO_DEVICE_PCI_HOT_RESET(), buf.as_ptr()) })
            .map(drop)
    }

    fn device_bind_iommufd(
        &self,
        device: &KernelFd,
        bind: &mut vfio_device_bind_iommufd,
    ) -> KResult<()> {
        // SAFETY: the kernel writes only inside `bind` (out_devid).
        check(unsafe { ioctl_with_mut_ref(&fd(device), VFIO_DEVICE_BIND_IOMMUFD(), bind) })
            .map(drop)
    }

    fn device_attach_iommufd_pt(
        &self,
        device: &KernelFd,
        attach: &mut vfio_device_attach_iommufd_pt,
    ) -> KResult<()> {
        // SAFETY: the kernel writes only inside `attach`.
        check(unsafe { ioctl_with_mut_ref(&fd(device), VFIO_DEVICE_ATTACH_IOMMUFD_PT(), attach) })
            .map(drop)
    }

    fn device_detach_iommufd_pt(
        &self,
        device: &KernelFd,
        detach: &mut vfio_device_detach_iommufd_pt,
    ) -> KResult<()> {
        // SAFETY: the kernel reads only `detach`.
        check(unsafe { ioctl_with_mut_ref(&fd(device), VFIO_DEVICE_DETACH_IOMMUFD_PT(), detach) })
            .map(drop)
    }

    #[inline]
    fn region_read(&self, device: &KernelFd, offset: u64, buf: &mut [u8]) -> KResult<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let n = unsafe {
            libc::pread64(device.raw(), buf.as_mut_ptr().cast(), buf.len(), offset as i64)
        };
        if n < 0 {
            Err(Errno::last())
        } else {
            Ok(n as usize)
        }
    }

    fn region_write(&self, device: &KernelFd, offset: u64, buf: &[u8]) -> KResult<usize> {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
        let n =
            unsafe { libc::pwrite64(device.raw(), buf.as_ptr().cast(), buf.len(), offset as i64) };
        if n < 0 {
            Err(Errno::last())
        } else {
            Ok(n as usize)
        }
    }

    fn mmap(&self, device: &KernelFd, offset: u64, len: usize, prot: i32) -> KResult<NonNull<u8>> {
        // SAFETY: a fresh shared mapping chosen by the kernel (addr NULL) aliases no Rust
        // object; the caller owns it until `munmap`.
        let p = unsafe {
            libc::mmap64(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                device.raw(),
                offset as i64,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        NonNull::new(p.cast()).ok_or(Errno::EFAULT)
    }

    unsafe fn munmap(&self, addr: NonNull<u8>, len: usize) -> KResult<()> {
        // SAFETY: the caller guarantees (see the trait's contract) that this is exactly a
        // mapping from `mmap` that nothing uses any more.
        check(unsafe { libc::munmap(addr.as_ptr().cast(), len) }).map(drop)
    }

    fn ioas_alloc(&self, iommufd: &KernelFd, alloc: &mut iommu_ioas_alloc) -> KResult<()> {
        // SAFETY: the kernel writes only inside `alloc`.
        check(unsafe { ioctl_with_mut_ref(&fd(iommufd), IOMMU_IOAS_ALLOC(), alloc) }).map(drop)
    }

    unsafe fn ioas_map(&self, iommufd: &KernelFd, map: &mut iommu_ioas_map) -> KResult<()> {
        // SAFETY: the kernel writes only inside `map` (iova); the pinned memory is the
        // caller's responsibility (see `Ioas::map_dma`'s safety contract).
        check(unsafe { ioctl_with_mut_ref(&fd(iommufd), IOMMU_IOAS_MAP(), map) }).map(drop)
    }

    fn ioas_unmap(&self, iommufd: &KernelFd, unmap: &mut iommu_ioas_unmap) -> KResult<()> {
        // SAFETY: the kernel writes only inside `unmap` (length).
        check(unsafe { ioctl_with_mut_ref(&fd(iommufd), IOMMU_IOAS_UNMAP(), unmap) }).map(drop)
    }

    fn ioas_iova_ranges(&self, iommufd: &KernelFd, buf: &mut [u8]) -> KResult<()> {
        let hdr = std::mem::size_of::<iommu_ioas_iova_ranges>();
        fits::<iommu_ioas_iova_ranges>(buf)?;
        let room = ((buf.len() - hdr) / std::mem::size_of::<iommu_iova_range>()) as u32;
        // SAFETY: `buf` holds at least a header (checked above); it may be unaligned, so
        // the header is read and written with unaligned accesses.
        let mut h: iommu_ioas_iova_ranges =
            unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
        h.size = hdr as u32;
        h.num_iovas = h.num_iovas.min(room);
        h.allowed_iovas = buf[hdr..].as_mut_ptr() as u64;
        // SAFETY: the kernel writes at most `num_iovas` ranges at `allowed_iovas`, which
        // lie inside `buf` after the header.
        let r =
            check(unsafe { ioctl_with_mut_ref(&fd(iommufd), IOMMU_IOAS_IOVA_RANGES(), &mut h) });
        h.allowed_iovas = 0;
        // SAFETY: as above, `buf` holds a header.
        unsafe { std::ptr::write_unaligned(buf.as_mut_ptr().cast(), h) };
        r.map(drop)
    }

    unsafe fn ioas_map_file(
        &self,
        iommufd: &KernelFd,
        map: &mut iommu_ioas_map_file,
    ) -> KResult<()> {
        // SAFETY: the kernel writes only inside `map` (iova); what the device may do to
        // the file's pages is the caller's responsibility (see `Ioas::map_file`).
        check(unsafe { ioctl_with_mut_ref(&fd(iommufd), IOMMU_IOAS_MAP_FILE(), map) }).map(drop)
    }

    fn ioas_change_process(
        &self,
        iommufd: &KernelFd,
        change: &mut iommu_ioas_change_process,
    ) -> KResult<()> {
        // SAFETY: the kernel reads only `change`.
        check(unsafe { ioctl_with_mut_ref(&fd(iommufd), IOMMU_IOAS_CHANGE_PROCESS(), change) })
            .map(drop)
    }

    fn iommufd_destroy(&self, iommufd: &KernelFd, id: u32) -> KResult<()> {
        let d = iommu_destroy { size: std::mem::size_of::<iommu_destroy>() as u32, id };
        // SAFETY: the kernel reads only `d`.
        check(unsafe { ioctl_with_ref(&fd(iommufd), IOMMU_DESTROY(), &d) }).map(drop)
    }

    fn eventfd(&self) -> KResult<vmm_sys_util::eventfd::EventFd> {
        vmm_sys_util::eventfd::EventFd::new(libc::EFD_CLOEXEC)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
    }

    fn memlock_limit(&self) -> KResult<u64> {
        let (soft, _hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK)?;
        Ok(if soft == libc::RLIM_INFINITY { u64::MAX } else { soft })
    }

    fn device_feature(&self, device: &KernelFd, buf: &mut [u8]) -> KResult<i32> {
        fits::<[u32; 2]>(buf)?;
        check_argsz(buf)?;
        // SAFETY: the kernel reads and writes only the argsz bytes of `buf` (checked to
        // be within it above).
        check(unsafe { ioctl_with_mut_ptr(&fd(device), VFIO_DEVICE_FEATURE(), buf.as_mut_ptr()) })
    }

    fn device_bind_iommufd_with_token(
        &self,
        device: &KernelFd,
        bind: &mut vfio_device_bind_iommufd,
        token: &[u8; 16],
    ) -> KResult<()> {
        bind.flags |= VFIO_DEVICE_BIND_FLAG_TOKEN;
        bind.token_uuid_ptr = token.as_ptr() as u64;
        // SAFETY: the kernel writes only inside `bind` (out_devid) and reads 16 bytes at
        // `token_uuid_ptr`, which `token` holds for the whole call.
        let r = check(unsafe { ioctl_with_mut_ref(&fd(device), VFIO_DEVICE_BIND_IOMMUFD(), bind) });
        bind.token_uuid_ptr = 0;
        r.map(drop)
    }
}

/// Refuses a buffer whose `argsz` (the first u32 of every VFIO info struct) claims more
/// room than the buffer has: the kernel would write past its end.
fn check_argsz(buf: &[u8]) -> KResult<()> {
    let argsz = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if argsz > buf.len() {
        Err(Errno::EINVAL)
    } else {
        Ok(())
    }
}
