//! Fuzzes the config-space decoder and both capability walkers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfio_core::pci::config::{decode, walk_chains, ConfigSpace};

fuzz_target!(|data: &[u8]| {
    let cs = ConfigSpace::new(data);
    let (caps, _diags) = walk_chains(&cs);
    assert!(caps.len() <= 48 + 960);
    if let Ok(d) = decode(data) {
        let _ = serde_json::to_string(&d);
    } else {
        assert!(data.len() < 64);
    }
});
