//! `lab-vfio-smoke`: an in-VM check that the lab's kernel and IOMMU let VFIO's legacy
//! container path work end to end on edu: bind through sysfs, container + group, SET_IOMMU
//! (type1v2, or no-IOMMU without an IOMMU), device fd, BAR0 reads and writes through the
//! region offset, and (with an IOMMU) a DMA map and unmap. It checks the lab environment, not
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
    let mut region = vfio_region_info {
        argsz: argsz::<vfio_region_info>(),
        flags: 0,
        index: 0,
        cap_offset: 0,
        size: 0,
        offset: 0,
    };
    ioctl_ptr(&device, DEVICE_GET_REGION_INFO, &mut region, "VFIO_DEVICE_GET_REGION_INFO(BAR0)")?;
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
    if !noiommu {
        dma_map_unmap(&container)?;
    }
    Ok(())
}

fn dma_map_unmap(container: &std::fs::File) -> Step<()> {
    const LEN: usize = 4096;
    const IOVA: u64 = 0x10_0000;
    // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
    let buf = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if buf == libc::MAP_FAILED {
        return Err(errno("mmap"));
    }
    let mut map = vfio_iommu_type1_dma_map {
        argsz: argsz::<vfio_iommu_type1_dma_map>(),
        flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        vaddr: buf as u64,
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
    // SAFETY: `buf` is the mapping created above, unmapped from the IOMMU or never mapped.
    unsafe { libc::munmap(buf, LEN) };
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
    let result = run(&bdf, noiommu);
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
    }

    #[test]
    fn argsz_is_the_struct_size() {
        assert_eq!(argsz::<vfio_group_status>(), 8);
        assert_eq!(argsz::<vfio_region_info>(), 32);
        assert_eq!(argsz::<vfio_iommu_type1_dma_map>(), 32);
        assert_eq!(argsz::<vfio_iommu_type1_dma_unmap>(), 24);
    }
}
