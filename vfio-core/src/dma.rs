//! DMA: the address space devices see, the IOVA allocator on top, buffers the toolkit
//! owns, mappings of caller-owned memory, and batch mapping.
//!
//! [`AddressSpace`] is where mappings live: a legacy container or an iommufd IOAS. Its
//! `map`/`unmap` are the hot path (one kernel call, no heap allocation). [`DmaPool`] adds
//! an IOVA allocator and RAII: a [`DmaBuffer`] or [`DmaMapping`] is unmapped and its IOVA
//! returned when it is dropped.

use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use crate::container::{Container, IommuType};
use crate::device::{Device, Owner};
pub use crate::dma_perm::DmaPerm;
use crate::error::{Error, Result};
use crate::info::IovaRange;
use crate::iommufd::Ioas;
use crate::iova::IovaAllocator;
use crate::region::RegionMapping;

/// Where DMA mappings live: shared by every device attached to it.
#[derive(Debug, Clone)]
pub enum AddressSpace {
    /// A legacy container (type1 or type1v2; or no-IOMMU, where nothing can be mapped).
    Container(Arc<Container>),
    /// An iommufd I/O address space.
    Ioas(Arc<Ioas>),
}

impl Device {
    /// The address space the device's DMA goes through.
    pub fn address_space(&self) -> AddressSpace {
        match self.owner() {
            Owner::Group(g) => AddressSpace::Container(g.container().clone()),
            Owner::Iommufd { ioas, .. } => AddressSpace::Ioas(ioas.clone()),
        }
    }
}

impl AddressSpace {
    fn no_iommu(&self) -> bool {
        matches!(self, AddressSpace::Container(c) if c.iommu_type() == Some(IommuType::NoIommu))
    }

    #[cold]
    fn no_iommu_hint(e: Error) -> Error {
        e.with_hint("no-IOMMU mode has no DMA mapping: the device uses physical addresses")
    }

    #[cold]
    fn no_iommu_error() -> Error {
        Error::Unsupported {
            what: "DMA mapping in no-IOMMU mode".into(),
            hint: Some("there is no IOMMU: the device uses physical addresses".into()),
        }
    }

    /// Maps `size` bytes of process memory at `vaddr` to `iova`. One kernel call, no
    /// heap allocation on success.
    ///
    /// # Safety
    /// The memory at `vaddr..vaddr+size` must stay mapped, and nothing may rely on its
    /// contents not changing, until it is unmapped: the device may read it and (with
    /// [`DmaPerm::ReadWrite`]) write it at any time. Unmapping is the caller's job.
    pub unsafe fn map(&self, vaddr: u64, iova: u64, size: u64, perm: DmaPerm) -> Result<()> {
        match self {
            // SAFETY: the caller upholds the contract, which is the same.
            AddressSpace::Container(c) => unsafe { c.map_dma(vaddr, iova, size, perm) },
            // SAFETY: as above.
            AddressSpace::Ioas(i) => unsafe { i.map_dma(vaddr, Some(iova), size, perm).map(drop) },
        }
        .map_err(|e| if self.no_iommu() { Self::no_iommu_hint(e) } else { e })
    }

    /// Unmaps `[iova, iova + size)`; returns the bytes unmapped. No heap allocation on
    /// success.
    pub fn unmap(&self, iova: u64, size: u64) -> Result<u64> {
        match self {
            AddressSpace::Container(c) => c.unmap_dma(iova, size),
            AddressSpace::Ioas(i) => i.unmap_dma(iova, size),
        }
    }

    /// Unmaps everything; returns the bytes unmapped.
    pub fn unmap_all(&self) -> Result<u64> {
        match self {
            AddressSpace::Container(c) => c.unmap_all(),
            AddressSpace::Ioas(i) => i.unmap_all(),
        }
    }

    /// The usable IOVA ranges (empty: unrestricted).
    pub fn iova_ranges(&self) -> Result<Vec<IovaRange>> {
        match self {
            AddressSpace::Container(c) => {
                if self.no_iommu() {
                    return Err(Self::no_iommu_error());
                }
                Ok(c.iommu_info()?.iova_ranges)
            }
            AddressSpace::Ioas(i) => i.iova_ranges(),
        }
    }

    /// The smallest IOMMU page size (4 KiB when the kernel does not say).
    pub fn min_page_size(&self) -> Result<u64> {
        let sizes = match self {
            AddressSpace::Container(c) => {
                if self.no_iommu() {
                    return Err(Self::no_iommu_error());
                }
                c.iommu_info()?.page_sizes
            }
            AddressSpace::Ioas(_) => 0,
        };
        Ok(if sizes == 0 { 4096 } else { 1 << sizes.trailing_zeros() })
    }
}

/// Backing memory for a [`DmaBuffer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backing {
    /// Anonymous memory in 4 KiB pages.
    Anonymous,
    /// hugetlbfs 2 MiB pages (needs pages reserved in `/proc/sys/vm/nr_hugepages`).
    Huge2M,
    /// hugetlbfs 1 GiB pages.
    Huge1G,
}

impl Backing {
    fn page(self) -> u64 {
        match self {
            Backing::Anonymous => 4096,
            Backing::Huge2M => 2 << 20,
            Backing::Huge1G => 1 << 30,
        }
    }
}

#[derive(Debug)]
struct PoolInner {
    space: AddressSpace,
    iova: Mutex<IovaAllocator>,
}

impl PoolInner {
    fn release(&self, iova: u64, size: u64) -> Result<u64> {
        let r = self.space.unmap(iova, size);
        if r.is_ok() {
            self.iova.lock().unwrap_or_else(|p| p.into_inner()).free(iova, size);
        }
        r
    }
}

/// An address space with an IOVA allocator: hands out mapped buffers and unmaps them
/// when they are dropped.
#[derive(Debug, Clone)]
pub struct DmaPool {
    inner: Arc<PoolInner>,
}

impl DmaPool {
    /// A pool over `space`, allocating inside the IOVA ranges the kernel reports.
    pub fn new(space: AddressSpace) -> Result<Self> {
        let ranges = space.iova_ranges()?;
        let page = space.min_page_size()?;
        Ok(DmaPool {
            inner: Arc::new(PoolInner {
                space,
                iova: Mutex::new(IovaAllocator::new(&ranges, page)),
            }),
        })
    }

    /// Keeps IOVAs below `limit` (a device with a narrow DMA mask).
    pub fn limit_iova(&self, limit: u64) {
        self.inner.iova.lock().unwrap_or_else(|p| p.into_inner()).limit(limit);
    }

    /// The address space the pool maps into.
    pub fn space(&self) -> &AddressSpace {
        &self.inner.space
    }

    fn alloc_iova(&self, size: u64, align: u64) -> Result<u64> {
        self.inner.iova.lock().unwrap_or_else(|p| p.into_inner()).alloc(size, align).ok_or_else(
            || Error::NotFound {
                what: format!("a free IOVA range of {size:#x} bytes"),
                hint: Some("unmap buffers no longer in use".into()),
            },
        )
    }

    fn free_iova_range(&self, iova: u64, size: u64) {
        self.inner.iova.lock().unwrap_or_else(|p| p.into_inner()).free(iova, size);
    }

    /// Allocates `size` bytes of zeroed, pre-faulted memory, maps it read-write for the
    /// device, and returns it. Dropping the buffer unmaps it.
    pub fn alloc(&self, size: usize) -> Result<DmaBuffer> {
        self.alloc_with(size, Backing::Anonymous, DmaPerm::ReadWrite)
    }

    /// Like [`DmaPool::alloc`] with a choice of backing pages and device permission.
    pub fn alloc_with(&self, size: usize, backing: Backing, perm: DmaPerm) -> Result<DmaBuffer> {
        let page = backing.page();
        let len = (size as u64).max(1).div_ceil(page) * page;
        let mem = HostMemory::new(len as usize, backing)?;
        let iova = self.alloc_iova(len, page)?;
        // SAFETY: `mem` is a private mapping owned by the buffer; it stays mapped until
        // the buffer's Drop has unmapped the IOVA range (field order and Drop below).
        if let Err(e) = unsafe { self.inner.space.map(mem.addr(), iova, len, perm) } {
            self.free_iova_range(iova, len);
            return Err(e);
        }
        Ok(DmaBuffer { pool: self.inner.clone(), iova, len: len as usize, mem: Some(mem) })
    }

    /// Maps caller-owned memory (a VMM's guest RAM, say) at an IOVA the pool picks.
    ///
    /// # Safety
    /// `vaddr..vaddr+size` must be mapped memory of this process that stays mapped for as
    /// long as the returned [`DmaMapping`] lives; the device may read and (with
    /// [`DmaPerm::ReadWrite`]) write it at any time, so nothing may rely on its contents
    /// not changing behind its back.
    pub unsafe fn map_user(&self, vaddr: u64, size: u64, perm: DmaPerm) -> Result<DmaMapping> {
        let iova = self.alloc_iova(size, 0)?;
        // SAFETY: forwarded contract.
        unsafe { self.map_user_at(vaddr, iova, size, perm) }.inspect_err(|_| {
            self.free_iova_range(iova, size);
        })
    }

    /// Maps caller-owned memory at a chosen IOVA (a guest-physical address, say).
    ///
    /// # Safety
    /// As [`DmaPool::map_user`].
    ///
    /// The pool records the range, so [`DmaPool::alloc`] and [`DmaPool::map_user`] never
    /// hand out IOVAs inside it while the mapping lives (IOVA 0 included: guest RAM at
    /// guest-physical 0 is fine), and hands them out again once it is dropped.
    pub unsafe fn map_user_at(
        &self,
        vaddr: u64,
        iova: u64,
        size: u64,
        perm: DmaPerm,
    ) -> Result<DmaMapping> {
        let taken = self
            .inner
            .iova
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_free(iova, size)
            .unwrap_or_default();
        // SAFETY: forwarded contract.
        if let Err(e) = unsafe { self.inner.space.map(vaddr, iova, size, perm) } {
            self.free_parts(&taken);
            return Err(e);
        }
        Ok(DmaMapping { pool: self.inner.clone(), iova, size, taken, peer: None })
    }

    /// Maps another device's BAR for peer-to-peer DMA: each mmap-able area of `bar` at
    /// `iova + area.offset`. Safe: the mappings keep `bar` (and so its device) alive until
    /// they are unmapped. Works where the IOMMU backend pins device memory (type1 maps
    /// `VM_PFNMAP` ranges); iommufd refuses such memory before Linux 6.x dma-buf support
    /// (the kernel's errno is returned).
    pub fn map_peer(&self, bar: &Arc<RegionMapping>, iova: u64) -> Result<Vec<DmaMapping>> {
        let mut out = Vec::new();
        for a in bar.host_areas() {
            let at = iova.checked_add(a.offset).ok_or_else(|| Error::Invalid {
                what: "IOVA",
                input: format!("{iova:#x}"),
                reason: "the BAR's areas would pass the end of the IO address space".into(),
            })?;
            // SAFETY: the area is a live mapping owned by `bar`, which the DmaMapping keeps
            // alive until the IOVA range is unmapped; it is device memory, which no Rust
            // reference covers.
            let mut m = unsafe { self.map_user_at(a.host_addr, at, a.len, DmaPerm::ReadWrite) }?;
            m.peer = Some(bar.clone());
            out.push(m);
        }
        Ok(out)
    }

    fn free_parts(&self, parts: &[(u64, u64)]) {
        let mut a = self.inner.iova.lock().unwrap_or_else(|p| p.into_inner());
        for &(s, l) in parts {
            a.free(s, l - s + 1);
        }
    }

    /// Maps many buffers with as few kernel calls as possible: entries of the same slot
    /// contiguous in both process and IO address space are coalesced into one mapping.
    /// Entries of different slots ([`BatchEntry::slot`]: a VMM's memory slots) are never
    /// merged, so each slot can be unmapped on its own later (type1v2 and iommufd refuse
    /// to unmap part of a mapping). Returns one [`DmaMapping`] per kernel mapping made,
    /// in order. If any call fails, the mappings already made are undone and the error
    /// returned.
    ///
    /// # Safety
    /// Every entry must satisfy [`DmaPool::map_user`]'s contract.
    pub unsafe fn map_batch(
        &self,
        entries: &[BatchEntry],
        perm: DmaPerm,
    ) -> Result<Vec<DmaMapping>> {
        let mut out: Vec<DmaMapping> = Vec::with_capacity(coalesce(entries).count());
        for run in coalesce(entries) {
            // SAFETY: forwarded contract; `run` covers only the caller's entries.
            let m = unsafe { self.map_user_at(run.vaddr, run.iova, run.size, perm) }?;
            out.push(m);
        }
        Ok(out)
    }
}

/// One buffer of a batch map: process address, IOVA, size, and the slot it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchEntry {
    /// Process virtual address.
    pub vaddr: u64,
    /// IOVA.
    pub iova: u64,
    /// Bytes.
    pub size: u64,
    /// The caller's unit of unmapping (a memory slot); entries of different slots are
    /// never merged into one mapping.
    pub slot: u32,
}

/// Merges entries of one slot that continue the previous one in both address spaces.
pub fn coalesce(entries: &[BatchEntry]) -> impl Iterator<Item = BatchEntry> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let first = *entries.get(i)?;
        let mut run = first;
        i += 1;
        while let Some(next) = entries.get(i) {
            let contiguous = run.slot == next.slot
                && run.vaddr.checked_add(run.size) == Some(next.vaddr)
                && run.iova.checked_add(run.size) == Some(next.iova);
            match (contiguous, run.size.checked_add(next.size)) {
                (true, Some(size)) => {
                    run.size = size;
                    i += 1;
                }
                _ => break,
            }
        }
        Some(run)
    })
}

/// Page-aligned process memory from an anonymous `mmap` (zeroed and pre-faulted),
/// released with `munmap` on drop: what [`DmaBuffer`] is made of, and what a VMM's test
/// harness can use as guest RAM to map with [`DmaPool::map_user`].
#[derive(Debug)]
pub struct HostMemory {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the memory is plain process memory, owned exclusively by this value.
unsafe impl Send for HostMemory {}
// SAFETY: shared access only hands out raw pointers / copies under the caller's control.
unsafe impl Sync for HostMemory {}

impl HostMemory {
    /// Maps `len` bytes (a multiple of the backing's page size) of zeroed, pre-faulted
    /// memory.
    pub fn new(len: usize, backing: Backing) -> Result<Self> {
        let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
        match backing {
            Backing::Anonymous => {}
            Backing::Huge2M => flags |= libc::MAP_HUGETLB | (21 << libc::MAP_HUGE_SHIFT),
            Backing::Huge1G => flags |= libc::MAP_HUGETLB | (30 << libc::MAP_HUGE_SHIFT),
        }
        // SAFETY: a fresh anonymous mapping chosen by the kernel aliases nothing.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0)
        };
        if p == libc::MAP_FAILED {
            let e = std::io::Error::last_os_error();
            let err = Error::host("mmap", "anonymous memory", e);
            return Err(if backing == Backing::Anonymous {
                err
            } else {
                err.with_hint(
                    "no free huge pages of that size: reserve some with \
                     `echo N > /proc/sys/vm/nr_hugepages` (2 MiB) or hugepagesz=1G hugepages=N",
                )
            });
        }
        let ptr = NonNull::new(p.cast()).ok_or_else(|| {
            Error::host("mmap", "anonymous memory", std::io::Error::from_raw_os_error(libc::EFAULT))
        })?;
        Ok(HostMemory { ptr, len })
    }

    /// The address of the first byte (for [`AddressSpace::map`] and friends).
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// A raw pointer to the first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a mapping has at least one page.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for HostMemory {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `new`, no longer used.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Memory the toolkit owns, mapped for DMA. Unmapped, and its IOVA freed, on drop.
#[derive(Debug)]
pub struct DmaBuffer {
    pool: Arc<PoolInner>,
    iova: u64,
    len: usize,
    mem: Option<HostMemory>,
}

impl DmaBuffer {
    /// The address the device uses.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// Length in bytes (the requested size rounded up to the page size).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: buffers have at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    fn base(&self) -> *mut u8 {
        self.mem.as_ref().map_or(std::ptr::null_mut(), |m| m.ptr.as_ptr())
    }

    /// The byte at `offset` as an atomic: the memory is shared with the device and with
    /// other threads holding `&self`, so every access the library makes is atomic
    /// (relaxed), which makes concurrent [`DmaBuffer::read`]s and [`DmaBuffer::write`]s
    /// from several threads well defined instead of a data race.
    fn byte(&self, offset: usize) -> &AtomicU8 {
        // SAFETY: `offset < self.len` (callers check), so the pointer is inside the live
        // mapping owned by `self.mem`, which outlives the returned reference; AtomicU8 has
        // the size and alignment of u8; the library accesses this memory only atomically,
        // and `as_ptr` users are told to do the same.
        unsafe { AtomicU8::from_ptr(self.base().add(offset)) }
    }

    /// Copies bytes out of the buffer at `offset` (the device may have written them).
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        self.check(offset, out.len())?;
        fence(Ordering::Acquire);
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.byte(offset + i).load(Ordering::Relaxed);
        }
        Ok(())
    }

    /// Copies bytes into the buffer at `offset`. Several threads may write at once; each
    /// byte ends up as one of the values written. The stores are complete (a release
    /// fence) before the call returns, so a doorbell written to the device afterwards
    /// finds the data in memory.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check(offset, data.len())?;
        for (i, b) in data.iter().enumerate() {
            self.byte(offset + i).store(*b, Ordering::Relaxed);
        }
        fence(Ordering::Release);
        Ok(())
    }

    /// A raw pointer to the memory, for zero-copy use (descriptor rings). The device and
    /// other threads may change the memory at any time: access it with atomic operations
    /// only (`AtomicU32::from_ptr` and friends), as [`DmaBuffer::read`] and
    /// [`DmaBuffer::write`] do.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base()
    }

    fn check(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(Error::OutOfBounds {
                what: "DMA buffer".into(),
                offset: offset as u64,
                len: len as u64,
                size: self.len as u64,
            }),
        }
    }

    /// Unmaps the buffer now and reports errors (dropping it does the same silently).
    pub fn free(mut self) -> Result<()> {
        let r = self.pool.release(self.iova, self.len as u64).map(drop);
        if r.is_err() {
            // Keep the memory alive: the device may still reach it through the IOMMU.
            std::mem::forget(self.mem.take());
        }
        self.len = 0;
        r
    }
}

impl Drop for DmaBuffer {
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        if self.pool.release(self.iova, self.len as u64).is_err() {
            // The IOMMU may still translate to this memory: never give it back to the
            // allocator, leak it instead.
            std::mem::forget(self.mem.take());
        }
    }
}

/// A mapping of caller-owned memory; unmapped when dropped.
#[derive(Debug)]
pub struct DmaMapping {
    pool: Arc<PoolInner>,
    iova: u64,
    size: u64,
    /// The IOVA intervals (inclusive) the pool's allocator gave up for this mapping.
    taken: Vec<(u64, u64)>,
    /// The device mapping the IOVAs reach (peer-to-peer), kept alive until the unmap.
    peer: Option<Arc<RegionMapping>>,
}

impl DmaMapping {
    /// The IOVA of the first byte.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// Length in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Unmaps now and reports errors.
    pub fn unmap(mut self) -> Result<u64> {
        let r = self.release();
        self.size = 0;
        r
    }

    fn release(&self) -> Result<u64> {
        let r = self.pool.space.unmap(self.iova, self.size);
        if r.is_ok() {
            let mut a = self.pool.iova.lock().unwrap_or_else(|p| p.into_inner());
            for &(s, l) in &self.taken {
                a.free(s, l - s + 1);
            }
        }
        r
    }
}

impl Drop for DmaMapping {
    fn drop(&mut self) {
        if self.size != 0 {
            let _ = self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(vaddr: u64, iova: u64, size: u64) -> BatchEntry {
        BatchEntry { vaddr, iova, size, slot: 0 }
    }

    #[test]
    fn coalesces_runs_contiguous_in_both_spaces() {
        let entries: Vec<BatchEntry> =
            (0..1000).map(|i| e(0x7000_0000 + i * 4096, 0x10_0000 + i * 4096, 4096)).collect();
        let runs: Vec<_> = coalesce(&entries).collect();
        assert_eq!(runs, vec![e(0x7000_0000, 0x10_0000, 1000 * 4096)]);
    }

    #[test]
    fn breaks_runs_at_gaps_in_either_space() {
        let entries = [
            e(0x1000, 0x1000, 0x1000),
            e(0x2000, 0x2000, 0x1000),
            e(0x3000, 0x9000, 0x1000), // IOVA jumps
            e(0x5000, 0xa000, 0x1000), // vaddr jumps
            e(0x6000, 0xb000, 0x1000),
        ];
        let runs: Vec<_> = coalesce(&entries).collect();
        assert_eq!(
            runs,
            vec![e(0x1000, 0x1000, 0x2000), e(0x3000, 0x9000, 0x1000), e(0x5000, 0xa000, 0x2000)]
        );
        assert_eq!(coalesce(&[]).count(), 0);
        let wrap = [e(u64::MAX - 0xfff, 0, 0x1000), e(0, 0x1000, 0x1000)];
        assert_eq!(coalesce(&wrap).count(), 2, "no run across the end of the space");
    }

    #[test]
    fn never_merges_across_slots() {
        let entries = [
            BatchEntry { slot: 1, ..e(0x1000, 0x1000, 0x1000) },
            BatchEntry { slot: 1, ..e(0x2000, 0x2000, 0x1000) },
            BatchEntry { slot: 2, ..e(0x3000, 0x3000, 0x1000) },
        ];
        let runs: Vec<_> = coalesce(&entries).collect();
        assert_eq!(runs.len(), 2);
        assert_eq!((runs[0].size, runs[1].slot), (0x2000, 2));
    }
}
