//! Process memory seen through the mock IOMMU: the checks `pin_user_pages` makes when a
//! range is mapped for DMA, and device-initiated DMA, translated through the device's
//! container (type1) or IOAS (iommufd) into the process's memory.

use super::group::group_of;
use super::state::{IoObj, Iommu};
use super::PAGE;
use crate::kernel::{Errno, KResult};
use crate::mock::HostState;
use crate::pci::PciAddress;

/// Cheap check that `[addr, addr+len)` is mapped memory of this process
/// (`pin_user_pages` fails with EFAULT otherwise).
fn check_mapped(addr: u64, len: u64) -> KResult<()> {
    if len == 0 {
        return Ok(());
    }
    let start = addr & !(PAGE - 1);
    let end = addr.checked_add(len).ok_or(Errno::EFAULT)?;
    let span = end.div_ceil(PAGE) * PAGE - start;
    // SAFETY: MADV_NORMAL changes no memory contents; it fails with ENOMEM when part of
    // the range is not mapped, which is all we ask of it.
    let r = unsafe { libc::madvise(start as *mut libc::c_void, span as usize, libc::MADV_NORMAL) };
    if r != 0 {
        Err(Errno::EFAULT)
    } else {
        Ok(())
    }
}

/// What `pin_user_pages` needs (mm/gup.c check_vma_flags): the range mapped, readable,
/// and writable when the device may write (FOLL_WRITE); EFAULT otherwise.
pub(super) fn check_pinnable(addr: u64, len: u64, write: bool) -> KResult<()> {
    check_mapped(addr, len)?;
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else { return Ok(()) };
    let end = addr.saturating_add(len);
    let mut cur = addr & !(PAGE - 1);
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else { continue };
        let Some((a, b)) = range.split_once('-') else { continue };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        if b <= cur || a >= end {
            continue;
        }
        let p = perms.as_bytes();
        if p.first() != Some(&b'r') || (write && p.get(1) != Some(&b'w')) {
            return Err(Errno::EFAULT);
        }
        cur = cur.max(b);
        if cur >= end {
            break;
        }
    }
    Ok(())
}

/// Pages a user range touches.
pub(super) fn pages_spanned(uptr: u64, len: u64) -> u64 {
    let start = uptr / PAGE;
    let end = (uptr.saturating_add(len)).div_ceil(PAGE);
    end - start
}

/// Translates a device DMA through its container or IOAS into process addresses.
fn translate(
    st: &HostState,
    addr: PciAddress,
    iova: u64,
    len: u64,
    write: bool,
) -> KResult<Vec<(u64, u64)>> {
    let k = &st.kernel;
    let end = iova.checked_add(len).ok_or(Errno::EFAULT)?;
    // Collect the mappings visible to the device: (iova, size, vaddr, read, write).
    let mut maps: Vec<(u64, u64, u64, bool, bool)> = Vec::new();
    if let Some((ictx, ioas, _)) = k.devs.get(&addr).and_then(|d| d.attached) {
        if let Some(IoObj::Ioas(io)) = k.ictxs.get(&ictx).and_then(|c| c.objs.get(&ioas)) {
            maps.extend(io.areas.iter().map(|(i, a)| (*i, a.len, a.uptr, a.read, a.write)));
        }
    } else if let Some(g) = group_of(st, addr) {
        let cid = k.groups.get(&g).and_then(|g| g.container).ok_or(Errno::EFAULT)?;
        if let Some(Iommu::Type1(t)) = k.containers.get(&cid).and_then(|c| c.iommu.as_ref()) {
            maps.extend(t.dmas.iter().map(|(i, d)| (*i, d.size, d.vaddr, d.read, d.write)));
        }
    }
    let mut out = Vec::new();
    let mut cur = iova;
    while cur < end {
        let m = maps.iter().find(|m| m.0 <= cur && cur - m.0 < m.1).ok_or(Errno::EFAULT)?;
        if (write && !m.4) || (!write && !m.3) {
            return Err(Errno::EFAULT);
        }
        let n = (m.1 - (cur - m.0)).min(end - cur);
        out.push((m.2 + (cur - m.0), n));
        cur += n;
    }
    Ok(out)
}

/// A device reads guest memory by DMA (see `MockHost::dma_read`).
pub(super) fn dma_read(
    st: &HostState,
    address: PciAddress,
    iova: u64,
    buf: &mut [u8],
) -> KResult<()> {
    for_each_chunk(st, address, iova, buf.len(), false, |vaddr, part| {
        let dst = &mut buf[part];
        // SAFETY: the range was mapped by the process for DMA (checked at map time and
        // again just now with madvise); we copy out of it into our own buffer.
        unsafe { std::ptr::copy_nonoverlapping(vaddr as *const u8, dst.as_mut_ptr(), dst.len()) };
    })
}

/// A device writes guest memory by DMA (see `MockHost::dma_write`).
pub(super) fn dma_write(st: &HostState, address: PciAddress, iova: u64, buf: &[u8]) -> KResult<()> {
    for_each_chunk(st, address, iova, buf.len(), true, |vaddr, part| {
        let src = &buf[part];
        // SAFETY: the process mapped this range writable for DMA and it is still mapped
        // (madvise above); a device writing it is what DMA means.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), vaddr as *mut u8, src.len()) };
    })
}

/// Walks a device access of `len` bytes at `iova` in the pieces the IOMMU translates it
/// to: checks each piece is still mapped, then hands `f` its process address and its
/// range within the access. An IOMMU fault or unmapped memory stops the walk (EFAULT).
fn for_each_chunk(
    st: &HostState,
    address: PciAddress,
    iova: u64,
    len: usize,
    write: bool,
    mut f: impl FnMut(u64, std::ops::Range<usize>),
) -> KResult<()> {
    let chunks = translate(st, address, iova, len as u64, write)?;
    let mut done = 0usize;
    for (vaddr, n) in chunks {
        check_mapped(vaddr, n)?;
        f(vaddr, done..done + n as usize);
        done += n as usize;
    }
    Ok(())
}
