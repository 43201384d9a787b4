//! Fuzzes the option ROM parser: whole images, and prefixes with a claimed total length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfio_core::rom::{parse, parse_prefix};

fuzz_target!(|data: &[u8]| {
    let r = parse(data);
    let _ = serde_json::to_string(&r);
    assert!(r.images.len() <= vfio_core::rom::MAX_IMAGES);
    // The first 8 bytes claim a total length; the rest is the prefix read.
    if data.len() >= 8 {
        let total = u64::from_le_bytes(data[..8].try_into().unwrap());
        let mut r = parse_prefix(&data[8..], total);
        r.check_ids(0x10de, 0x1280);
        assert!(r.examined_length <= total);
    }
});
