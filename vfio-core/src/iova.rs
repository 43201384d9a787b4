//! An IOVA allocator: hands out device addresses inside the ranges the IOMMU accepts,
//! aligned as asked, and takes them back for reuse.
//!
//! It is pure bookkeeping (no kernel calls): a sorted list of free intervals, first fit,
//! neighbours merged on free. IOVA page 0 is kept out by default, because many devices
//! and drivers treat DMA address 0 as "no address".

use crate::info::IovaRange;

/// Free IOVA space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IovaAllocator {
    /// Free intervals `(start, last)`, inclusive, sorted and disjoint; two are adjacent
    /// only across a boundary between ranges.
    free: Vec<(u64, u64)>,
    /// The usable ranges, trimmed to whole granules: a mapping must lie inside one of
    /// them (the kernel refuses one that straddles two, even two that touch).
    ranges: Vec<(u64, u64)>,
    /// The smallest granule: every allocation is aligned to and rounded up to it.
    granule: u64,
}

impl IovaAllocator {
    /// An allocator over `ranges` (as the kernel reports them; empty means the whole
    /// 64-bit space) with allocations in multiples of `granule` (the IOMMU's smallest page
    /// size, a power of two). The first granule (IOVA 0) is reserved.
    pub fn new(ranges: &[IovaRange], granule: u64) -> Self {
        let granule = granule.max(1).next_power_of_two();
        let whole = [IovaRange { start: 0, last: u64::MAX }];
        let ranges = if ranges.is_empty() { &whole[..] } else { ranges };
        let mut a = IovaAllocator {
            free: Vec::with_capacity(ranges.len() + 16),
            ranges: Vec::with_capacity(ranges.len()),
            granule,
        };
        let mut sorted: Vec<IovaRange> = ranges.to_vec();
        sorted.sort_by_key(|r| r.start);
        for r in sorted {
            // Trim each range to whole granules.
            let start = r.start.checked_add(granule - 1).map(|s| s & !(granule - 1));
            let last = match r.last.checked_add(1) {
                None => Some(u64::MAX),
                Some(end) => (end & !(granule - 1)).checked_sub(1),
            };
            if let (Some(start), Some(last)) = (start, last) {
                if last >= start {
                    a.ranges.push((start, last));
                    a.insert_free(start, last);
                }
            }
        }
        a.reserve(0, granule);
        a
    }

    /// The allocation granule.
    pub fn granule(&self) -> u64 {
        self.granule
    }

    /// Keeps everything at or above `limit` out (a device with a narrow DMA mask, such as
    /// QEMU's edu with 28 bits: `limit = 1 << 28`).
    pub fn limit(&mut self, limit: u64) {
        if limit == 0 {
            self.free.clear();
            return;
        }
        self.free.retain(|&(s, _)| s < limit);
        if let Some(last) = self.free.last_mut() {
            last.1 = last.1.min(limit - 1);
        }
    }

    /// Rounds a size up to the granule (`None` on overflow or zero).
    fn round(&self, size: u64) -> Option<u64> {
        if size == 0 {
            return None;
        }
        size.checked_add(self.granule - 1).map(|s| s & !(self.granule - 1))
    }

    /// Allocates `size` bytes (rounded up to the granule) aligned to `align` (rounded up to
    /// a power of two and at least the granule). First fit, lowest address.
    pub fn alloc(&mut self, size: u64, align: u64) -> Option<u64> {
        let size = self.round(size)?;
        let align = align.max(self.granule).checked_next_power_of_two()?;
        for i in 0..self.free.len() {
            let (s, l) = self.free[i];
            let Some(start) = s.checked_add(align - 1).map(|v| v & !(align - 1)) else {
                continue;
            };
            if start < s || start > l {
                continue;
            }
            let Some(last) = start.checked_add(size - 1) else { continue };
            if last <= l {
                self.take(i, start, last);
                return Some(start);
            }
        }
        None
    }

    /// Takes `[iova, iova + size)` (rounded to the granule) if it is wholly free.
    pub fn alloc_at(&mut self, iova: u64, size: u64) -> bool {
        let Some(size) = self.round(size) else { return false };
        if iova & (self.granule - 1) != 0 {
            return false;
        }
        let Some(last) = iova.checked_add(size - 1) else { return false };
        match self.free.iter().position(|&(s, l)| s <= iova && last <= l) {
            Some(i) => {
                self.take(i, iova, last);
                true
            }
            None => false,
        }
    }

    /// Takes every free part of `[iova, iova + size)` (rounded to the granule) and returns
    /// the parts taken, so that exactly those can be given back ([`IovaAllocator::free`]
    /// each). Parts already in use, kept out (IOVA 0, above a limit) or outside the
    /// ranges are left as they are: a caller's mapping at a fixed address (guest RAM at
    /// guest-physical 0) is recorded wherever the allocator could otherwise have handed
    /// the space out. `None` for a misaligned, empty or overflowing range.
    pub fn take_free(&mut self, iova: u64, size: u64) -> Option<Vec<(u64, u64)>> {
        let size = self.round(size)?;
        if iova & (self.granule - 1) != 0 {
            return None;
        }
        let last = iova.checked_add(size - 1)?;
        let taken: Vec<(u64, u64)> = self
            .free
            .iter()
            .filter(|&&(s, l)| l >= iova && s <= last)
            .map(|&(s, l)| (s.max(iova), l.min(last)))
            .collect();
        self.reserve(iova, size);
        Some(taken)
    }

    /// Marks `[iova, iova + size)` as used wherever it is free (no error when part of it
    /// is already used or outside the ranges).
    pub fn reserve(&mut self, iova: u64, size: u64) {
        let Some(size) = self.round(size) else { return };
        let last = iova.saturating_add(size - 1);
        let mut out = Vec::with_capacity(self.free.len() + 1);
        for &(s, l) in &self.free {
            if l < iova || s > last {
                out.push((s, l));
                continue;
            }
            if s < iova {
                out.push((s, iova - 1));
            }
            if l > last {
                out.push((last + 1, l));
            }
        }
        self.free = out;
    }

    /// Gives back `[iova, iova + size)`, which must have come from `alloc`/`alloc_at`.
    pub fn free(&mut self, iova: u64, size: u64) {
        let Some(size) = self.round(size) else { return };
        let Some(last) = iova.checked_add(size - 1) else { return };
        self.insert_free(iova, last);
    }

    /// Total free bytes (saturating).
    pub fn free_bytes(&self) -> u64 {
        self.free.iter().fold(0u64, |acc, &(s, l)| acc.saturating_add(l - s).saturating_add(1))
    }

    /// The free intervals, inclusive.
    pub fn free_ranges(&self) -> impl Iterator<Item = IovaRange> + '_ {
        self.free.iter().map(|&(start, last)| IovaRange { start, last })
    }

    fn take(&mut self, i: usize, start: u64, last: u64) {
        let (s, l) = self.free[i];
        match (s == start, l == last) {
            (true, true) => {
                self.free.remove(i);
            }
            (true, false) => self.free[i].0 = last + 1,
            (false, true) => self.free[i].1 = start - 1,
            (false, false) => {
                self.free[i].1 = start - 1;
                self.free.insert(i + 1, (last + 1, l));
            }
        }
    }

    /// Whether `a` and `b` lie in the same usable range.
    fn same_range(&self, a: u64, b: u64) -> bool {
        self.ranges.iter().any(|&(s, l)| s <= a && a <= l && s <= b && b <= l)
    }

    fn insert_free(&mut self, start: u64, last: u64) {
        let i = self.free.partition_point(|&(s, _)| s < start);
        // Refuse overlaps with free space (a double free): keep the list consistent.
        if i > 0 && self.free[i - 1].1 >= start {
            return;
        }
        if i < self.free.len() && self.free[i].0 <= last {
            return;
        }
        let merge_prev = i > 0
            && self.free[i - 1].1.checked_add(1) == Some(start)
            && self.same_range(self.free[i - 1].1, start);
        let merge_next = i < self.free.len()
            && last.checked_add(1) == Some(self.free[i].0)
            && self.same_range(last, self.free[i].0);
        match (merge_prev, merge_next) {
            (true, true) => {
                self.free[i - 1].1 = self.free[i].1;
                self.free.remove(i);
            }
            (true, false) => self.free[i - 1].1 = last,
            (false, true) => self.free[i].0 = start,
            (false, false) => self.free.insert(i, (start, last)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K4: u64 = 4096;

    fn x86() -> Vec<IovaRange> {
        vec![
            IovaRange { start: 0, last: 0xfedf_ffff },
            IovaRange { start: 0xfef0_0000, last: (1 << 48) - 1 },
        ]
    }

    #[test]
    fn skips_page_zero_and_aligns() {
        let mut a = IovaAllocator::new(&x86(), K4);
        assert_eq!(a.alloc(100, 0), Some(0x1000));
        assert_eq!(a.alloc(K4, 1 << 21), Some(1 << 21));
        assert_eq!(a.alloc(K4, 0), Some(0x2000));
    }

    #[test]
    fn respects_the_hole_in_the_ranges() {
        let mut a = IovaAllocator::new(&x86(), K4);
        a.reserve(0, 0xfed0_0000);
        // 1 MiB left below the hole; 2 MiB must go above it.
        let iova = a.alloc(2 << 20, 0).unwrap();
        assert!(iova >= 0xfef0_0000, "{iova:#x}");
        assert!(!a.alloc_at(0xfee0_0000, K4), "the MSI window is not allocatable");
    }

    #[test]
    fn reuses_freed_space_and_merges() {
        let mut a = IovaAllocator::new(&[IovaRange { start: 0, last: 0xffff }], K4);
        let x: Vec<u64> = (0..15).map(|_| a.alloc(K4, 0).unwrap()).collect();
        assert_eq!(a.alloc(K4, 0), None, "full");
        a.free(x[3], K4);
        a.free(x[4], K4);
        assert_eq!(a.alloc(2 * K4, 0), Some(x[3]), "two freed neighbours merged");
        for &i in &x[5..] {
            a.free(i, K4);
        }
        assert_eq!(a.free_bytes(), 10 * K4);
        assert_eq!(a.free_ranges().count(), 1);
    }

    #[test]
    fn alloc_at_and_double_free_keep_consistency() {
        let mut a = IovaAllocator::new(&[], K4);
        assert!(a.alloc_at(0x10000, 3 * K4));
        assert!(!a.alloc_at(0x11000, K4), "already taken");
        assert!(!a.alloc_at(0x10001, K4), "misaligned");
        a.free(0x10000, 3 * K4);
        let before = a.clone();
        a.free(0x10000, K4);
        assert_eq!(a, before, "double free ignored");
    }

    /// Found by fuzzing: two ranges that touch must stay two, since the kernel refuses a
    /// mapping that straddles ranges (vfio_iommu_iova_dma_valid wants one range).
    #[test]
    fn touching_ranges_are_not_merged() {
        let ranges = [
            IovaRange { start: 0x10_0000, last: 0x1f_ffff },
            IovaRange { start: 0x20_0000, last: 0x2f_ffff },
        ];
        let mut a = IovaAllocator::new(&ranges, K4);
        assert_eq!(a.free_ranges().count(), 2);
        assert_eq!(a.alloc(0x18_0000, 0), None, "larger than either range");
        let x = a.alloc(0x10_0000, 0).unwrap();
        assert!(ranges.iter().any(|r| r.start <= x && x + 0xf_ffff <= r.last));
        a.free(x, 0x10_0000);
        assert_eq!(a.free_ranges().count(), 2, "freeing does not merge across the boundary");
        assert_eq!(a.free_bytes(), 0x20_0000);
    }

    #[test]
    fn limit_and_edges() {
        let mut a = IovaAllocator::new(&[], K4);
        a.limit(1 << 28);
        assert_eq!(a.alloc(1 << 28, 0), None);
        assert_eq!(a.alloc((1 << 28) - K4, 0), Some(K4));
        assert_eq!(a.alloc(0, 0), None);
        let mut b = IovaAllocator::new(&[], K4);
        assert_eq!(b.alloc(u64::MAX, 0), None);
        assert!(b.alloc_at(u64::MAX - K4 + 1, K4), "last page of the space");
        assert!(!b.alloc_at(u64::MAX - K4 + 1, 2 * K4));
    }
}
