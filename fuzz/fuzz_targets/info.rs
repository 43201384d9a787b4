//! Fuzzes the decoders of VFIO info ioctls: region info, IOMMU info and device info, with
//! their capability chains, and the raw chain walker.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfio_core::info::{
    parse_device_info, parse_iommu_info, parse_region_info, walk_caps, MAX_CAPS,
};

fuzz_target!(|data: &[u8]| {
    if let Some(r) = parse_region_info(data) {
        // Every mmap-able area lies inside the region.
        for a in &r.mmap_areas {
            assert!(a.size > 0 || r.mmap_areas.len() == 1);
            assert!(a.offset.checked_add(a.size).is_some_and(|e| e <= r.size));
        }
    } else {
        assert!(data.len() < 32);
    }
    if let Some(i) = parse_iommu_info(data) {
        assert!(i.iova_ranges.iter().all(|r| r.start <= r.last));
    }
    let _ = parse_device_info(data);
    // The chain walker from every plausible first offset given by the first 4 bytes.
    if data.len() >= 4 {
        let first = u32::from_ne_bytes(data[..4].try_into().unwrap());
        if let Ok(caps) = walk_caps(data, first) {
            assert!(caps.len() <= MAX_CAPS);
            let mut prev = None;
            for c in &caps {
                // Offsets strictly increase and every body lies inside the buffer.
                assert!(prev.is_none_or(|p| c.offset >= p + 8));
                assert!(c.offset as usize + 8 + c.body.len() <= data.len());
                prev = Some(c.offset);
            }
        }
    }
});
