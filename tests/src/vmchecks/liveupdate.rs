//! Live update on iommufd (`IOMMU_IOAS_MAP_FILE` + `IOMMU_IOAS_CHANGE_PROCESS`, Linux
//! 6.13+) on the real kernel: guest RAM is a memfd mapped into an IOAS from the file;
//! edu, attached to that IOAS, reads a pattern from it; a new process (`exec` of this
//! binary, as a VMM re-executes itself) inherits the iommufd, the bound device and the
//! memfd, takes the pinned memory over with `change_process`, and has edu write the
//! pattern back into the memfd by DMA. `change_process` is refused while a mapping of a
//! user address exists. Kernels before 6.13 refuse `map_file` with the "predates" hint.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use vfio_core::dma::{Backing, HostMemory};
use vfio_core::iommufd::Iommufd;
use vfio_core::kernel::{Errno, RealKernel, VfioKernel};
use vfio_core::{DeviceFds, DmaPerm, Interface, PciAddress, Vfio};

use crate::driver::{reg, Edu, EDU_BUFFER, MAX_DMA};
use crate::report::{ensure, Ctx, Outcome, Report};

/// The argument that makes `vfio-vm-checks` the new process.
pub const CHILD_ARG: &str = "--liveupdate-child";

/// Guest RAM: 64 KiB of memfd at IOVA 8 MiB; edu reads from its start and the new
/// process has it write at `BACK`.
const LEN: u64 = 1 << 16;
const IOVA: u64 = 0x80_0000;
const BACK: u64 = 0x8000;
const T: Duration = Duration::from_secs(5);

fn pattern() -> Vec<u8> {
    (0..MAX_DMA as usize).map(|i| (i * 7 + 3) as u8).collect()
}

/// The old process's side (iommufd mode only).
pub fn run(rep: &mut Report, vfio: &Vfio, edu: PciAddress) {
    let (major, minor) = release();
    let has_map_file = (major, minor) >= (6, 13);
    let r = check(vfio, edu, has_map_file, rep);
    let what = if has_map_file {
        "guest RAM mapped from a memfd, a new process takes it over with change_process (refused while a user-address mapping exists) and edu's DMA lands in the memfd"
    } else {
        "this kernel predates IOMMU_IOAS_MAP_FILE (6.13) and map_file says so"
    };
    rep.check(format!("live update [iommufd]: {what}"), r);
}

fn check(vfio: &Vfio, edu: PciAddress, has_map_file: bool, rep: &Report) -> Outcome {
    let kernel: Arc<dyn VfioKernel> = Arc::new(RealKernel::new());
    let DeviceFds::Cdev { iommufd, device, .. } =
        vfio.open_fds(edu, Interface::Iommufd).ctx("open_fds")?
    else {
        return Err("not a cdev".into());
    };
    let iommufd = Iommufd::from_fd(kernel, iommufd).ctx("iommufd")?;
    let ioas = iommufd.alloc_ioas().ctx("IOAS")?;
    let ram = memfd(LEN)?;
    // SAFETY: the memfd is this check's own; nothing holds a reference into its pages
    // (it is read and written with pread/pwrite only).
    let mapped = unsafe { ioas.map_file(ram.as_fd(), 0, Some(IOVA), LEN, DmaPerm::ReadWrite) };
    if !has_map_file {
        let e = mapped.err().ok_or("map_file succeeded on a kernel before 6.13")?;
        rep.note(format!("map_file: {e}"));
        return ensure(
            e.errno() == Some(Errno::ENOTTY)
                && e.to_string().contains("predates IOMMU_IOAS_MAP_FILE"),
            || e.to_string(),
        );
    }
    ensure(mapped.ctx("map_file")? == IOVA, || "the IOVA moved".into())?;
    let dev =
        vfio_core::Device::from_cdev_fd(&ioas, device, &edu.to_string()).ctx("bind and attach")?;
    let drv = Edu::new(&dev).ctx("edu")?;
    let data = pattern();
    pwrite(&ram, 0, &data)?;
    ensure(drv.dma_to_device(IOVA, MAX_DMA, T).ctx("DMA from the memfd")?, || {
        "the DMA from the memfd did not complete".into()
    })?;

    // A mapping of a user address: change_process refuses, naming map_file.
    let anon = HostMemory::new(4096, Backing::Anonymous).ctx("anon")?;
    // SAFETY: `anon` outlives the mapping, unmapped just below.
    unsafe { ioas.map_dma(anon.addr(), Some(0x100_0000), 4096, DmaPerm::ReadWrite) }
        .ctx("map_dma")?;
    let refused = iommufd.change_process();
    ioas.unmap_dma(0x100_0000, 4096).ctx("unmap")?;
    let e = refused.err().ok_or("change_process accepted a user-address mapping")?;
    rep.note(format!("with a user-address mapping: {e}"));
    ensure(e.errno() == Some(Errno::EINVAL) && e.to_string().contains("Ioas::map_file"), || {
        e.to_string()
    })?;

    // The new process.
    let fd_of = |f: &dyn AsRawFd| -> Result<i32, String> {
        // SAFETY: F_DUPFD to a new descriptor, inherited across exec (no CLOEXEC), closed below.
        let n = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_DUPFD, 0) };
        ensure(n >= 0, || "dup".into()).map(|_| n)
    };
    let ifd = fd_of(&*iommufd)?;
    let dfd = fd_of(&dev)?;
    let mfd = fd_of(&ram)?;
    let out = std::process::Command::new("/proc/self/exe")
        .args([CHILD_ARG, &ifd.to_string(), &dfd.to_string(), &mfd.to_string()])
        .output()
        .ctx("run the new process");
    for n in [ifd, dfd, mfd] {
        // SAFETY: the duplicates made above, closed once.
        unsafe { libc::close(n) };
    }
    let out = out?;
    let text = String::from_utf8_lossy(&out.stdout);
    for l in text.lines().filter_map(|l| l.strip_prefix("note: ")) {
        rep.note(l);
    }
    let line = text.lines().find_map(|l| l.strip_prefix("result: ")).unwrap_or("(none)");
    ensure(out.status.success(), || format!("new process exit {:?}: {line}", out.status.code()))?;
    // The old process sees the new one's DMA in the memfd too.
    let mut back = vec![0u8; MAX_DMA as usize];
    pread(&ram, BACK, &mut back)?;
    ensure(back == data, || "the memfd does not hold the DMA'd pattern".into())?;
    drop(drv);
    drop(dev);
    ioas.unmap_all().ctx("unmap all")?;
    Ok(())
}

/// The new process: takes the iommufd's pinned memory over, then has edu (whose buffer
/// holds the pattern) write it into guest RAM at `BACK` through the inherited device
/// descriptor. Prints `note:` lines and one `result:` line; exit 0 when all holds.
pub fn child(args: &[String]) -> i32 {
    let r = (|| -> Result<(), String> {
        let [i, d, m] = args else {
            return Err(format!("usage: {CHILD_ARG} IOMMUFD DEVICE MEMFD"));
        };
        let fd = |s: &str| -> Result<OwnedFd, String> {
            let n: i32 = s.parse().map_err(|_| format!("bad fd {s}"))?;
            // SAFETY: the old process passed this descriptor; nothing else owns it here.
            Ok(unsafe { OwnedFd::from_raw_fd(n) })
        };
        let (i, d, m) = (fd(i)?, fd(d)?, fd(m)?);
        let iommufd = Iommufd::from_fd(Arc::new(RealKernel::new()), i).ctx("iommufd")?;
        iommufd.change_process().ctx("change_process")?;
        println!("note: pid {} took the pinned guest memory over", std::process::id());
        // The device stays bound and attached: edu is driven through its BAR0 (region 0
        // at offset 0 of the device descriptor) with pread/pwrite.
        let bar = |off: u64, v: u64| -> Result<(), String> {
            let b = v.to_le_bytes();
            // SAFETY: pwrite from our buffer to the inherited device descriptor.
            let n = unsafe { libc::pwrite(d.as_raw_fd(), b.as_ptr().cast(), 8, off as i64) };
            ensure(n == 8, || {
                format!("BAR0 write at {off:#x}: {}", std::io::Error::last_os_error())
            })
        };
        bar(reg::DMA_SRC, EDU_BUFFER)?;
        bar(reg::DMA_DST, IOVA + BACK)?;
        bar(reg::DMA_COUNT, MAX_DMA)?;
        bar(reg::DMA_CMD, 1 | 2)?;
        let deadline = std::time::Instant::now() + T;
        loop {
            let mut b = [0u8; 8];
            // SAFETY: pread into our buffer from the inherited device descriptor.
            let n = unsafe {
                libc::pread(d.as_raw_fd(), b.as_mut_ptr().cast(), 8, reg::DMA_CMD as i64)
            };
            ensure(n == 8, || "BAR0 read".into())?;
            if u64::from_le_bytes(b) & 1 == 0 {
                break;
            }
            ensure(std::time::Instant::now() < deadline, || "the DMA did not complete".into())?;
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut back = vec![0u8; MAX_DMA as usize];
        pread(&m, BACK, &mut back)?;
        ensure(back == pattern(), || "the DMA did not land in the memfd".into())?;
        println!("note: edu's DMA landed in the memfd after the take-over");
        drop(iommufd);
        Ok(())
    })();
    crate::report::child_result(r)
}

fn memfd(len: u64) -> Result<OwnedFd, String> {
    // SAFETY: memfd_create takes a NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
    ensure(fd >= 0, || format!("memfd_create: {}", std::io::Error::last_os_error()))?;
    // SAFETY: a new descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ftruncate of our memfd.
    ensure(unsafe { libc::ftruncate(fd.as_raw_fd(), len as i64) } == 0, || "ftruncate".into())?;
    Ok(fd)
}

fn pwrite(f: &OwnedFd, at: u64, data: &[u8]) -> Outcome {
    // SAFETY: pwrite from our buffer.
    let n = unsafe { libc::pwrite(f.as_raw_fd(), data.as_ptr().cast(), data.len(), at as i64) };
    ensure(n == data.len() as isize, || "pwrite to the memfd".into())
}

fn pread(f: &OwnedFd, at: u64, buf: &mut [u8]) -> Outcome {
    // SAFETY: pread into our buffer.
    let n = unsafe { libc::pread(f.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), at as i64) };
    ensure(n == buf.len() as isize, || "pread from the memfd".into())
}

/// The running kernel's `major.minor`.
fn release() -> (u32, u32) {
    let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut n = r.trim().split(|c: char| !c.is_ascii_digit()).map(|s| s.parse().unwrap_or(0));
    (n.next().unwrap_or(0), n.next().unwrap_or(0))
}
