//! iommufd: the node, IOASes, IOVA ranges, device cdevs bound and attached, pinning,
//! file mappings and live update
//! (`iommufd/*`, `device_cdev.c`).

use iommufd_bindings::iommufd::{
    iommu_ioas_alloc, iommu_ioas_change_process, iommu_ioas_map, iommu_ioas_map_file,
    iommu_ioas_unmap,
};

use super::*;

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

/// A memfd of `len` bytes.
fn memfd(len: u64) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create takes a NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"ram".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: a new descriptor nothing else owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: ftruncate of our own memfd.
    assert_eq!(unsafe { libc::ftruncate(std::os::fd::AsRawFd::as_raw_fd(&fd), len as i64) }, 0);
    fd
}

fn ioas_map_file(
    k: &MockKernel,
    io: &KernelFd,
    id: u32,
    fd: i32,
    start: u64,
    len: u64,
    iova: Option<u64>,
) -> KResult<u64> {
    let mut m = iommu_ioas_map_file {
        size: 40,
        flags: 2 | 4 | u32::from(iova.is_some()),
        ioas_id: id,
        fd,
        start,
        length: len,
        iova: iova.unwrap_or(0),
    };
    // SAFETY: the file is this test's memfd; nothing holds a reference into its pages.
    unsafe { k.ioas_map_file(io, &mut m) }.map(|_| m.iova)
}

fn change_process(k: &MockKernel, io: &KernelFd) -> KResult<()> {
    k.ioas_change_process(io, &mut iommu_ioas_change_process { size: 8, __reserved: 0 })
}

#[test]
fn map_file_reaches_the_files_pages_and_pins_them_at_attach() {
    use std::os::fd::AsRawFd;
    let (host, k) = edu_host();
    let io = k.open_iommufd().unwrap();
    let a = ioas(&k, &io);
    let ram = memfd(4 * PAGE);
    // Without a domain the file is only referenced: the IOVA follows the file offset.
    let iova = ioas_map_file(&k, &io, a, ram.as_raw_fd(), PAGE, 2 * PAGE, None).unwrap();
    assert_eq!(iova % PAGE, 0);
    assert_eq!(k.dma_mappings(), 1);
    assert_eq!(k.locked_bytes(), 0);
    // ioas.c / io_pagetable.c: the errnos before anything is pinned.
    let bad = ioas_map_file(&k, &io, a, -1, 0, PAGE, Some(1 << 30));
    assert_eq!(bad.unwrap_err(), Errno::EBADF);
    let zero = ioas_map_file(&k, &io, a, ram.as_raw_fd(), 0, 0, Some(1 << 30));
    assert_eq!(zero.unwrap_err(), Errno::EINVAL);
    let wrap = ioas_map_file(&k, &io, a, ram.as_raw_fd(), u64::MAX - PAGE, 2 * PAGE, None);
    assert_eq!(wrap.unwrap_err(), Errno::EOVERFLOW);
    let no_ioas = ioas_map_file(&k, &io, 999, ram.as_raw_fd(), 0, PAGE, None);
    assert_eq!(no_ioas.unwrap_err(), Errno::ENOENT);

    let d = k.open_device_cdev(0).unwrap();
    let mut bind = vfio_device_bind_iommufd { argsz: 24, iommufd: io.raw(), ..Default::default() };
    k.device_bind_iommufd(&d, &mut bind).unwrap();
    let mut at = vfio_device_attach_iommufd_pt { argsz: 16, pt_id: a, ..Default::default() };
    k.device_attach_iommufd_pt(&d, &mut at).unwrap();
    assert_eq!(k.locked_bytes(), 2 * PAGE, "the file's pages are pinned at attach");
    // Device DMA lands in the file (seen through a read of the memfd).
    host.dma_write(pa(EDU), iova + 8, b"file").unwrap();
    let mut got = [0u8; 4];
    // SAFETY: pread into our buffer from our memfd.
    let n = unsafe { libc::pread(ram.as_raw_fd(), got.as_mut_ptr().cast(), 4, (PAGE + 8) as i64) };
    assert_eq!((n, &got), (4, b"file"));
    // With a domain, memfd_pin_folios refuses a range past the file's end and a file
    // that is not shmem (an iommufd descriptor is not a memfd of any size).
    let past = ioas_map_file(&k, &io, a, ram.as_raw_fd(), 3 * PAGE, 2 * PAGE, Some(1 << 30));
    assert_eq!(past.unwrap_err(), Errno::EINVAL);
    let devnull = std::fs::File::open("/dev/null").unwrap();
    let not_shmem = ioas_map_file(&k, &io, a, devnull.as_raw_fd(), 0, PAGE, Some(1 << 30));
    assert_eq!(not_shmem.unwrap_err(), Errno::EINVAL);
    assert_eq!(k.dma_mappings(), 1);

    ioas_unmap(&k, &io, a, iova, 2 * PAGE).unwrap();
    assert_eq!(k.locked_bytes(), 0);
    let mut det = vfio_device_detach_iommufd_pt { argsz: 12, ..Default::default() };
    k.device_detach_iommufd_pt(&d, &mut det).unwrap();
    k.close(d);
    k.close(io);
    assert_eq!(k.open_fds(), 0);
}

#[test]
fn change_process_needs_every_mapping_from_a_file() {
    use std::os::fd::AsRawFd;
    let (_h, k) = edu_host();
    let io = k.open_iommufd().unwrap();
    let (a, b) = (ioas(&k, &io), ioas(&k, &io));
    // Nothing mapped: nothing to move.
    change_process(&k, &io).unwrap();
    let ram = memfd(2 * PAGE);
    ioas_map_file(&k, &io, a, ram.as_raw_fd(), 0, 2 * PAGE, Some(0x10000)).unwrap();
    change_process(&k, &io).unwrap();
    // A mapping of a user address in any IOAS of the iommufd: EINVAL, nothing changed.
    let mem = anon(PAGE as usize);
    ioas_map(&k, &io, b, mem.as_ptr() as u64, PAGE, Some(0x10000)).unwrap();
    assert_eq!(change_process(&k, &io).unwrap_err(), Errno::EINVAL);
    assert_eq!(k.dma_mappings(), 2);
    let mut c = iommu_ioas_change_process { size: 8, __reserved: 1 };
    assert_eq!(k.ioas_change_process(&io, &mut c).unwrap_err(), Errno::EOPNOTSUPP);
    ioas_unmap(&k, &io, b, 0, u64::MAX).unwrap();
    change_process(&k, &io).unwrap();
    k.close(io);
    assert_eq!(k.dma_mappings(), 0);
}

#[test]
fn kernels_before_6_13_have_neither_map_file_nor_change_process() {
    use std::os::fd::AsRawFd;
    let (host, k) = edu_host();
    host.set_kernel_config(MockKernelConfig::linux(6, 12));
    let io = k.open_iommufd().unwrap();
    let a = ioas(&k, &io);
    let ram = memfd(PAGE);
    let r = ioas_map_file(&k, &io, a, ram.as_raw_fd(), 0, PAGE, None);
    assert_eq!(r.unwrap_err(), Errno::ENOTTY);
    assert_eq!(change_process(&k, &io).unwrap_err(), Errno::ENOTTY);
    host.set_kernel_config(MockKernelConfig::linux(6, 13));
    ioas_map_file(&k, &io, a, ram.as_raw_fd(), 0, PAGE, None).unwrap();
    change_process(&k, &io).unwrap();
    k.close(io);
}
