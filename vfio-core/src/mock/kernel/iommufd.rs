//! iommufd (drivers/iommu/iommufd/): contexts opened on `/dev/iommu`, IOASes with their
//! mappings (`IOMMU_IOAS_ALLOC`, `MAP`, `MAP_FILE`, `UNMAP`, `IOVA_RANGES`), live update
//! (`IOMMU_IOAS_CHANGE_PROCESS`), IOVA allocation, object
//! destruction, and the auto-domain page tables devices attach to, which pin the IOAS's
//! pages against `RLIMIT_MEMLOCK`.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::dma::{check_pinnable, pages_spanned};
use super::fds::{ictx_of, new_fd};
use super::le::{rd32, wr32, wr64};
use super::state::{Area, FdObj, FileArea, Ictx, IoObj, Ioas, KernelState};
use super::{MockKernelConfig, PAGE};
use crate::kernel::{
    iommu_ioas_alloc, iommu_ioas_change_process, iommu_ioas_map, iommu_ioas_map_file,
    iommu_ioas_unmap, Errno, KResult, KernelFd,
};
use crate::pci::PciAddress;

/// iommufd.h `IOMMU_IOAS_MAP_*` flags.
const IOAS_MAP_FIXED_IOVA: u32 = 1;
const IOAS_MAP_WRITEABLE: u32 = 2;
const IOAS_MAP_READABLE: u32 = 4;

pub(super) fn open(k: &mut KernelState) -> KResult<KernelFd> {
    if !k.config.iommufd {
        return Err(Errno::ENOENT);
    }
    let id = k.next_ictx;
    k.next_ictx += 1;
    k.ictxs.insert(id, Ictx { fd_open: true, ..Default::default() });
    Ok(new_fd(k, FdObj::Iommufd(id)))
}

pub(super) fn ioas_alloc(
    k: &mut KernelState,
    iommufd: &KernelFd,
    alloc: &mut iommu_ioas_alloc,
) -> KResult<()> {
    let id = ictx_of(k, iommufd)?;
    // iommufd ioas.c iommufd_ioas_alloc_ioctl: no flags.
    if alloc.flags != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    let c = k.ictxs.get_mut(&id).ok_or(Errno::EBADF)?;
    let ioas = alloc_id(&c.objs);
    c.objs.insert(ioas, IoObj::Ioas(Ioas::default()));
    alloc.out_ioas_id = ioas;
    Ok(())
}

pub(super) fn ioas_map(
    k: &mut KernelState,
    iommufd: &KernelFd,
    map: &mut iommu_ioas_map,
) -> KResult<()> {
    let id = ictx_of(k, iommufd)?;
    // ioas.c iommufd_ioas_map.
    if map.__reserved != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    check_map_args(map.flags, map.iova, map.length)?;
    ioas_mut(&mut k.ictxs, id, map.ioas_id)?;
    check_length(map.length)?;
    // io_pagetable.c iopt_alloc_user_pages.
    map.user_va.checked_add(map.length).ok_or(Errno::EOVERFLOW)?;
    let area = Area {
        len: map.length,
        uptr: map.user_va,
        read: map.flags & IOAS_MAP_READABLE != 0,
        write: map.flags & IOAS_MAP_WRITEABLE != 0,
        pinned: 0,
        file: None,
    };
    map.iova = insert_area(k, id, map.ioas_id, map.flags, map.iova, area)?;
    Ok(())
}

/// ioas.c iommufd_ioas_map_file (6.13+; older kernels have no such command: ENOTTY).
/// The mock maps the file shared to reach its pages; a file it cannot map is refused
/// where the kernel's pinning refuses it (memfd_pin_folios: EINVAL).
pub(super) fn ioas_map_file(
    k: &mut KernelState,
    iommufd: &KernelFd,
    map: &mut iommu_ioas_map_file,
) -> KResult<()> {
    let id = ictx_of(k, iommufd)?;
    if !k.config.ioas_map_file {
        return Err(Errno::ENOTTY);
    }
    check_map_args(map.flags, map.iova, map.length)?;
    ioas_mut(&mut k.ictxs, id, map.ioas_id)?;
    check_length(map.length)?;
    // io_pagetable.c iopt_map_file_pages: the file's range must not wrap; fget: EBADF.
    map.start.checked_add(map.length - 1).ok_or(Errno::EOVERFLOW)?;
    let file = dup_file(map.fd)?;
    let write = map.flags & IOAS_MAP_WRITEABLE != 0;
    let (first, offset) = (map.start - map.start % PAGE, map.start % PAGE);
    let file = FileArea {
        file,
        start: map.start,
        map: map_shared(map.fd, first, offset + map.length, write),
    };
    let area = Area {
        len: map.length,
        uptr: file.map.map_or(0, |(addr, _)| addr + offset),
        read: map.flags & IOAS_MAP_READABLE != 0,
        write,
        pinned: 0,
        file: Some(file),
    };
    map.iova = insert_area(k, id, map.ioas_id, map.flags, map.iova, area)?;
    Ok(())
}

/// ioas.c iommufd_ioas_change_process (6.13+, ENOTTY before): every area of every IOAS
/// of the context must come from a file (EINVAL otherwise, nothing changed). The mock
/// is one process, so the pinned pages are charged to the caller already
/// (need_charge_update is false for the same mm and user) and nothing moves.
pub(super) fn change_process(
    k: &KernelState,
    iommufd: &KernelFd,
    change: &mut iommu_ioas_change_process,
) -> KResult<()> {
    let id = ictx_of(k, iommufd)?;
    if !k.config.ioas_map_file {
        return Err(Errno::ENOTTY);
    }
    if change.__reserved != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    let c = k.ictxs.get(&id).ok_or(Errno::EBADF)?;
    let user_area = c.objs.values().any(|o| match o {
        IoObj::Ioas(io) => io.areas.values().any(|a| a.file.is_none()),
        _ => false,
    });
    if user_area {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// The checks `IOMMU_IOAS_MAP` and `IOMMU_IOAS_MAP_FILE` share (ioas.c): known flags,
/// no IOVA or length of ULONG_MAX, readable or writeable.
fn check_map_args(flags: u32, iova: u64, length: u64) -> KResult<()> {
    let known = IOAS_MAP_FIXED_IOVA | IOAS_MAP_WRITEABLE | IOAS_MAP_READABLE;
    if flags & !known != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    if iova == u64::MAX || length == u64::MAX {
        return Err(Errno::EOVERFLOW);
    }
    if flags & (IOAS_MAP_WRITEABLE | IOAS_MAP_READABLE) == 0 {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// pages.c iopt_alloc_pages: a length that is not 0 and leaves a page of room.
fn check_length(length: u64) -> KResult<()> {
    if length == 0 || length > u64::MAX - PAGE {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// io_pagetable.c iopt_map_common: places the area (at `iova` with
/// `IOMMU_IOAS_MAP_FIXED_IOVA`, else where iopt_alloc_iova finds room) and, with a
/// domain attached, pins its pages now (EFAULT / EINVAL / ENOMEM). Returns the IOVA.
fn insert_area(
    k: &mut KernelState,
    ictx: u32,
    ioas_id: u32,
    flags: u32,
    iova: u64,
    mut area: Area,
) -> KResult<u64> {
    let cfg = k.config.clone();
    let io = ioas_mut(&mut k.ictxs, ictx, ioas_id)?;
    // iopt_alloc_area_pages: length aligned to the IOVA alignment; the IOVA follows the
    // user address, or the file offset for a file area.
    let (usable, align) = io.geometry(&cfg);
    if area.len % align != 0 {
        return Err(Errno::EINVAL);
    }
    let basis = area.basis();
    let iova = if flags & IOAS_MAP_FIXED_IOVA != 0 {
        check_iova(io, &usable, iova, area.len, align)?
    } else {
        alloc_iova(io, &usable, basis, area.len, align)?
    };
    // iopt_insert_area: the page offset must respect the alignment.
    if (basis % PAGE) % align != 0 {
        return Err(Errno::EINVAL);
    }
    if !io.hwpts.is_empty() {
        area.check_pinnable()?;
        area.pinned = pages_spanned(basis, area.len);
        cfg.check_memlock(k.locked_user, area.pinned)?;
    }
    k.locked_user += area.pinned;
    io.areas.insert(iova, area);
    Ok(iova)
}

/// A descriptor of the file the caller named (the kernel's `fget`): EBADF if none.
fn dup_file(fd: i32) -> KResult<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC creates a new descriptor, owned below; it fails with EBADF
    // when `fd` is not open.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if n < 0 {
        return Err(Errno::EBADF);
    }
    // SAFETY: `n` is a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// The mock's shared mapping of `len` bytes of a file from page-aligned `first`
/// (writable when the device may write); `None` when the file cannot be mapped so.
fn map_shared(fd: i32, first: u64, len: u64, write: bool) -> Option<(u64, usize)> {
    let len = usize::try_from(len.div_ceil(PAGE) * PAGE).ok()?;
    let prot = libc::PROT_READ | if write { libc::PROT_WRITE } else { 0 };
    // SAFETY: a new shared mapping at an address the kernel picks; nothing in the
    // process is aliased by it. It is unmapped when its area goes (FileArea's Drop).
    let p = unsafe {
        libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, first as libc::off_t)
    };
    (p != libc::MAP_FAILED).then_some((p as u64, len))
}

impl Area {
    /// What the IOVA alignment follows: the user address, or the file offset.
    fn basis(&self) -> u64 {
        self.file.as_ref().map_or(self.uptr, |f| f.start)
    }

    /// What pinning the area's pages needs: for a user area, pin_user_pages's checks
    /// (EFAULT); for a file area, memfd_pin_folios's (mm/gup.c): a shmem or hugetlbfs
    /// file whose size covers the range (EINVAL otherwise).
    fn check_pinnable(&self) -> KResult<()> {
        let Some(f) = &self.file else { return check_pinnable(self.uptr, self.len, self.write) };
        // SAFETY: fstatfs and fstat write only into the structs given.
        let (mut sfs, mut st) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        // SAFETY: as above, on a descriptor the area owns.
        let ok = unsafe {
            libc::fstatfs(f.file.as_raw_fd(), &mut sfs) == 0
                && libc::fstat(f.file.as_raw_fd(), &mut st) == 0
        };
        let fs: libc::statfs = sfs;
        let st: libc::stat = st;
        let shmem = [TMPFS_MAGIC, HUGETLBFS_MAGIC].contains(&(fs.f_type as u32));
        if !ok || !shmem || f.map.is_none() || f.start + (self.len - 1) >= st.st_size as u64 {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }
}

/// linux/magic.h: the filesystems memfd_pin_folios pins from.
const TMPFS_MAGIC: u32 = 0x0102_1994;
const HUGETLBFS_MAGIC: u32 = 0x9584_58f6;

/// io_pagetable.c iopt_check_iova: a fixed IOVA must be aligned, not wrap, lie in a
/// usable range and overlap no area.
fn check_iova(
    io: &Ioas,
    usable: &[(u64, u64)],
    iova: u64,
    length: u64,
    align: u64,
) -> KResult<u64> {
    if iova % align != 0 {
        return Err(Errno::EINVAL);
    }
    let last = iova.checked_add(length - 1).ok_or(Errno::EOVERFLOW)?;
    if !usable.iter().any(|(s, e)| iova >= *s && last <= *e) {
        return Err(Errno::EINVAL);
    }
    if io.areas.range(..=last).next_back().is_some_and(|(i, a)| i + (a.len - 1) >= iova) {
        return Err(Errno::EEXIST);
    }
    Ok(iova)
}

pub(super) fn ioas_unmap(
    k: &mut KernelState,
    iommufd: &KernelFd,
    unmap: &mut iommu_ioas_unmap,
) -> KResult<()> {
    let id = ictx_of(k, iommufd)?;
    let io = ioas_mut(&mut k.ictxs, id, unmap.ioas_id)?;
    // ioas.c iommufd_ioas_unmap: iova 0 + length u64::MAX unmaps all.
    let unmap_all = unmap.iova == 0 && unmap.length == u64::MAX;
    let (start, last) = if unmap_all {
        (0, u64::MAX)
    } else {
        if unmap.iova == u64::MAX || unmap.length == u64::MAX {
            return Err(Errno::EOVERFLOW);
        }
        // iopt_unmap_iova.
        if unmap.length == 0 {
            return Err(Errno::EINVAL);
        }
        (unmap.iova, unmap.iova.checked_add(unmap.length - 1).ok_or(Errno::EOVERFLOW)?)
    };
    // iopt_unmap_iova_range: areas are removed in order; an area only partly inside
    // the range stops the walk with ENOENT (areas before it stay unmapped). A range
    // with nothing mapped is ENOENT too, except for unmap-all (iopt_unmap_all turns
    // that ENOENT into success). Checked in the VM lab on 6.12.
    let mut unmapped = 0u64;
    let mut unpinned = 0u64;
    let mut result = Ok(());
    loop {
        let first = io
            .areas
            .range(..=last)
            .find(|(i, a)| *i + (a.len - 1) >= start)
            .map(|(i, a)| (*i, a.len));
        let Some((i, len)) = first else { break };
        if i < start || i + (len - 1) > last {
            result = Err(Errno::ENOENT);
            break;
        }
        if let Some(a) = io.areas.remove(&i) {
            unmapped += a.len;
            unpinned += a.pinned;
        }
    }
    k.locked_user = k.locked_user.saturating_sub(unpinned);
    if unmapped == 0 && result.is_ok() && !unmap_all {
        result = Err(Errno::ENOENT);
    }
    unmap.length = unmapped;
    result
}

pub(super) fn ioas_iova_ranges(k: &KernelState, iommufd: &KernelFd, buf: &mut [u8]) -> KResult<()> {
    let id = ictx_of(k, iommufd)?;
    if buf.len() < 32 {
        return Err(Errno::EINVAL);
    }
    // ioas.c iommufd_ioas_iova_ranges.
    if rd32(buf, 12) != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    let ioas_id = rd32(buf, 4);
    let c = k.ictxs.get(&id).ok_or(Errno::EBADF)?;
    let Some(IoObj::Ioas(io)) = c.objs.get(&ioas_id) else { return Err(Errno::ENOENT) };
    let (ranges, align) = io.geometry(&k.config);
    let room = ((buf.len() - 32) / 16) as u32;
    let max = rd32(buf, 8).min(room);
    for (i, (s, e)) in ranges.iter().enumerate().take(max as usize) {
        wr64(buf, 32 + 16 * i, *s);
        wr64(buf, 40 + 16 * i, *e);
    }
    wr32(buf, 8, ranges.len() as u32);
    wr64(buf, 24, align);
    if ranges.len() as u32 > max {
        return Err(Errno::EMSGSIZE);
    }
    Ok(())
}

pub(super) fn destroy(k: &mut KernelState, iommufd: &KernelFd, id: u32) -> KResult<()> {
    let cid = ictx_of(k, iommufd)?;
    let c = k.ictxs.get_mut(&cid).ok_or(Errno::EBADF)?;
    // main.c iommufd_destroy: ENOENT for an unknown id, EBUSY while referenced.
    let busy = match c.objs.get(&id) {
        None => return Err(Errno::ENOENT),
        Some(IoObj::Ioas(io)) => !io.hwpts.is_empty(),
        Some(IoObj::Hwpt { devices, .. }) => *devices > 0,
        Some(IoObj::Device) => true,
    };
    if busy {
        return Err(Errno::EBUSY);
    }
    let unpin = match c.objs.remove(&id) {
        Some(IoObj::Ioas(io)) => io.areas.values().map(|a| a.pinned).sum(),
        _ => 0,
    };
    k.locked_user = k.locked_user.saturating_sub(unpin);
    Ok(())
}

/// Lowest free iommufd object id (the ictx xarray allocates from 1).
pub(super) fn alloc_id(objs: &BTreeMap<u32, IoObj>) -> u32 {
    (1..).find(|i| !objs.contains_key(i)).unwrap_or(u32::MAX)
}

/// io_pagetable.c iopt_alloc_iova: the lowest hole of the usable ranges (never IOVA 0:
/// the search runs from PAGE_SIZE to ULONG_MAX - PAGE_SIZE) aligned to
/// min(roundup_pow_of_two(length), lowest set bit of user_va, 2 MiB), keeping the user
/// address's page offset.
fn alloc_iova(
    io: &Ioas,
    usable: &[(u64, u64)],
    uptr: u64,
    length: u64,
    min_align: u64,
) -> KResult<u64> {
    if length == 0 || length >= u64::MAX / 2 {
        return Err(Errno::EOVERFLOW);
    }
    let mut align = length.next_power_of_two();
    if uptr != 0 {
        align = align.min(1u64 << uptr.trailing_zeros());
    }
    align = align.min(2 << 20);
    if align < min_align {
        return Err(Errno::EINVAL);
    }
    let page_offset = uptr % PAGE;
    for (s, e) in usable {
        let lo = (*s).max(PAGE);
        let hi = (*e).min(u64::MAX - PAGE);
        if lo > hi {
            continue;
        }
        // Holes between existing areas inside [lo, hi].
        let mut cursor = lo;
        let mut holes = Vec::new();
        for (i, a) in io.areas.range(..=hi) {
            let alast = i + (a.len - 1);
            if alast < lo {
                continue;
            }
            if *i > cursor {
                holes.push((cursor, i - 1));
            }
            cursor = cursor.max(alast.saturating_add(1));
        }
        if cursor <= hi {
            holes.push((cursor, hi));
        }
        for (hs, he) in holes {
            let Some(aligned) = hs.checked_add(align - 1).map(|v| (v & !(align - 1)) | page_offset)
            else {
                continue;
            };
            if aligned >= hs && aligned <= he && he - aligned >= length - 1 {
                return Ok(aligned);
            }
        }
    }
    Err(Errno::ENOSPC)
}

/// Detaches a device from its IOAS; the auto domain goes when its last device leaves,
/// unpinning the IOAS's pages.
pub(super) fn detach_device(k: &mut KernelState, addr: PciAddress) {
    let Some((ictx, ioas, hwpt)) = k.devs.get_mut(&addr).and_then(|d| d.attached.take()) else {
        return;
    };
    let Some(c) = k.ictxs.get_mut(&ictx) else { return };
    let mut gone = false;
    if let Some(IoObj::Hwpt { devices, .. }) = c.objs.get_mut(&hwpt) {
        *devices = devices.saturating_sub(1);
        gone = *devices == 0;
    }
    if gone {
        c.objs.remove(&hwpt);
        let mut unpin = 0;
        if let Some(IoObj::Ioas(io)) = c.objs.get_mut(&ioas) {
            io.hwpts.remove(&hwpt);
            if io.hwpts.is_empty() {
                for a in io.areas.values_mut() {
                    unpin += a.pinned;
                    a.pinned = 0;
                }
            }
        }
        k.locked_user = k.locked_user.saturating_sub(unpin);
    }
}

/// Drops an iommufd context once its fd is closed and no device is bound to it.
pub(super) fn gc_ictx(k: &mut KernelState, id: u32) {
    let dead = k.ictxs.get(&id).is_some_and(|c| !c.fd_open && c.bound_devices == 0);
    if dead {
        if let Some(c) = k.ictxs.remove(&id) {
            let unpin: u64 = c
                .objs
                .values()
                .map(|o| match o {
                    IoObj::Ioas(io) => io.areas.values().map(|a| a.pinned).sum(),
                    _ => 0,
                })
                .sum();
            k.locked_user = k.locked_user.saturating_sub(unpin);
        }
    }
}

/// The IOAS's auto domain (`iommufd_device_auto_get_domain`): the one attached already,
/// or a new one. A new domain is filled at once: every area is pinned (accounted to
/// `RLIMIT_MEMLOCK`) after what lies outside the usable ranges is reserved (EADDRINUSE if
/// an area is there) and the IOVA alignment raised to the IOMMU page size (EADDRINUSE
/// for misaligned areas).
pub(super) fn auto_domain(k: &mut KernelState, ictx: u32, ioas_id: u32) -> KResult<u32> {
    let cfg = k.config.clone();
    let c = k.ictxs.get_mut(&ictx).ok_or(Errno::EBADF)?;
    let Some(IoObj::Ioas(io)) = c.objs.get(&ioas_id) else { return Err(Errno::ENOENT) };
    if let Some(h) = io.hwpts.iter().next() {
        return Ok(*h);
    }
    let align = cfg.iommu_page();
    let mut pin = 0u64;
    for (iova, a) in &io.areas {
        let last = iova + (a.len - 1);
        if !cfg.iova_ranges.iter().any(|(s, e)| *iova >= *s && last <= *e) {
            return Err(Errno::EADDRINUSE);
        }
        if iova % align != 0 || a.len % align != 0 || a.basis() % align != 0 {
            return Err(Errno::EADDRINUSE);
        }
        a.check_pinnable()?;
        pin += pages_spanned(a.basis(), a.len);
    }
    cfg.check_memlock(k.locked_user, pin)?;
    let h = alloc_id(&c.objs);
    c.objs.insert(h, IoObj::Hwpt { ioas: ioas_id, devices: 0 });
    if let Some(IoObj::Ioas(io)) = c.objs.get_mut(&ioas_id) {
        io.hwpts.insert(h);
        for a in io.areas.values_mut() {
            a.pinned = pages_spanned(a.basis(), a.len);
        }
    }
    k.locked_user += pin;
    Ok(h)
}

/// IOAS `ioas_id` of context `ictx`: EBADF without the context, ENOENT when the id names
/// no IOAS.
fn ioas_mut(ictxs: &mut BTreeMap<u32, Ictx>, ictx: u32, ioas_id: u32) -> KResult<&mut Ioas> {
    let c = ictxs.get_mut(&ictx).ok_or(Errno::EBADF)?;
    match c.objs.get_mut(&ioas_id) {
        Some(IoObj::Ioas(io)) => Ok(io),
        _ => Err(Errno::ENOENT),
    }
}

impl Ioas {
    /// The usable IOVA ranges and the IOVA alignment: the whole space at byte granularity
    /// until a domain is attached, then the IOMMU's ranges and smallest page.
    fn geometry(&self, cfg: &MockKernelConfig) -> (Vec<(u64, u64)>, u64) {
        if self.hwpts.is_empty() {
            (vec![(0, u64::MAX)], 1)
        } else {
            (cfg.iova_ranges.clone(), cfg.iommu_page())
        }
    }
}
