//! A device's regions (drivers/vfio/pci/vfio_pci_core.c, vfio_pci_rdwr.c): region info
//! with its capability chain, pread/pwrite of BARs (memfd-backed, or trapped to a device
//! model), the option ROM, VGA and device-specific regions, and `mmap` of BARs.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;

use vfio_bindings::bindings::vfio::{
    VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, VFIO_REGION_INFO_CAP_SPARSE_MMAP,
    VFIO_REGION_INFO_CAP_TYPE, VFIO_REGION_INFO_FLAG_CAPS, VFIO_REGION_INFO_FLAG_MMAP,
    VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
};

use super::config::{self, cfg_size, find_cap};
use super::device::sim;
use super::fds::device_fd;
use super::feature::resume;
use super::info::{argsz, finish_info, pairs, Caps};
use super::le::{rd16, rd32, wr32, wr64};
use super::model::{model_bar, with_model};
use super::state::KernelState;
use super::{CONFIG_INDEX, NUM_REGIONS, OFFSET_SHIFT, PAGE, ROM_INDEX, VGA_INDEX};
use crate::kernel::{Errno, KResult, KernelFd};
use crate::mock::{vfio_device_in, HostState, SimDevice};
use crate::pci::config::BarKind;
use crate::pci::PciAddress;

pub(super) fn get_info(st: &HostState, device: &KernelFd, buf: &mut [u8]) -> KResult<()> {
    let d = device_fd(&st.kernel, device)?;
    let dev = sim(st, d.addr)?;
    let cfg = &st.kernel.config;
    // pci_core vfio_pci_ioctl_get_region_info: minsz = offsetofend(offset).
    let argsz = argsz(buf, 32)?;
    let index = rd32(buf, 8);
    let mut caps = Caps::default();
    let (size, mut flags) = match index {
        CONFIG_INDEX => (cfg_size(dev), VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE),
        0..=5 => {
            let trapped = model_bar(&st.kernel, d.addr) == Some(index);
            bar_info(cfg.msix_mappable, dev, index, trapped, &mut caps)
        }
        ROM_INDEX => {
            // The ROM BAR size, readable only when pci_map_rom finds a valid image.
            let s = rom_bar_size(dev);
            if s > 0 && rom_image_len(dev) > 0 {
                (s, VFIO_REGION_INFO_FLAG_READ)
            } else {
                (0, 0)
            }
        }
        VGA_INDEX => {
            // Only VGA-class devices with CONFIG_VFIO_PCI_VGA have it; else EINVAL.
            if !(cfg.vga && dev.spec.class >> 8 == 0x0300) {
                return Err(Errno::EINVAL);
            }
            (0xc0000, VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE)
        }
        i => {
            let r = dev.spec.extra_regions.get((i - NUM_REGIONS) as usize).ok_or(Errno::EINVAL)?;
            let mut b = vec![0u8; 8];
            wr32(&mut b, 0, r.region_type);
            wr32(&mut b, 4, r.subtype);
            caps.add(VFIO_REGION_INFO_CAP_TYPE as u16, 1, &b);
            let mut f = VFIO_REGION_INFO_FLAG_READ;
            if r.writable {
                f |= VFIO_REGION_INFO_FLAG_WRITE;
            }
            (r.size, f)
        }
    };
    if !caps.is_empty() {
        flags |= VFIO_REGION_INFO_FLAG_CAPS;
    }
    let mut info = [0u8; 32];
    wr32(&mut info, 0, argsz);
    wr32(&mut info, 4, flags);
    wr32(&mut info, 8, index);
    wr64(&mut info, 16, size);
    wr64(&mut info, 24, u64::from(index) << OFFSET_SHIFT);
    finish_info(buf, &mut info, argsz, &caps, 12)
}

/// Size and flags of BAR region `index`: mmap-able unless it is I/O, not mmap-able in
/// the spec, or `trapped` by a device model. The BAR holding the MSI-X table says how
/// it may be mapped (a capability in `caps`).
fn bar_info(
    msix_mappable: bool,
    dev: &SimDevice,
    index: u32,
    trapped: bool,
    caps: &mut Caps,
) -> (u64, u32) {
    let size = bar_len(dev, index);
    if size == 0 {
        return (0, 0);
    }
    let bar = dev.spec.bars[index as usize];
    let mut f = VFIO_REGION_INFO_FLAG_READ;
    if !bar.is_some_and(|b| b.read_only) {
        f |= VFIO_REGION_INFO_FLAG_WRITE;
    }
    if bar.is_some_and(|b| b.mmap && b.kind != BarKind::Io) && !trapped {
        f |= VFIO_REGION_INFO_FLAG_MMAP;
        if let Some((_, toff, tsize)) = msix_table(dev).filter(|t| t.0 == index) {
            if msix_mappable {
                // msix_mappable_cap (kernel 4.16+).
                caps.add(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE as u16, 1, &[]);
            } else {
                // msix_sparse_mmap_cap (before 4.16): areas around the table pages.
                let mut areas = Vec::new();
                let lo = toff & !(PAGE - 1);
                let hi = (toff + tsize).div_ceil(PAGE) * PAGE;
                if lo != 0 {
                    areas.push((0, lo));
                }
                if hi < size {
                    areas.push((hi, size - hi));
                }
                caps.add(VFIO_REGION_INFO_CAP_SPARSE_MMAP as u16, 1, &pairs(&areas));
            }
        }
    }
    (size, f)
}

/// pread/pwrite of a device fd at `offset` (the region index in the high bits).
pub(super) fn access(
    st: &mut HostState,
    device: &KernelFd,
    offset: u64,
    rw: Rw<'_>,
) -> KResult<usize> {
    let d = device_fd(&st.kernel, device)?;
    // vfio_pci_core_read/write: a zero-length access returns 0 before any check.
    let empty = match &rw {
        Rw::Read(buf) => buf.is_empty(),
        Rw::Write(buf) => buf.is_empty(),
    };
    if empty {
        return Ok(0);
    }
    // vfio_pci_rw: pm_runtime_resume_and_get.
    resume(st, d.addr);
    region_rw(st, d.addr, offset, rw)
}

pub(super) fn mmap(
    st: &mut HostState,
    device: &KernelFd,
    offset: u64,
    len: usize,
    prot: i32,
) -> KResult<NonNull<u8>> {
    let d = device_fd(&st.kernel, device)?;
    // mmap(2): zero length or an unaligned offset.
    if len == 0 || offset % PAGE != 0 {
        return Err(Errno::EINVAL);
    }
    let index = (offset >> OFFSET_SHIFT) as u32;
    let start = offset & ((1 << OFFSET_SHIFT) - 1);
    let HostState { devices, mdev_devices, kernel: k, .. } = st;
    let dev = vfio_device_in(devices, mdev_devices, d.addr).ok_or(Errno::ENODEV)?;
    let dev = &*dev;
    // pci_core vfio_pci_core_mmap: only BARs with mmap support, inside the BAR.
    if index >= NUM_REGIONS + dev.spec.extra_regions.len() as u32 || index >= ROM_INDEX {
        return Err(Errno::EINVAL);
    }
    let trapped = model_bar(k, d.addr) == Some(index);
    let bar = dev.spec.bars[index as usize].filter(|b| b.mmap && b.kind != BarKind::Io && !trapped);
    let Some(bar) = bar else { return Err(Errno::EINVAL) };
    // mmap(2) of a file opened for reading only, as a region without WRITE is.
    if bar.read_only && prot & libc::PROT_WRITE != 0 {
        return Err(Errno::EACCES);
    }
    let phys = bar.size.div_ceil(PAGE) * PAGE;
    if start.checked_add(len as u64).is_none_or(|e| e > phys) {
        return Err(Errno::EINVAL);
    }
    // Before 4.16 a mapping may not cover the MSI-X table.
    if !k.config.msix_mappable {
        if let Some((_, toff, tsize)) = msix_table(dev).filter(|t| t.0 == index) {
            if start < toff + tsize && toff < start + len as u64 {
                return Err(Errno::EINVAL);
            }
        }
    }
    let memfd = bar_fd(k, dev, index)?;
    // SAFETY: a fresh shared mapping of our own memfd at a kernel-chosen address; it
    // aliases no Rust object and lives until munmap through this kernel.
    let p = unsafe {
        libc::mmap64(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, memfd, start as i64)
    };
    if p == libc::MAP_FAILED {
        return Err(Errno::last());
    }
    k.mmaps.insert(p as usize, (d.addr, len));
    NonNull::new(p.cast()).ok_or(Errno::EFAULT)
}

/// `munmap` of a BAR mapping made by [`mmap`].
///
/// # Safety
///
/// `addr` and `len` are exactly a mapping from [`mmap`] that nothing uses any more
/// (the contract of `VfioKernel::munmap`).
pub(super) unsafe fn munmap(k: &mut KernelState, addr: NonNull<u8>, len: usize) -> KResult<()> {
    let key = addr.as_ptr() as usize;
    match k.mmaps.get(&key) {
        Some((_, l)) if *l == len => {}
        _ => return Err(Errno::EINVAL),
    }
    // SAFETY: the caller guarantees this is exactly a mapping from our mmap that
    // nothing uses any more (the trait's contract); we checked it is one of ours.
    let r = unsafe { libc::munmap(addr.as_ptr().cast(), len) };
    if r != 0 {
        return Err(Errno::last());
    }
    k.mmaps.remove(&key);
    Ok(())
}

/// The direction and buffer of a region access.
pub(super) enum Rw<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
}

/// pread/pwrite of a region (pci_core vfio_pci_rw).
fn region_rw(st: &mut HostState, addr: PciAddress, offset: u64, rw: Rw<'_>) -> KResult<usize> {
    let index = (offset >> OFFSET_SHIFT) as u32;
    let pos = offset & ((1 << OFFSET_SHIFT) - 1);
    if model_bar(&st.kernel, addr) == Some(index) {
        return model_rw(st, addr, index, pos, rw);
    }
    let HostState { devices, mdev_devices, kernel: k, .. } = st;
    let dev = vfio_device_in(devices, mdev_devices, addr).ok_or(Errno::ENODEV)?;
    let nregions = NUM_REGIONS + dev.spec.extra_regions.len() as u32;
    if index >= nregions {
        return Err(Errno::EINVAL);
    }
    match index {
        CONFIG_INDEX => config::access(k, dev, addr, pos, rw),
        ROM_INDEX => rom_read(dev, pos, rw),
        VGA_INDEX => vga_rw(k.config.vga, dev, rw),
        0..=5 => bar_rw(k, dev, index, pos, rw),
        i => extra_rw(k, dev, addr, i, pos, rw),
    }
}

/// pci_rdwr vfio_pci_bar_rw's checks: `pos` inside the BAR (EINVAL), and memory decode
/// on for a memory BAR (EIO). Returns the BAR's size.
fn bar_access(dev: &SimDevice, index: u32, pos: u64) -> KResult<u64> {
    let size = bar_len(dev, index);
    if size == 0 || pos >= size {
        return Err(Errno::EINVAL);
    }
    let io = dev.spec.bars[index as usize].is_some_and(|b| b.kind == BarKind::Io);
    if !io && dev.config[4] & 2 == 0 {
        return Err(Errno::EIO);
    }
    Ok(size)
}

/// A model-backed BAR: the same bounds and memory-decode rules, then the model.
fn model_rw(
    st: &mut HostState,
    addr: PciAddress,
    index: u32,
    pos: u64,
    rw: Rw<'_>,
) -> KResult<usize> {
    let dev = st.vfio_device(addr).ok_or(Errno::ENODEV)?;
    let room = (bar_access(dev, index, pos)? - pos) as usize;
    Ok(match rw {
        Rw::Read(buf) => {
            let n = buf.len().min(room);
            with_model(st, addr, |m, ctx| m.read(ctx, pos, &mut buf[..n]));
            n
        }
        Rw::Write(buf) => {
            let n = buf.len().min(room);
            with_model(st, addr, |m, ctx| m.write(ctx, pos, &buf[..n]));
            n
        }
    })
}

/// A memfd-backed BAR. The MSI-X table is excluded: reads give 0xff, writes are dropped.
fn bar_rw(
    k: &mut KernelState,
    dev: &SimDevice,
    index: u32,
    pos: u64,
    rw: Rw<'_>,
) -> KResult<usize> {
    let size = bar_access(dev, index, pos)?;
    // A region without WRITE refuses pwrite (as a variant driver's read-only region).
    let read_only = dev.spec.bars[index as usize].is_some_and(|b| b.read_only);
    if read_only && matches!(rw, Rw::Write(_)) {
        return Err(Errno::EINVAL);
    }
    let fd = bar_fd(k, dev, index)?;
    let excl = msix_table(dev).filter(|t| t.0 == index).map(|t| (t.1, t.1 + t.2));
    let room = (size - pos) as usize;
    match rw {
        Rw::Read(buf) => {
            let n = buf.len().min(room);
            // SAFETY: reads at most `n` bytes into `buf` from our memfd.
            let r = unsafe { libc::pread64(fd, buf.as_mut_ptr().cast(), n, pos as i64) };
            if r < 0 {
                return Err(Errno::last());
            }
            let r = r as usize;
            buf[r..n].fill(0);
            if let Some((xs, xe)) = excl {
                for (i, b) in buf[..n].iter_mut().enumerate() {
                    let o = pos + i as u64;
                    if o >= xs && o < xe {
                        *b = 0xff;
                    }
                }
            }
            Ok(n)
        }
        Rw::Write(buf) => {
            let n = buf.len().min(room);
            let mut i = 0;
            while i < n {
                let o = pos + i as u64;
                let in_excl = excl.is_some_and(|(xs, xe)| o >= xs && o < xe);
                let mut j = i + 1;
                while j < n
                    && excl.is_some_and(|(xs, xe)| {
                        let p = pos + j as u64;
                        (p >= xs && p < xe) == in_excl
                    })
                {
                    j += 1;
                }
                if excl.is_none() {
                    j = n;
                }
                if !in_excl {
                    // SAFETY: writes `j - i` bytes from `buf` to our memfd.
                    let r =
                        unsafe { libc::pwrite64(fd, buf[i..j].as_ptr().cast(), j - i, o as i64) };
                    if r < 0 {
                        return Err(Errno::last());
                    }
                }
                i = j;
            }
            Ok(n)
        }
    }
}

/// The option ROM (vfio_pci_rw): read-only; bytes past the images read as 0xff.
fn rom_read(dev: &SimDevice, pos: u64, rw: Rw<'_>) -> KResult<usize> {
    let Rw::Read(buf) = rw else { return Err(Errno::EINVAL) };
    let size = rom_bar_size(dev);
    if pos >= size {
        return Err(Errno::EINVAL);
    }
    // pci_map_rom fails on an invalid image (ENOMEM from vfio_pci_bar_rw); bytes
    // past the images (pci_get_rom_size) read as 0xff.
    let valid = rom_image_len(dev);
    if valid == 0 {
        return Err(Errno::ENOMEM);
    }
    let n = buf.len().min((size - pos) as usize);
    let rom = dev.spec.rom.as_deref().unwrap_or(&[]);
    for (i, b) in buf[..n].iter_mut().enumerate() {
        let o = pos as usize + i;
        *b = if o < valid { rom.get(o).copied().unwrap_or(0xff) } else { 0xff };
    }
    Ok(n)
}

/// The VGA region (VGA-class devices with CONFIG_VFIO_PCI_VGA): the legacy ranges, where
/// reads float high and writes are dropped.
fn vga_rw(vga: bool, dev: &SimDevice, rw: Rw<'_>) -> KResult<usize> {
    if !(vga && dev.spec.class >> 8 == 0x0300) {
        return Err(Errno::EINVAL);
    }
    match rw {
        Rw::Read(buf) => {
            buf.fill(0xff);
            Ok(buf.len())
        }
        Rw::Write(buf) => Ok(buf.len()),
    }
}

/// A device-specific region `i` (its data kept per device, read-only unless writable).
fn extra_rw(
    k: &mut KernelState,
    dev: &SimDevice,
    addr: PciAddress,
    i: u32,
    pos: u64,
    rw: Rw<'_>,
) -> KResult<usize> {
    let r = dev.spec.extra_regions[(i - NUM_REGIONS) as usize].clone();
    let data = k.extra.entry((addr, i)).or_insert_with(|| {
        let mut v = r.data.clone();
        v.resize(r.size as usize, 0);
        v
    });
    if pos >= r.size {
        return Err(Errno::EINVAL);
    }
    let p = pos as usize;
    match rw {
        Rw::Read(buf) => {
            let n = buf.len().min(data.len() - p);
            buf[..n].copy_from_slice(&data[p..p + n]);
            Ok(n)
        }
        Rw::Write(buf) => {
            if !r.writable {
                return Err(Errno::EINVAL);
            }
            let n = buf.len().min(data.len() - p);
            data[p..p + n].copy_from_slice(&buf[..n]);
            Ok(n)
        }
    }
}

/// The memfd backing a BAR (created on first use; device memory outlives opens).
fn bar_fd(k: &mut KernelState, dev: &SimDevice, index: u32) -> KResult<RawFd> {
    let key = (dev.spec.address, index);
    if let Some(fd) = k.bars.get(&key) {
        return Ok(fd.as_raw_fd());
    }
    let size = bar_len(dev, index).div_ceil(PAGE) * PAGE;
    let name = c"vfio-mock-bar";
    // SAFETY: memfd_create with a valid C string; the result is checked.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `fd` is a fresh descriptor that we now own.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ftruncate on our own memfd.
    if unsafe { libc::ftruncate(fd, size as i64) } != 0 {
        return Err(Errno::last());
    }
    k.bars.insert(key, owned);
    Ok(fd)
}

/// Size of a BAR slot as the PCI core sees it (`pci_resource_len`); 0 for the upper
/// half of a 64-bit BAR and for absent BARs.
pub(super) fn bar_len(d: &SimDevice, i: u32) -> u64 {
    if d.spec.bridge && i >= 2 {
        return 0;
    }
    d.spec.bars.get(i as usize).copied().flatten().map_or(0, |b| b.size)
}

/// The ROM BAR size: the image rounded up to a power of two, at least 2 KiB.
pub(super) fn rom_bar_size(d: &SimDevice) -> u64 {
    d.spec.rom.as_ref().map_or(0, |r| (r.len() as u64).max(2048).next_power_of_two())
}

/// drivers/pci/rom.c pci_get_rom_size: the bytes covered by valid images (0x55AA
/// signature, "PCIR" data structure; image length at PCIR+16 in 512-byte units; the
/// last-image flag at PCIR+21 bit 7), capped at the ROM BAR size.
pub(super) fn rom_image_len(d: &SimDevice) -> usize {
    let Some(rom) = d.spec.rom.as_deref() else { return 0 };
    let size = rom_bar_size(d) as usize;
    let mut image = 0usize;
    loop {
        if rom.get(image..image + 2) != Some(&[0x55, 0xaa][..]) {
            break;
        }
        let Some(p) = rom.get(image + 24..image + 26) else { break };
        let pds = image + u16::from_le_bytes([p[0], p[1]]) as usize;
        if rom.get(pds..pds + 4) != Some(&b"PCIR"[..]) {
            break;
        }
        let last = rom.get(pds + 21).is_some_and(|b| b & 0x80 != 0);
        let length = rom.get(pds + 16..pds + 18).map_or(0, |l| u16::from_le_bytes([l[0], l[1]]));
        image += usize::from(length) * 512;
        if image >= size || length == 0 || last {
            break;
        }
    }
    image.min(size)
}

/// The MSI-X table location: (bar, offset, size in bytes).
pub(super) fn msix_table(d: &SimDevice) -> Option<(u32, u64, u64)> {
    let p = find_cap(&d.config, 0x11)?;
    let flags = rd16(&d.config, p + 2);
    let table = rd32(&d.config, p + 4);
    let n = u64::from(flags & 0x7ff) + 1;
    Some((table & 7, u64::from(table & !7), n * 16))
}
