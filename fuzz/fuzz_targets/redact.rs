//! Fuzzes the snapshot's redactions that no reader parses further: the kernel log keeps
//! only lines about the IOMMU (each one a line of the input, from `kernel:` on), and
//! config space loses the Device Serial Number's serial and nothing else.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfio_core::host::redact;
use vfio_core::pci::caps::ext_id;
use vfio_core::pci::config::ConfigSpace;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let log = redact::kernel_log(&text);
    assert!(log.len() <= text.len() + text.lines().count());
    for l in log.lines() {
        let lower = l.to_ascii_lowercase();
        assert!(
            ["iommu", "dmar", "amd-vi", "vfio", "remapping"].iter().any(|w| lower.contains(w)),
            "{l:?}"
        );
        assert!(text.contains(l), "{l:?}");
    }
    assert_eq!(redact::kernel_log(&log), log);

    let out = redact::config(data);
    assert_eq!(out.len(), data.len());
    let dsn: Vec<usize> = ConfigSpace::new(data)
        .extended_capabilities()
        .filter_map(Result::ok)
        .filter(|c| c.id == ext_id::DSN)
        .map(|c| c.offset as usize)
        .collect();
    for (i, (a, b)) in data.iter().zip(&out).enumerate() {
        let in_serial = dsn.iter().any(|o| (o + 4..o + 12).contains(&i));
        if in_serial {
            assert_eq!(*b, 0);
        } else {
            assert_eq!(a, b, "byte {i:#x} changed");
        }
    }
    assert_eq!(redact::config(&out), out);
});
