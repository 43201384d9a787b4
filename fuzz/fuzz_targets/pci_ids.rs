//! Fuzzes the `pci.ids` parser and its lookups.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfio_core::host::pci_ids::PciIds;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let ids = PciIds::parse(&text);
    let _ = ids.vendor(0x8086);
    let _ = ids.device(0x8086, 0x1234);
    let _ = ids.subsystem(0x8086, 0x1234, 0x8086, 0);
    let _ = ids.class(0x030000);
    let _ = ids.prog_if(0x0c0330);
    // A second parse of the same text gives the same database.
    assert_eq!(format!("{ids:?}"), format!("{:?}", PciIds::parse(&text)));
});
