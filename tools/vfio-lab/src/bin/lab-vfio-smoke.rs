//! `lab-vfio-smoke`: an in-VM check that the lab's kernel and IOMMU let VFIO's legacy
//! container path work end to end on edu: bind through sysfs, container + group, SET_IOMMU
//! (type1v2, or no-IOMMU without an IOMMU), device fd, BAR0 reads and writes through the
//! region offset, and (with an IOMMU) a DMA map and unmap; then, where /dev/iommu exists, the
//! same through iommufd and the device cdev. It checks the lab environment, not
//! the library: it speaks to the kernel directly. The suite runs it from `/tests`.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::process::ExitCode;

use vfio_bindings::bindings::vfio::{
    vfio_group_status, vfio_iommu_type1_dma_map, vfio_iommu_type1_dma_unmap, vfio_region_info,
    VFIO_TYPE1v2_IOMMU, VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE, VFIO_GROUP_FLAGS_VIABLE,
    VFIO_NOIOMMU_IOMMU,
};

const VFIO: u64 = b';' as u64;
const fn io(nr: u64) -> u64 {
    (VFIO << 8) | nr
}
const GET_API_VERSION: u64 = io(100);
const CHECK_EXTENSION: u64 = io(101);
const SET_IOMMU: u64 = io(102);
const GROUP_GET_STATUS: u64 = io(103);
const GROUP_SET_CONTAINER: u64 = io(104);
const GROUP_GET_DEVICE_FD: u64 = io(106);
const DEVICE_GET_REGION_INFO: u64 = io(108);
const IOMMU_MAP_DMA: u64 = io(113);
const IOMMU_UNMAP_DMA: u64 = io(114);

const DEVICE_BIND_IOMMUFD: u64 = io(118);
const DEVICE_ATTACH_IOMMUFD_PT: u64 = io(119);
const IOMMU_IOAS_ALLOC: u64 = io(0x81);
const IOMMU_IOAS_MAP: u64 = io(0x85);
const IOMMU_IOAS_UNMAP: u64 = io(0x86);
const IOAS_MAP_FIXED_IOVA: u32 = 1;
const IOAS_MAP_WRITEABLE: u32 = 2;
const IOAS_MAP_READABLE: u32 = 4;

/// `struct vfio_device_bind_iommufd` up to `out_devid` (Linux 6.12).
#[repr(C)]
#[derive(Default)]
struct BindIommufd {
    argsz: u32,
    flags: u32,
    iommufd: i32,
    out_devid: u32,
}

/// `struct vfio_device_attach_iommufd_pt` up to `pt_id` (Linux 6.12).
#[repr(C)]
#[derive(Default)]
struct AttachPt {
    argsz: u32,
    flags: u32,
    pt_id: u32,
}

/// `struct iommu_ioas_alloc`.
#[repr(C)]
#[derive(Default)]
struct IoasAlloc {
    size: u32,
    flags: u32,
    out_ioas_id: u32,
}

/// `struct iommu_ioas_map`.
#[repr(C)]
#[derive(Default)]
struct IoasMap {
    size: u32,
    flags: u32,
    ioas_id: u32,
    reserved: u32,
    user_va: u64,
    length: u64,
    iova: u64,
}

/// `struct iommu_ioas_unmap`.
#[repr(C)]
#[derive(Default)]
struct IoasUnmap {
    size: u32,
    ioas_id: u32,
    iova: u64,
    length: u64,
}

/// edu's identification register value.
const EDU_IDENT: u32 = 0x0100_00ed;

type Step<T> = Result<T, String>;

fn errno(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn sysfs_write(path: &str, value: &str) -> Step<()> {
    std::fs::write(path, value).map_err(|e| format!("write {value:?} to {path}: {e}"))
}

fn driver_of(bdf: &str) -> Option<String> {
    std::fs::read_link(format!("/sys/bus/pci/devices/{bdf}/driver"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
}

fn bind(bdf: &str) -> Step<()> {
    let dev = format!("/sys/bus/pci/devices/{bdf}");
    if driver_of(bdf).is_some() {
        sysfs_write(&format!("{dev}/driver/unbind"), bdf)?;
    }
    sysfs_write(&format!("{dev}/driver_override"), "vfio-pci")?;
    let _ = std::fs::write("/sys/bus/pci/drivers_probe", bdf);
    match driver_of(bdf).as_deref() {
        Some("vfio-pci") => Ok(()),
        other => Err(format!("{bdf} is on {other:?} after binding, not vfio-pci")),
    }
}

fn restore(bdf: &str) {
    let dev = format!("/sys/bus/pci/devices/{bdf}");
    if driver_of(bdf).is_some() {
        let _ = std::fs::write(format!("{dev}/driver/unbind"), bdf);
    }
    let _ = std::fs::write(format!("{dev}/driver_override"), "\n");
    let _ = std::fs::write("/sys/bus/pci/drivers_probe", bdf);
}

fn open_rw(path: &str) -> Step<std::fs::File> {
    OpenOptions::new().read(true).write(true).open(path).map_err(|e| format!("open {path}: {e}"))
}

/// An ioctl whose argument is a plain integer; returns the non-negative result.
fn ioctl_val(fd: &impl AsRawFd, req: u64, arg: libc::c_ulong, what: &str) -> Step<i32> {
    // SAFETY: these VFIO requests take an integer argument, not a pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as libc::c_ulong, arg) };
    if r < 0 {
        Err(errno(what))
    } else {
        Ok(r)
    }
}

/// An ioctl whose argument points to `arg`, which the kernel may read and write.
fn ioctl_ptr<T>(fd: &impl AsRawFd, req: u64, arg: &mut T, what: &str) -> Step<i32> {
    // SAFETY: `arg` is a live, exclusively borrowed value of the type the request expects,
    // with its argsz set by the caller; the kernel does not keep the pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as libc::c_ulong, arg as *mut T) };
    if r < 0 {
        Err(errno(what))
    } else {
        Ok(r)
    }
}

fn argsz<T>() -> u32 {
    std::mem::size_of::<T>() as u32
}

fn run(bdf: &str, noiommu: bool) -> Step<()> {
    bind(bdf)?;
    let group = std::fs::read_link(format!("/sys/bus/pci/devices/{bdf}/iommu_group"))
        .map_err(|e| format!("{bdf} has no iommu_group after binding: {e}"))?;
    let n = group.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let group_path =
        if noiommu { format!("/dev/vfio/noiommu-{n}") } else { format!("/dev/vfio/{n}") };
    println!("smoke: {bdf} group {n} ({group_path})");
    let container = open_rw("/dev/vfio/vfio")?;
    let api = ioctl_val(&container, GET_API_VERSION, 0, "VFIO_GET_API_VERSION")?;
    if api != 0 {
        return Err(format!("VFIO_GET_API_VERSION = {api}, expected 0"));
    }
    let iommu_type = if noiommu { VFIO_NOIOMMU_IOMMU } else { VFIO_TYPE1v2_IOMMU };
    let ext = ioctl_val(&container, CHECK_EXTENSION, iommu_type.into(), "VFIO_CHECK_EXTENSION")?;
    if ext != 1 {
        return Err(format!("VFIO_CHECK_EXTENSION({iommu_type}) = {ext}, expected 1"));
    }
    let group = open_rw(&group_path)?;
    let mut status = vfio_group_status { argsz: argsz::<vfio_group_status>(), flags: 0 };
    ioctl_ptr(&group, GROUP_GET_STATUS, &mut status, "VFIO_GROUP_GET_STATUS")?;
    if status.flags & VFIO_GROUP_FLAGS_VIABLE == 0 {
        return Err(format!("group {n} is not viable (flags {:#x})", status.flags));
    }
    let mut cfd = container.as_raw_fd();
    ioctl_ptr(&group, GROUP_SET_CONTAINER, &mut cfd, "VFIO_GROUP_SET_CONTAINER")?;
    ioctl_val(&container, SET_IOMMU, iommu_type.into(), "VFIO_SET_IOMMU")?;
    println!("smoke: container attached with iommu type {iommu_type}");
    let name = CString::new(bdf).map_err(|e| e.to_string())?;
    // SAFETY: the request takes a NUL-terminated device name that outlives the call.
    let dfd = unsafe {
        libc::ioctl(group.as_raw_fd(), GROUP_GET_DEVICE_FD as libc::c_ulong, name.as_ptr())
    };
    if dfd < 0 {
        return Err(errno("VFIO_GROUP_GET_DEVICE_FD"));
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    let device: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(dfd) };
    let device = std::fs::File::from(device);
    check_bar0(&device)?;
    if !noiommu {
        dma_map_unmap(&container)?;
    }
    Ok(())
}

/// Reads edu's ident and exercises its liveness register through the device fd.
fn check_bar0(device: &std::fs::File) -> Step<()> {
    let mut region = vfio_region_info {
        argsz: argsz::<vfio_region_info>(),
        flags: 0,
        index: 0,
        cap_offset: 0,
        size: 0,
        offset: 0,
    };
    ioctl_ptr(device, DEVICE_GET_REGION_INFO, &mut region, "VFIO_DEVICE_GET_REGION_INFO(BAR0)")?;
    println!("smoke: BAR0 size {:#x} at fd offset {:#x}", region.size, region.offset);
    let mut b = [0u8; 4];
    device.read_exact_at(&mut b, region.offset).map_err(|e| format!("read BAR0+0: {e}"))?;
    let ident = u32::from_le_bytes(b);
    if ident != EDU_IDENT {
        return Err(format!("edu ident {ident:#x}, expected {EDU_IDENT:#x}"));
    }
    device
        .write_all_at(&0x1234_5678u32.to_le_bytes(), region.offset + 4)
        .map_err(|e| format!("write BAR0+4: {e}"))?;
    device.read_exact_at(&mut b, region.offset + 4).map_err(|e| format!("read BAR0+4: {e}"))?;
    if u32::from_le_bytes(b) != !0x1234_5678u32 {
        return Err(format!("liveness read {:#x}", u32::from_le_bytes(b)));
    }
    println!("smoke: BAR0 ident {ident:#010x}, liveness ok");
    Ok(())
}

/// A private anonymous buffer for DMA mappings.
struct Buffer(*mut libc::c_void, usize);

impl Buffer {
    fn new(len: usize) -> Step<Buffer> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(errno("mmap"));
        }
        Ok(Buffer(p, len))
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: the mapping was created in `new` and is unmapped only here.
        unsafe { libc::munmap(self.0, self.1) };
    }
}

/// The iommufd path (custom kernel): bind the device cdev to /dev/iommu, attach it to a new
/// IOAS, map and unmap a buffer at a fixed IOVA, read BAR0.
fn run_iommufd(bdf: &str) -> Step<()> {
    let dir = format!("/sys/bus/pci/devices/{bdf}/vfio-dev");
    let name = std::fs::read_dir(&dir)
        .map_err(|e| format!("read {dir}: {e}"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("vfio"))
        .ok_or_else(|| format!("no vfioN in {dir}"))?;
    let device = open_rw(&format!("/dev/vfio/devices/{name}"))?;
    let iommufd = open_rw("/dev/iommu")?;
    let mut bind = BindIommufd {
        argsz: argsz::<BindIommufd>(),
        iommufd: iommufd.as_raw_fd(),
        ..Default::default()
    };
    ioctl_ptr(&device, DEVICE_BIND_IOMMUFD, &mut bind, "VFIO_DEVICE_BIND_IOMMUFD")?;
    let mut alloc = IoasAlloc { size: argsz::<IoasAlloc>(), ..Default::default() };
    ioctl_ptr(&iommufd, IOMMU_IOAS_ALLOC, &mut alloc, "IOMMU_IOAS_ALLOC")?;
    let mut attach =
        AttachPt { argsz: argsz::<AttachPt>(), pt_id: alloc.out_ioas_id, ..Default::default() };
    ioctl_ptr(&device, DEVICE_ATTACH_IOMMUFD_PT, &mut attach, "VFIO_DEVICE_ATTACH_IOMMUFD_PT")?;
    println!(
        "smoke: iommufd: /dev/vfio/devices/{name} bound (devid {}), attached to IOAS {}",
        bind.out_devid, alloc.out_ioas_id
    );
    check_bar0(&device)?;
    const LEN: usize = 4096;
    const IOVA: u64 = 0x20_0000;
    let buf = Buffer::new(LEN)?;
    let mut map = IoasMap {
        size: argsz::<IoasMap>(),
        flags: IOAS_MAP_FIXED_IOVA | IOAS_MAP_READABLE | IOAS_MAP_WRITEABLE,
        ioas_id: alloc.out_ioas_id,
        user_va: buf.0 as u64,
        length: LEN as u64,
        iova: IOVA,
        ..Default::default()
    };
    ioctl_ptr(&iommufd, IOMMU_IOAS_MAP, &mut map, "IOMMU_IOAS_MAP")?;
    // Unmap everything: iova 0, length u64::MAX.
    let mut unmap = IoasUnmap {
        size: argsz::<IoasUnmap>(),
        ioas_id: alloc.out_ioas_id,
        iova: 0,
        length: u64::MAX,
    };
    ioctl_ptr(&iommufd, IOMMU_IOAS_UNMAP, &mut unmap, "IOMMU_IOAS_UNMAP(all)")?;
    if unmap.length != LEN as u64 {
        return Err(format!(
            "IOAS unmap-all reported {:#x} bytes, expected {LEN:#x}",
            unmap.length
        ));
    }
    println!("smoke: iommufd: IOAS map at {IOVA:#x} + unmap-all of {LEN} bytes ok");
    Ok(())
}

fn dma_map_unmap(container: &std::fs::File) -> Step<()> {
    const LEN: usize = 4096;
    const IOVA: u64 = 0x10_0000;
    let buf = Buffer::new(LEN)?;
    let mut map = vfio_iommu_type1_dma_map {
        argsz: argsz::<vfio_iommu_type1_dma_map>(),
        flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        vaddr: buf.0 as u64,
        iova: IOVA,
        size: LEN as u64,
    };
    let mapped = ioctl_ptr(container, IOMMU_MAP_DMA, &mut map, "VFIO_IOMMU_MAP_DMA");
    let mut unmap = vfio_iommu_type1_dma_unmap {
        argsz: argsz::<vfio_iommu_type1_dma_unmap>(),
        flags: 0,
        iova: IOVA,
        size: LEN as u64,
        data: Default::default(),
    };
    let unmapped = mapped
        .and_then(|_| ioctl_ptr(container, IOMMU_UNMAP_DMA, &mut unmap, "VFIO_IOMMU_UNMAP_DMA"));
    drop(buf);
    unmapped?;
    if unmap.size != LEN as u64 {
        return Err(format!("unmap reported {:#x} bytes, expected {LEN:#x}", unmap.size));
    }
    println!("smoke: DMA map + unmap of {LEN} bytes at IOVA {IOVA:#x} ok");
    Ok(())
}

fn main() -> ExitCode {
    let Ok(bdf) = std::env::var("VFIO_LAB_EDU") else {
        eprintln!("lab-vfio-smoke: VFIO_LAB_EDU is not set (run it inside vfio-lab)");
        return ExitCode::from(2);
    };
    let noiommu = std::env::var("VFIO_LAB_IOMMU").as_deref() == Ok("none");
    let iommufd = std::path::Path::new("/dev/iommu").exists() && !noiommu;
    let mut result = run(&bdf, noiommu);
    if result.is_ok() && iommufd {
        // The legacy container is closed by now; the same binding serves the cdev.
        result = run_iommufd(&bdf);
    }
    restore(&bdf);
    match result {
        Ok(()) => {
            println!("smoke: ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lab-vfio-smoke: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_linux_vfio_h() {
        // _IO(';', 100 + n) from include/uapi/linux/vfio.h.
        assert_eq!(GET_API_VERSION, 0x3b64);
        assert_eq!(CHECK_EXTENSION, 0x3b65);
        assert_eq!(SET_IOMMU, 0x3b66);
        assert_eq!(GROUP_GET_STATUS, 0x3b67);
        assert_eq!(GROUP_SET_CONTAINER, 0x3b68);
        assert_eq!(GROUP_GET_DEVICE_FD, 0x3b6a);
        assert_eq!(DEVICE_GET_REGION_INFO, 0x3b6c);
        assert_eq!(IOMMU_MAP_DMA, 0x3b71);
        assert_eq!(IOMMU_UNMAP_DMA, 0x3b72);
        assert_eq!(DEVICE_BIND_IOMMUFD, 0x3b76);
        assert_eq!(DEVICE_ATTACH_IOMMUFD_PT, 0x3b77);
        assert_eq!(IOMMU_IOAS_ALLOC, 0x3b81);
        assert_eq!(IOMMU_IOAS_MAP, 0x3b85);
        assert_eq!(IOMMU_IOAS_UNMAP, 0x3b86);
    }

    #[test]
    fn argsz_is_the_struct_size() {
        assert_eq!(argsz::<vfio_group_status>(), 8);
        assert_eq!(argsz::<vfio_region_info>(), 32);
        assert_eq!(argsz::<vfio_iommu_type1_dma_map>(), 32);
        assert_eq!(argsz::<vfio_iommu_type1_dma_unmap>(), 24);
        assert_eq!(argsz::<BindIommufd>(), 16);
        assert_eq!(argsz::<AttachPt>(), 12);
        assert_eq!(argsz::<IoasAlloc>(), 12);
        assert_eq!(argsz::<IoasMap>(), 40);
        assert_eq!(argsz::<IoasUnmap>(), 24);
    }
}
