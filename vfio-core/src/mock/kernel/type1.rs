//! Containers (drivers/vfio/container.c) and the type1 IOMMU driver
//! (drivers/vfio/vfio_iommu_type1.c): extensions, `SET_IOMMU`, IOMMU info with its
//! capabilities, and DMA map/unmap with their alignment, overlap, vaddr-update and
//! memlock rules.

use std::collections::BTreeMap;

use vfio_bindings::bindings::vfio::{
    VFIO_TYPE1v2_IOMMU, VFIO_API_VERSION, VFIO_DMA_CC_IOMMU, VFIO_DMA_MAP_FLAG_READ,
    VFIO_DMA_MAP_FLAG_VADDR, VFIO_DMA_MAP_FLAG_WRITE, VFIO_DMA_UNMAP_FLAG_ALL,
    VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, VFIO_DMA_UNMAP_FLAG_VADDR, VFIO_IOMMU_INFO_CAPS,
    VFIO_IOMMU_INFO_PGSIZES, VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
    VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION, VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, VFIO_NOIOMMU_IOMMU,
    VFIO_TYPE1_IOMMU, VFIO_UNMAP_ALL, VFIO_UPDATE_VADDR,
};

use super::dma::check_pinnable;
use super::fds::{container_of, new_fd};
use super::info::{argsz, finish_info, pairs, Caps};
use super::le::{wr32, wr64};
use super::state::{Container, Dma, FdObj, Iommu, KernelState, Type1};
use super::{MockKernelConfig, PAGE};
use crate::kernel::{
    vfio_iommu_type1_dma_map, vfio_iommu_type1_dma_unmap, Errno, KResult, KernelFd,
};

const TYPE1V2: u32 = VFIO_TYPE1v2_IOMMU;
/// `dma_avail` of iommufd's compat container, which has no entry limit.
const NO_LIMIT: u32 = u32::MAX;
/// `DIRTY_BITMAP_SIZE_MAX` of type1 (bytes for INT_MAX pages).
const DIRTY_BITMAP_SIZE_MAX: u64 = 0x1000_0000;

pub(super) fn open_container(k: &mut KernelState) -> KResult<KernelFd> {
    if !k.config.container {
        return Err(Errno::ENOENT);
    }
    let cid = k.next_container;
    k.next_container += 1;
    k.containers.insert(cid, Container { fd_open: true, ..Default::default() });
    Ok(new_fd(k, FdObj::Container(cid)))
}

pub(super) fn get_api_version(k: &KernelState, container: &KernelFd) -> KResult<i32> {
    container_of(k, container)?;
    Ok(VFIO_API_VERSION as i32)
}

pub(super) fn check_extension(
    k: &KernelState,
    container: &KernelFd,
    extension: u32,
) -> KResult<u32> {
    let c = k.containers.get(&container_of(k, container)?).ok_or(Errno::EBADF)?;
    let cfg = &k.config;
    let type1 = |ext: u32, iommu: Option<&Type1>| -> u32 {
        // type1 vfio_iommu_type1_check_extension.
        match ext {
            VFIO_TYPE1_IOMMU => u32::from(cfg.type1),
            TYPE1V2 => u32::from(cfg.type1v2),
            VFIO_UNMAP_ALL => u32::from(cfg.type1 || cfg.type1v2),
            // Answered by the container's IOMMU only (0 before SET_IOMMU); iommufd's
            // compat container has no vaddr update.
            VFIO_UPDATE_VADDR => u32::from(iommu.is_some() && !cfg.compat_container),
            VFIO_DMA_CC_IOMMU => u32::from(iommu.is_some()),
            _ => 0,
        }
    };
    // noiommu: vfio_noiommu_ioctl answers 1 only for VFIO_NOIOMMU_IOMMU in noiommu mode.
    let noiommu = |ext: u32| u32::from(cfg.noiommu && ext == VFIO_NOIOMMU_IOMMU);
    Ok(match &c.iommu {
        Some(Iommu::Type1(t)) => type1(extension, Some(t)),
        Some(Iommu::NoIommu) => noiommu(extension),
        // container.c vfio_container_ioctl_check_extension: without a driver, ask every
        // driver allowed for the container's groups (all when it has none).
        None => {
            let any = c.groups.is_empty();
            let t = if any || !c.noiommu { type1(extension, None) } else { 0 };
            let n = if any || c.noiommu { noiommu(extension) } else { 0 };
            t.max(n)
        }
    })
}

pub(super) fn set_iommu(k: &mut KernelState, container: &KernelFd, iommu_type: u32) -> KResult<()> {
    let cid = container_of(k, container)?;
    let cfg = k.config.clone();
    let c = k.containers.get_mut(&cid).ok_or(Errno::EBADF)?;
    // container.c vfio_ioctl_set_iommu: a group must be in and no driver set yet.
    if c.groups.is_empty() || c.iommu.is_some() {
        return Err(Errno::EINVAL);
    }
    if c.noiommu {
        // Only the noiommu driver is allowed; it supports only its own type, and
        // any other type finds no driver (ENODEV).
        if !(cfg.noiommu && iommu_type == VFIO_NOIOMMU_IOMMU) {
            return Err(Errno::ENODEV);
        }
        c.iommu = Some(Iommu::NoIommu);
        return Ok(());
    }
    let v2 = match iommu_type {
        VFIO_TYPE1_IOMMU if cfg.type1 => false,
        TYPE1V2 if cfg.type1v2 => true,
        _ => return Err(Errno::ENODEV),
    };
    // type1 vfio_iommu_type1_attach_group: without isolated MSI, EPERM unless
    // allow_unsafe_interrupts.
    if !cfg.msi_safe() {
        return Err(Errno::EPERM);
    }
    let avail = if cfg.compat_container { NO_LIMIT } else { cfg.dma_entry_limit };
    c.iommu = Some(Iommu::Type1(Type1 { v2, dmas: BTreeMap::new(), avail }));
    Ok(())
}

pub(super) fn get_info(k: &KernelState, container: &KernelFd, buf: &mut [u8]) -> KResult<()> {
    let c = k.containers.get(&container_of(k, container)?).ok_or(Errno::EBADF)?;
    let t = type1_of(c, &k.config)?;
    // type1 vfio_iommu_type1_get_info: minsz = offsetofend(iova_pgsizes).
    let argsz = argsz(buf, 16)?;
    let pgsizes = k.config.pgsize_bitmap & !(PAGE - 1);
    let mut caps = Caps::default();
    // Order as the kernel builds them: migration, DMA avail, IOVA ranges.
    let mut mig = vec![0u8; 24];
    wr32(&mut mig, 0, 1); // VFIO_IOMMU_DIRTY_PGSIZES
    wr64(&mut mig, 8, pgsizes);
    wr64(&mut mig, 16, DIRTY_BITMAP_SIZE_MAX);
    // iommufd's compat container reports only the IOVA ranges and dma_avail.
    if !k.config.compat_container {
        caps.add(VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION as u16, 1, &mig);
    }
    caps.add(VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL as u16, 1, &t.avail.to_le_bytes());
    caps.add(VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE as u16, 1, &pairs(&k.config.iova_ranges));
    let mut info = [0u8; 24];
    wr32(&mut info, 0, argsz);
    wr32(&mut info, 4, VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS);
    wr64(&mut info, 8, pgsizes);
    finish_info(buf, &mut info, argsz, &caps, 16)
}

pub(super) fn map_dma(
    k: &mut KernelState,
    container: &KernelFd,
    map: &vfio_iommu_type1_dma_map,
) -> KResult<()> {
    let cid = container_of(k, container)?;
    let cfg = k.config.clone();
    let t = type1_mut(k.containers.get_mut(&cid).ok_or(Errno::EBADF)?, &cfg)?;
    // type1 vfio_iommu_type1_map_dma: argsz and known flags (the compat container knows
    // no VADDR).
    let vaddr_flag = if cfg.compat_container { 0 } else { VFIO_DMA_MAP_FLAG_VADDR };
    let known = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE | vaddr_flag;
    if map.argsz < 32 || map.flags & !known != 0 {
        return Err(Errno::EINVAL);
    }
    // vfio_dma_do_map: exactly one of prot / VADDR.
    let (read, write) =
        (map.flags & VFIO_DMA_MAP_FLAG_READ != 0, map.flags & VFIO_DMA_MAP_FLAG_WRITE != 0);
    let set_vaddr = map.flags & VFIO_DMA_MAP_FLAG_VADDR != 0;
    if (read || write) == set_vaddr {
        return Err(Errno::EINVAL);
    }
    let mask = cfg.iommu_page() - 1;
    // vfio_dma_do_map: zero size or misaligned size/iova/vaddr.
    if map.size == 0 || (map.size | map.iova | map.vaddr) & mask != 0 {
        return Err(Errno::EINVAL);
    }
    let last = map.iova.checked_add(map.size - 1).ok_or(cfg.wrap_errno())?;
    map.vaddr.checked_add(map.size - 1).ok_or(cfg.wrap_errno())?;
    if set_vaddr {
        return update_vaddr(t, map, last);
    }
    // vfio_find_dma: any overlap -> EEXIST.
    if t.overlapping(map.iova, last).is_some() {
        return Err(Errno::EEXIST);
    }
    if t.avail == 0 && t.avail != NO_LIMIT {
        return Err(Errno::ENOSPC);
    }
    // vfio_iommu_iova_dma_valid: inside one usable range.
    if !cfg.iova_ranges.iter().any(|(s, e)| map.iova >= *s && last <= *e) {
        return Err(Errno::EINVAL);
    }
    // vfio_pin_pages_remote: pin_user_pages fails with EFAULT on unmapped memory, and
    // the locked_vm accounting fails with ENOMEM beyond RLIMIT_MEMLOCK.
    check_pinnable(map.vaddr, map.size, write)?;
    let pages = map.size / PAGE;
    cfg.check_memlock(k.locked_mm, pages)?;
    k.locked_mm += pages;
    if t.avail != NO_LIMIT {
        t.avail -= 1;
    }
    t.dmas.insert(
        map.iova,
        Dma { size: map.size, vaddr: map.vaddr, vaddr_invalid: false, read, write },
    );
    Ok(())
}

/// `VFIO_DMA_MAP_FLAG_VADDR`: ENOENT without an overlapping mapping, EINVAL unless it is
/// exactly an invalidated one; then the new vaddr is recorded.
fn update_vaddr(t: &mut Type1, map: &vfio_iommu_type1_dma_map, last: u64) -> KResult<()> {
    let Some((at, _)) = t.overlapping(map.iova, last) else { return Err(Errno::ENOENT) };
    let d = t.dmas.get_mut(&at).ok_or(Errno::ENOENT)?;
    if !d.vaddr_invalid || at != map.iova || d.size != map.size {
        return Err(Errno::EINVAL);
    }
    d.vaddr = map.vaddr;
    d.vaddr_invalid = false;
    Ok(())
}

pub(super) fn unmap_dma(
    k: &mut KernelState,
    container: &KernelFd,
    unmap: &mut vfio_iommu_type1_dma_unmap,
) -> KResult<()> {
    let cid = container_of(k, container)?;
    let cfg = k.config.clone();
    let t = type1_mut(k.containers.get_mut(&cid).ok_or(Errno::EBADF)?, &cfg)?;
    // type1 vfio_iommu_type1_unmap_dma: argsz and flags (vfio_compat.c knows only ALL).
    let known = if cfg.compat_container {
        VFIO_DMA_UNMAP_FLAG_ALL
    } else {
        VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP | VFIO_DMA_UNMAP_FLAG_VADDR | VFIO_DMA_UNMAP_FLAG_ALL
    };
    if unmap.argsz < 24 || unmap.flags & !known != 0 {
        return Err(Errno::EINVAL);
    }
    if unmap.flags & VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP != 0 {
        // Dirty tracking is not started by anything here: vfio_dma_do_unmap refuses.
        return Err(Errno::EINVAL);
    }
    let all = unmap.flags & VFIO_DMA_UNMAP_FLAG_ALL != 0;
    let (iova, end) = unmap_range(&cfg, unmap, all)?;
    // v2 refuses to bisect a mapping at either end (EINVAL; iommufd's compat container:
    // ENOENT). The compat container's type1 cuts the mappings at both ends instead and
    // unmaps exactly the range.
    if t.v2 && !all {
        let errno = if cfg.compat_container { Errno::ENOENT } else { Errno::EINVAL };
        if t.overlapping(iova, iova).is_some_and(|(i, _)| i != iova) {
            return Err(errno);
        }
        if t.overlapping(end, end).is_some_and(|(i, s)| i + (s - 1) != end) {
            return Err(errno);
        }
    }
    if cfg.compat_container && !t.v2 && !all {
        t.cut(iova);
        if let Some(after) = end.checked_add(1) {
            t.cut(after);
        }
    }
    let invalidate = unmap.flags & VFIO_DMA_UNMAP_FLAG_VADDR != 0;
    let (unmapped, unpinned) = unmap_walk(t, iova, end, invalidate)?;
    k.locked_mm = k.locked_mm.saturating_sub(unpinned);
    unmap.size = unmapped;
    Ok(())
}

/// vfio_dma_do_unmap: the inclusive range to unmap. The iova is aligned; ALL needs
/// iova = size = 0 (everything); else a non-zero aligned size that does not wrap.
fn unmap_range(
    cfg: &MockKernelConfig,
    unmap: &vfio_iommu_type1_dma_unmap,
    all: bool,
) -> KResult<(u64, u64)> {
    let mask = cfg.iommu_page() - 1;
    if unmap.iova & mask != 0 {
        return Err(Errno::EINVAL);
    }
    if all {
        if unmap.iova != 0 || unmap.size != 0 {
            return Err(Errno::EINVAL);
        }
        return Ok((0, u64::MAX));
    }
    if unmap.size == 0 || unmap.size & mask != 0 {
        return Err(Errno::EINVAL);
    }
    Ok((unmap.iova, unmap.iova.checked_add(unmap.size - 1).ok_or(cfg.wrap_errno())?))
}

/// Removes (or with `invalidate`, marks vaddr-invalid) the mappings of `[iova, end]`,
/// walking from the first mapping overlapping the range. v1: one starting before `iova`
/// stops the walk (success, size 0); one starting inside is removed whole. Returns the
/// bytes unmapped and the pages unpinned.
fn unmap_walk(t: &mut Type1, iova: u64, end: u64, invalidate: bool) -> KResult<(u64, u64)> {
    let first = t
        .overlapping(iova, iova)
        .map(|(i, _)| i)
        .or_else(|| t.dmas.range(iova..).next().map(|(i, _)| *i));
    let mut unmapped = 0u64;
    let mut unpinned = 0u64;
    let Some(first) = first else { return Ok((0, 0)) };
    let keys: Vec<u64> = t.dmas.range(first..).map(|(i, _)| *i).collect();
    for i in keys {
        if i > end {
            break;
        }
        if !t.v2 && iova > i {
            break;
        }
        if invalidate {
            // VFIO_DMA_UNMAP_FLAG_VADDR: mark the vaddr invalid, keep the mapping;
            // invalidating twice is EINVAL (earlier ones in this call revert).
            if t.dmas.get(&i).is_some_and(|d| d.vaddr_invalid) {
                for j in t.dmas.range(first..i).map(|(j, _)| *j).collect::<Vec<_>>() {
                    if let Some(d) = t.dmas.get_mut(&j) {
                        d.vaddr_invalid = false;
                    }
                }
                return Err(Errno::EINVAL);
            }
            if let Some(d) = t.dmas.get_mut(&i) {
                d.vaddr_invalid = true;
                unmapped += d.size;
            }
            continue;
        }
        if let Some(d) = t.dmas.remove(&i) {
            unmapped += d.size;
            unpinned += d.size / PAGE;
            if t.avail != NO_LIMIT {
                t.avail += 1;
            }
        }
    }
    Ok((unmapped, unpinned))
}

impl Type1 {
    /// Splits the mapping holding `at` (if it starts before it) into two at `at`, as
    /// iommufd's `iopt_cut_iova` does for the compat container's type1.
    fn cut(&mut self, at: u64) {
        let Some((i, size)) = self.overlapping(at, at).filter(|(i, _)| *i != at) else { return };
        let Some(d) = self.dmas.get_mut(&i) else { return };
        let head = at - i;
        d.size = head;
        let tail = Dma {
            size: size - head,
            vaddr: d.vaddr + head,
            vaddr_invalid: d.vaddr_invalid,
            read: d.read,
            write: d.write,
        };
        self.dmas.insert(at, tail);
    }

    /// The mapping starting last at or before `last` if it reaches `iova`: (iova, size).
    /// With `iova == last`, the mapping holding that address.
    fn overlapping(&self, iova: u64, last: u64) -> Option<(u64, u64)> {
        self.dmas
            .range(..=last)
            .next_back()
            .filter(|(i, d)| *i + (d.size - 1) >= iova)
            .map(|(i, d)| (*i, d.size))
    }
}

/// A container's type1 IOMMU: ENOTTY under the no-IOMMU driver (`vfio_noiommu_ioctl`
/// knows only CHECK_EXTENSION; iommufd's compat container has no IOAS for it: ENODEV),
/// EINVAL before `SET_IOMMU` (container.c: unrecognised ioctls without a driver).
fn type1_of<'a>(c: &'a Container, cfg: &MockKernelConfig) -> KResult<&'a Type1> {
    match &c.iommu {
        Some(Iommu::Type1(t)) => Ok(t),
        Some(Iommu::NoIommu) if cfg.compat_container => Err(Errno::ENODEV),
        Some(Iommu::NoIommu) => Err(Errno::ENOTTY),
        None => Err(Errno::EINVAL),
    }
}

/// [`type1_of`], to change it.
fn type1_mut<'a>(c: &'a mut Container, cfg: &MockKernelConfig) -> KResult<&'a mut Type1> {
    type1_of(c, cfg)?;
    match &mut c.iommu {
        Some(Iommu::Type1(t)) => Ok(t),
        _ => Err(Errno::EINVAL),
    }
}

/// Drops a container that has neither an open fd nor groups.
pub(super) fn gc_container(k: &mut KernelState, cid: u32) {
    let dead = k.containers.get(&cid).is_some_and(|c| !c.fd_open && c.groups.is_empty());
    if dead {
        k.containers.remove(&cid);
    }
}

/// `vfio_group_detach_container` (container.c): the last group out releases the IOMMU
/// driver and with it every mapping (type1 `vfio_iommu_type1_release`).
pub(super) fn detach_group(k: &mut KernelState, gid: u32) {
    let Some(cid) = k.groups.get_mut(&gid).and_then(|g| g.container.take()) else { return };
    let mut unpin = 0;
    if let Some(c) = k.containers.get_mut(&cid) {
        c.groups.remove(&gid);
        if c.groups.is_empty() {
            if let Some(Iommu::Type1(t)) = c.iommu.take() {
                unpin = t.dmas.values().map(|d| d.size / PAGE).sum::<u64>();
            }
        }
    }
    k.locked_mm = k.locked_mm.saturating_sub(unpin);
    gc_container(k, cid);
}
