//! Fuzzes the VPD resource-list decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfio_core::pci::vpd::decode;

fuzz_target!(|data: &[u8]| {
    let v = decode(data);
    // Every field comes from at least 3 bytes of input.
    assert!(v.fields.len() <= data.len() / 3);
    let _ = serde_json::to_string(&v);
});
