//! Fuzzes the readers of single sysfs attributes: hexadecimal ids and classes
//! (`parse_hex`), VF counts (`sriov_totalvfs`, `sriov_numvfs`) and mediated device type
//! attributes (`name`, `description`, `device_api`, `available_instances`) and mdev
//! parent names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfio_core::host::mdev::{parse_mdev_type, MdevParent, MdevTypeText};
use vfio_core::host::parse_hex;
use vfio_core::host::sriov::parse_vf_count;
use vfio_core::PciAddress;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    if let Some(v) = parse_hex(&text) {
        assert_eq!(parse_hex(&format!("{v:#x}\n")), Some(v));
        assert_eq!(parse_hex(&format!("{v:x}")), Some(v));
        assert_eq!(parse_hex(&format!("0x{v:06x}")), Some(v));
    }

    match parse_vf_count(&text, "sriov_numvfs") {
        Ok(n) => {
            assert_eq!(parse_vf_count(&format!("{n}\n"), "x").ok(), Some(n));
            assert_eq!(text.trim().trim_start_matches('+').trim_start_matches('0'), {
                let s = n.to_string();
                if n == 0 {
                    String::new()
                } else {
                    s
                }
            });
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("sriov_numvfs is not a number") && !msg.contains('\n'));
            assert!(msg.len() < 1000);
        }
    }

    // The four attributes, separated by NUL bytes; a missing one is absent.
    let mut parts = text.split('\0').map(|s| Some(s.to_string()));
    let t = MdevTypeText {
        name: parts.next().flatten(),
        description: parts.next().flatten(),
        device_api: parts.next().flatten(),
        available_instances: parts.next().flatten(),
    };
    let parent = MdevParent::from(PciAddress::new(0, 0, 2, 0).unwrap());
    let ty = parse_mdev_type(parent.clone(), "t".into(), &t, vec![]);
    assert_eq!(ty.name.as_deref(), t.name.as_deref().map(str::trim));
    assert_eq!(ty.device_api.as_deref(), t.device_api.as_deref().map(str::trim));
    let avail = t.available_instances.as_deref().map(str::trim);
    assert_eq!(ty.available, avail.and_then(|s| s.parse().ok()).unwrap_or(0));
    assert_eq!(ty.parent, parent);

    // A parent name is one plain path component, and reads back as itself.
    match MdevParent::parse(&text) {
        Ok(p) => {
            let n = p.name();
            assert!(!n.is_empty() && !n.contains('/') && n != "." && n != "..");
            assert_eq!(MdevParent::parse(n).unwrap(), p);
            assert_eq!(p.pci().map(|a| a.to_string()).as_deref().unwrap_or(n), n);
        }
        Err(e) => assert!(!e.to_string().contains('\n')),
    }
});
