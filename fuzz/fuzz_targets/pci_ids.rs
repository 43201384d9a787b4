//! Fuzzes the `pci.ids` parser and its lookups.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfio_core::host::pci_ids::PciIds;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let ids = PciIds::parse(&text);
    // Lookups with ids taken from the input: every name found comes from the text.
    let id = |i: usize| data.get(i).copied().unwrap_or(0) as u16 * 0x101;
    let names = [
        ids.vendor(id(0)),
        ids.device(id(0), id(1)),
        ids.subsystem(id(0), id(1), id(2), id(3)),
        ids.class((id(0) as u32) << 8),
        ids.prog_if((id(0) as u32) << 8 | id(1) as u32 & 0xff),
    ];
    for n in names.into_iter().flatten() {
        assert!(text.contains(n), "{n:?} is not in the input");
        assert!(!n.contains('\n'));
    }
});
