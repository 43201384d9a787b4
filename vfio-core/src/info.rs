//! Pure decoders of what VFIO and iommufd info ioctls return: the fixed structs and
//! their capability chains (`vfio_info_cap_header` lists), straight from the bytes.
//!
//! The kernel links capabilities by offsets from the start of the info struct. A chain
//! from a buggy or hostile kernel (or a fuzzer) cannot make these functions panic, loop
//! or read out of bounds: a pointer outside the buffer, a pointer backwards or to itself,
//! or more than [`MAX_CAPS`] entries ends the walk with [`ChainError`].

use std::fmt;

use bitflags::bitflags;
use vfio_bindings::bindings::vfio::{
    VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_BAR1_REGION_INDEX, VFIO_PCI_BAR2_REGION_INDEX,
    VFIO_PCI_BAR3_REGION_INDEX, VFIO_PCI_BAR4_REGION_INDEX, VFIO_PCI_BAR5_REGION_INDEX,
    VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_NUM_REGIONS, VFIO_PCI_ROM_REGION_INDEX,
    VFIO_PCI_VGA_REGION_INDEX,
};

use crate::bytes::{ne_u16, ne_u32, ne_u64};

/// The most capabilities a chain may hold before it is treated as a loop.
pub const MAX_CAPS: usize = 64;

/// Why a capability chain could not be walked to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainError {
    /// A `next` offset points outside the buffer (or a header does not fit).
    OutOfBounds {
        /// The offending offset.
        offset: u32,
    },
    /// A `next` offset points backwards or to itself, which would loop.
    Loop {
        /// The offending offset.
        offset: u32,
    },
    /// More than [`MAX_CAPS`] capabilities.
    TooLong,
}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainError::OutOfBounds { offset } => {
                write!(f, "capability at offset {offset:#x} lies outside the returned buffer")
            }
            ChainError::Loop { offset } => {
                write!(f, "capability chain loops back to offset {offset:#x}")
            }
            ChainError::TooLong => write!(f, "capability chain longer than {MAX_CAPS} entries"),
        }
    }
}

/// One capability of a chain: its id, version, and body bytes (after the 8-byte header,
/// up to the next capability or the end of the buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawCap<'a> {
    /// Capability id.
    pub id: u16,
    /// Capability version.
    pub version: u16,
    /// Offset of the header from the start of the info struct.
    pub offset: u32,
    /// The bytes after the header.
    pub body: &'a [u8],
}

/// Walks a capability chain starting at `first` (0: no chain).
pub fn walk_caps(buf: &[u8], first: u32) -> Result<Vec<RawCap<'_>>, ChainError> {
    let mut caps = Vec::new();
    let mut off = first;
    let mut min_next = 0u32;
    while off != 0 {
        if caps.len() >= MAX_CAPS {
            return Err(ChainError::TooLong);
        }
        if off < min_next {
            return Err(ChainError::Loop { offset: off });
        }
        let o = off as usize;
        let (Some(id), Some(version), Some(next)) =
            (ne_u16(buf, o), ne_u16(buf, o + 2), ne_u32(buf, o + 4))
        else {
            return Err(ChainError::OutOfBounds { offset: off });
        };
        let end = if next > off { (next as usize).min(buf.len()) } else { buf.len() };
        caps.push(RawCap { id, version, offset: off, body: &buf[o + 8..end.max(o + 8)] });
        min_next = off + 8;
        off = next;
    }
    Ok(caps)
}

/// Which region of a device a call means: the `index` of `VFIO_DEVICE_GET_REGION_INFO`.
///
/// vfio-pci gives every device the same nine regions, numbered as the kernel's
/// `VFIO_PCI_*_REGION_INDEX`: the six BARs ([`BAR0`](Self::BAR0) to
/// [`BAR5`](Self::BAR5)), the expansion [`ROM`](Self::ROM), [`CONFIG`](Self::CONFIG) space
/// and the legacy [`VGA`](Self::VGA) ranges; a region the device lacks has size 0 (VGA
/// may be absent altogether). Device-specific regions (IGD OpRegion, EDID, migration) come
/// after them, from [`FIRST_DEVICE_SPECIFIC`](Self::FIRST_DEVICE_SPECIFIC), and are told
/// apart by their type ([`RegionInfo::region_type`]), not by their number.
///
/// The calls that take a region index take `impl Into<RegionIndex>`, so a number works
/// too (`device.bar(0)` is `device.bar(RegionIndex::BAR0)`). It displays as the number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(transparent))]
pub struct RegionIndex(u32);

impl RegionIndex {
    /// BAR 0.
    pub const BAR0: RegionIndex = RegionIndex(VFIO_PCI_BAR0_REGION_INDEX);
    /// BAR 1.
    pub const BAR1: RegionIndex = RegionIndex(VFIO_PCI_BAR1_REGION_INDEX);
    /// BAR 2.
    pub const BAR2: RegionIndex = RegionIndex(VFIO_PCI_BAR2_REGION_INDEX);
    /// BAR 3.
    pub const BAR3: RegionIndex = RegionIndex(VFIO_PCI_BAR3_REGION_INDEX);
    /// BAR 4.
    pub const BAR4: RegionIndex = RegionIndex(VFIO_PCI_BAR4_REGION_INDEX);
    /// BAR 5.
    pub const BAR5: RegionIndex = RegionIndex(VFIO_PCI_BAR5_REGION_INDEX);
    /// The expansion ROM (read-only).
    pub const ROM: RegionIndex = RegionIndex(VFIO_PCI_ROM_REGION_INDEX);
    /// PCI config space (256 bytes, or 4 KiB for PCI Express).
    pub const CONFIG: RegionIndex = RegionIndex(VFIO_PCI_CONFIG_REGION_INDEX);
    /// The legacy VGA ranges (VGA devices only).
    pub const VGA: RegionIndex = RegionIndex(VFIO_PCI_VGA_REGION_INDEX);
    /// The first device-specific region, after the nine vfio-pci ones.
    pub const FIRST_DEVICE_SPECIFIC: RegionIndex = RegionIndex(VFIO_PCI_NUM_REGIONS);

    /// The region the kernel numbers `raw`.
    pub const fn new(raw: u32) -> Self {
        RegionIndex(raw)
    }

    /// The kernel's index number.
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// The BAR this region is (0 to 5), `None` for the others.
    pub const fn bar_number(self) -> Option<u8> {
        if self.0 <= VFIO_PCI_BAR5_REGION_INDEX {
            Some(self.0 as u8)
        } else {
            None
        }
    }

    /// vfio-pci's name of the region: `BAR0`..`BAR5`, `ROM`, `CONFIG`, `VGA`; `None` for
    /// a device-specific region.
    pub const fn name(self) -> Option<&'static str> {
        const NAMES: [&str; 9] =
            ["BAR0", "BAR1", "BAR2", "BAR3", "BAR4", "BAR5", "ROM", "CONFIG", "VGA"];
        if self.0 < VFIO_PCI_NUM_REGIONS {
            Some(NAMES[self.0 as usize])
        } else {
            None
        }
    }
}

impl From<u32> for RegionIndex {
    fn from(raw: u32) -> Self {
        RegionIndex(raw)
    }
}

impl From<RegionIndex> for u32 {
    fn from(index: RegionIndex) -> Self {
        index.0
    }
}

impl fmt::Display for RegionIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for RegionIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "RegionIndex({})", self.0),
        }
    }
}

bitflags! {
    /// `vfio_region_info.flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct RegionFlags: u32 {
        /// Readable with pread.
        const READ = 1;
        /// Writable with pwrite.
        const WRITE = 2;
        /// Can be mmap'd (see the sparse areas).
        const MMAP = 4;
        /// Has a capability chain.
        const CAPS = 8;
    }
}

/// One mmap-able area of a region (from the sparse-mmap capability, or the whole region).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct MmapArea {
    /// Offset inside the region.
    pub offset: u64,
    /// Length in bytes.
    pub size: u64,
}

/// A decoded `VFIO_DEVICE_GET_REGION_INFO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionInfo {
    /// Region index.
    pub index: RegionIndex,
    /// Access flags.
    pub flags: RegionFlags,
    /// Size in bytes.
    pub size: u64,
    /// Offset of the region in the device fd (for pread/pwrite/mmap).
    pub offset: u64,
    /// Areas that may be mmap'd: the sparse-mmap areas, or the whole region when it is
    /// mmap-able without a sparse capability, or none.
    pub mmap_areas: Vec<MmapArea>,
    /// The MSI-X table may be mmap'd (`VFIO_REGION_INFO_CAP_MSIX_MAPPABLE`).
    pub msix_mappable: bool,
    /// Device-specific region type and subtype (`VFIO_REGION_INFO_CAP_TYPE`).
    pub region_type: Option<(u32, u32)>,
    /// The chain could not be walked to its end (what was found before is kept).
    pub chain_error: Option<ChainError>,
}

impl RegionInfo {
    /// A region the device does not have (size 0, no access).
    pub fn absent(index: RegionIndex) -> Self {
        RegionInfo {
            index,
            flags: RegionFlags::empty(),
            size: 0,
            offset: 0,
            mmap_areas: Vec::new(),
            msix_mappable: false,
            region_type: None,
            chain_error: None,
        }
    }
}

/// Size of `struct vfio_region_info`.
pub const REGION_INFO_SIZE: usize = 32;

/// Decodes a `vfio_region_info` and its capability chain. `None` when the buffer is too
/// short for the fixed struct.
pub fn parse_region_info(buf: &[u8]) -> Option<RegionInfo> {
    let flags = RegionFlags::from_bits_retain(ne_u32(buf, 4)?);
    let index = RegionIndex(ne_u32(buf, 8)?);
    let cap_offset = ne_u32(buf, 12)?;
    let size = ne_u64(buf, 16)?;
    let offset = ne_u64(buf, 24)?;
    let mut info = RegionInfo {
        index,
        flags,
        size,
        offset,
        mmap_areas: Vec::new(),
        msix_mappable: false,
        region_type: None,
        chain_error: None,
    };
    let mut sparse = None;
    if flags.contains(RegionFlags::CAPS) {
        let (caps, err) = match walk_caps(buf, cap_offset) {
            Ok(c) => (c, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        info.chain_error = err;
        for cap in caps {
            match cap.id {
                1 => {
                    // SPARSE_MMAP: nr_areas, reserved, then {offset, size} pairs.
                    let n = ne_u32(cap.body, 0).unwrap_or(0) as usize;
                    let areas: Vec<MmapArea> = (0..n.min(cap.body.len() / 16))
                        .filter_map(|i| {
                            let at = 8 + 16 * i;
                            Some(MmapArea {
                                offset: ne_u64(cap.body, at)?,
                                size: ne_u64(cap.body, at + 8)?,
                            })
                        })
                        .collect();
                    sparse = Some(areas);
                }
                2 => {
                    if let (Some(t), Some(s)) = (ne_u32(cap.body, 0), ne_u32(cap.body, 4)) {
                        info.region_type = Some((t, s));
                    }
                }
                3 => info.msix_mappable = true,
                _ => {}
            }
        }
    }
    if flags.contains(RegionFlags::MMAP) {
        info.mmap_areas = match sparse {
            Some(areas) => areas
                .into_iter()
                .filter(|a| a.size > 0 && a.offset.checked_add(a.size).is_some_and(|e| e <= size))
                .collect(),
            None if size > 0 => vec![MmapArea { offset: 0, size }],
            None => Vec::new(),
        };
    }
    Some(info)
}

/// One usable IOVA range, inclusive of both ends as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct IovaRange {
    /// First usable IOVA.
    pub start: u64,
    /// Last usable IOVA (inclusive).
    pub last: u64,
}

/// A decoded `VFIO_IOMMU_GET_INFO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IommuInfo {
    /// Bitmap of supported IOMMU page sizes (0 when not reported).
    pub page_sizes: u64,
    /// Usable IOVA ranges (empty: not reported, meaning the whole 64-bit space).
    pub iova_ranges: Vec<IovaRange>,
    /// How many more DMA mappings the container accepts (`dma_entry_limit` minus mappings).
    pub dma_avail: Option<u32>,
    /// The chain could not be walked to its end.
    pub chain_error: Option<ChainError>,
}

/// Size of `struct vfio_iommu_type1_info`.
pub const IOMMU_INFO_SIZE: usize = 24;

/// Decodes a `vfio_iommu_type1_info` and its capability chain.
pub fn parse_iommu_info(buf: &[u8]) -> Option<IommuInfo> {
    let flags = ne_u32(buf, 4)?;
    let pgsizes = ne_u64(buf, 8)?;
    let cap_offset = ne_u32(buf, 16)?;
    let mut info = IommuInfo {
        page_sizes: if flags & 1 != 0 { pgsizes } else { 0 },
        iova_ranges: Vec::new(),
        dma_avail: None,
        chain_error: None,
    };
    if flags & 2 != 0 {
        match walk_caps(buf, cap_offset) {
            Ok(caps) => {
                for cap in caps {
                    match cap.id {
                        1 => {
                            let n = ne_u32(cap.body, 0).unwrap_or(0) as usize;
                            info.iova_ranges = (0..n.min(cap.body.len() / 16))
                                .filter_map(|i| {
                                    let at = 8 + 16 * i;
                                    Some(IovaRange {
                                        start: ne_u64(cap.body, at)?,
                                        last: ne_u64(cap.body, at + 8)?,
                                    })
                                })
                                .filter(|r| r.start <= r.last)
                                .collect();
                        }
                        3 => info.dma_avail = ne_u32(cap.body, 0),
                        _ => {}
                    }
                }
            }
            Err(e) => info.chain_error = Some(e),
        }
    }
    Some(info)
}

/// A decoded `VFIO_DEVICE_GET_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceInfo {
    /// `VFIO_DEVICE_FLAGS_*`.
    pub flags: u32,
    /// Number of regions.
    pub num_regions: u32,
    /// Number of IRQ indexes.
    pub num_irqs: u32,
}

impl DeviceInfo {
    /// `VFIO_DEVICE_RESET` is available.
    pub fn can_reset(&self) -> bool {
        self.flags & 1 != 0
    }
    /// It is a PCI device.
    pub fn is_pci(&self) -> bool {
        self.flags & 2 != 0
    }
}

/// Size of `struct vfio_device_info`.
pub const DEVICE_INFO_SIZE: usize = 24;

/// Decodes a `vfio_device_info`.
pub fn parse_device_info(buf: &[u8]) -> Option<DeviceInfo> {
    Some(DeviceInfo {
        flags: ne_u32(buf, 4)?,
        num_regions: ne_u32(buf, 8)?,
        num_irqs: ne_u32(buf, 12)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_indexes_are_vfio_pci_s() {
        assert_eq!(RegionIndex::BAR0.raw(), 0);
        assert_eq!(RegionIndex::BAR5.bar_number(), Some(5));
        assert_eq!(RegionIndex::ROM, RegionIndex::from(6));
        assert_eq!(u32::from(RegionIndex::CONFIG), 7);
        assert_eq!(RegionIndex::VGA.raw(), 8);
        assert_eq!(RegionIndex::FIRST_DEVICE_SPECIFIC.raw(), 9);
        assert_eq!(RegionIndex::CONFIG.bar_number(), None);
        let names: Vec<_> = (0..10).map(|i| RegionIndex::new(i).name()).collect();
        assert_eq!(names[..3], [Some("BAR0"), Some("BAR1"), Some("BAR2")]);
        assert_eq!(names[6..], [Some("ROM"), Some("CONFIG"), Some("VGA"), None]);
        assert_eq!(format!("{} {}", RegionIndex::ROM, RegionIndex::new(12)), "6 12");
        assert_eq!(
            format!("{:?} {:?}", RegionIndex::ROM, RegionIndex::new(12)),
            "ROM RegionIndex(12)"
        );
        assert!(RegionIndex::VGA < RegionIndex::FIRST_DEVICE_SPECIFIC);
    }

    fn put32(b: &mut [u8], off: usize, v: u32) {
        b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }
    fn put64(b: &mut [u8], off: usize, v: u64) {
        b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    }
    fn cap(b: &mut [u8], off: usize, id: u16, next: u32) {
        b[off..off + 2].copy_from_slice(&id.to_ne_bytes());
        b[off + 2..off + 4].copy_from_slice(&1u16.to_ne_bytes());
        put32(b, off + 4, next);
    }

    fn region_with_sparse() -> Vec<u8> {
        let mut b = vec![0u8; 32 + 8 + 8 + 32 + 8 + 8];
        let len = b.len() as u32;
        put32(&mut b, 0, len);
        put32(&mut b, 4, (RegionFlags::READ | RegionFlags::MMAP | RegionFlags::CAPS).bits());
        put32(&mut b, 12, 32);
        put64(&mut b, 16, 0x4000);
        put64(&mut b, 24, 1 << 40);
        cap(&mut b, 32, 1, 80);
        put32(&mut b, 40, 2);
        put64(&mut b, 48, 0);
        put64(&mut b, 56, 0x2000);
        put64(&mut b, 64, 0x3000);
        put64(&mut b, 72, 0x1000);
        cap(&mut b, 80, 2, 0);
        put32(&mut b, 88, 3);
        put32(&mut b, 92, 1);
        b
    }

    #[test]
    fn region_sparse_areas_and_type() {
        let r = parse_region_info(&region_with_sparse()).unwrap();
        assert_eq!(r.offset, 1 << 40);
        assert_eq!(
            r.mmap_areas,
            vec![MmapArea { offset: 0, size: 0x2000 }, MmapArea { offset: 0x3000, size: 0x1000 }]
        );
        assert_eq!(r.region_type, Some((3, 1)));
        assert_eq!(r.chain_error, None);
    }

    #[test]
    fn region_without_caps_maps_whole() {
        let mut b = vec![0u8; 32];
        put32(&mut b, 4, (RegionFlags::READ | RegionFlags::MMAP).bits());
        put64(&mut b, 16, 0x100000);
        let r = parse_region_info(&b).unwrap();
        assert_eq!(r.mmap_areas, vec![MmapArea { offset: 0, size: 0x100000 }]);
        assert!(parse_region_info(&b[..31]).is_none());
    }

    #[test]
    fn sparse_area_beyond_region_is_dropped() {
        let mut b = region_with_sparse();
        put64(&mut b, 64, 0x3800); // 0x3800 + 0x1000 > 0x4000
        let r = parse_region_info(&b).unwrap();
        assert_eq!(r.mmap_areas, vec![MmapArea { offset: 0, size: 0x2000 }]);
    }

    #[test]
    fn chain_loops_and_out_of_bounds_are_reported() {
        let mut b = region_with_sparse();
        put32(&mut b, 84, 32); // second cap points back to the first
        assert_eq!(
            parse_region_info(&b).unwrap().chain_error,
            Some(ChainError::Loop { offset: 32 })
        );
        let mut b = region_with_sparse();
        put32(&mut b, 84, 4000);
        assert_eq!(
            parse_region_info(&b).unwrap().chain_error,
            Some(ChainError::OutOfBounds { offset: 4000 })
        );
        let mut b = region_with_sparse();
        put32(&mut b, 36, 32); // first cap points to itself
        assert_eq!(
            parse_region_info(&b).unwrap().chain_error,
            Some(ChainError::Loop { offset: 32 })
        );
    }

    #[test]
    fn iommu_info_ranges_pgsizes_and_avail() {
        let mut b = vec![0u8; 24 + 8 + 8 + 32 + 8 + 4 + 4];
        put32(&mut b, 4, 3);
        put64(&mut b, 8, 0x40201000);
        put32(&mut b, 16, 24);
        cap(&mut b, 24, 1, 72);
        put32(&mut b, 32, 2);
        put64(&mut b, 40, 0);
        put64(&mut b, 48, 0xfedf_ffff);
        put64(&mut b, 56, 0xfef0_0000);
        put64(&mut b, 64, (1 << 48) - 1);
        cap(&mut b, 72, 3, 0);
        put32(&mut b, 80, 65535);
        let i = parse_iommu_info(&b).unwrap();
        assert_eq!(i.page_sizes, 0x40201000);
        assert_eq!(i.iova_ranges.len(), 2);
        assert_eq!(i.iova_ranges[1], IovaRange { start: 0xfef0_0000, last: (1 << 48) - 1 });
        assert_eq!(i.dma_avail, Some(65535));
    }

    #[test]
    fn nr_areas_larger_than_the_body_is_clamped() {
        let mut b = region_with_sparse();
        put32(&mut b, 40, u32::MAX);
        let r = parse_region_info(&b).unwrap();
        assert!(r.mmap_areas.len() <= 3);
    }
}
