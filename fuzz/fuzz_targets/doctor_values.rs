//! Fuzzes the values `doctor` reads from single files: the kernel release
//! (`/proc/sys/kernel/osrelease`), the locked-memory limit (`/proc/self/limits`), and an
//! IOMMU unit's capability register (Intel `ecap`, AMD `features`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfio_core::host::doctor::{
    ecap_remaps_interrupts, kernel_version, parse_iommu_register, parse_memlock,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    // A release's major and minor print back as a release with the same version.
    if let Some((major, minor)) = kernel_version(&text) {
        assert_eq!(kernel_version(&format!("{major}.{minor}.0-x")), Some((major, minor)));
        assert!(text.starts_with(|c: char| c.is_ascii_digit()));
    }

    // The limit comes from a "Max locked memory" line: its first value, as a number
    // or "unlimited".
    match parse_memlock(&text) {
        Some(v) => {
            let line = text.lines().find(|l| l.starts_with("Max locked memory")).unwrap();
            let soft = line["Max locked memory".len()..].split_whitespace().next().unwrap();
            match v {
                None => assert_eq!(soft, "unlimited"),
                Some(n) => assert_eq!(soft.parse::<u64>().ok(), Some(n)),
            }
            let again = format!("Max locked memory {} x bytes\n", soft);
            assert_eq!(parse_memlock(&again), Some(v));
        }
        // The first such line (the one read) has no value, or not a number.
        None => {
            assert!(!text.lines().find(|l| l.starts_with("Max locked memory")).is_some_and(|l| l
                ["Max locked memory".len()..]
                .split_whitespace()
                .next()
                .is_some_and(|s| s == "unlimited" || s.parse::<u64>().is_ok())))
        }
    }

    // A register prints back in both of sysfs' forms and parses to itself.
    if let Some((first, second)) = parse_iommu_register(&text) {
        let shown = match second {
            Some(s) => format!("{first:x}:{s:x}"),
            None => format!("{first:x}"),
        };
        assert_eq!(parse_iommu_register(&shown), Some((first, second)));
        assert_eq!(parse_iommu_register(&format!("0x{first:x}\n")), Some((first, None)));
        assert_eq!(ecap_remaps_interrupts(first), first & 8 != 0);
    }
});
