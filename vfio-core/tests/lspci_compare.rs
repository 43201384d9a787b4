//! The config-space decoder against `lspci -vvv`: capability offsets, ids and order,
//! and the key fields a passthrough user reads (MSI vectors and 64-bit, MSI-X table,
//! PCIe port type and link, ACS, SR-IOV, ...). Runs on the images in
//! `tests/data/config` (each with the `lspci -vvv` text captured beside it) and, when
//! `lspci` is installed and the test runs as root, on every PCI device of this machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use vfio_core::pci::config::{decode_with, parse_sysfs_resource, DecodeOptions};

#[path = "common/lspci.rs"]
mod lspci;
use lspci::{compare, damage_markers, live_skip_reason, parse_lspci};
use vfio_core::pci::config::DiagnosticKind;

fn options_for(resource: Option<String>) -> DecodeOptions {
    resource
        .and_then(|t| parse_sysfs_resource(&t).ok())
        .map(|l| DecodeOptions::from_resource(&l))
        .unwrap_or_default()
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/config")
}

#[test]
fn stored_images_agree_with_their_lspci_text() {
    let mut checked = 0;
    let mut caps_seen = 0;
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(data_dir()).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_none_or(|e| e != "bin") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(p.with_extension("lspci")) else { continue };
        let bytes = std::fs::read(&p).unwrap();
        let opts = options_for(std::fs::read_to_string(p.with_extension("resource")).ok());
        let dec = decode_with(&bytes, &opts).unwrap();
        // Crafted images have damaged chains: each damage lspci marks must be diagnosed.
        let crafted = p.file_name().unwrap().to_string_lossy().starts_with("crafted-");
        assert_eq!(dec.diagnostics.is_empty(), !crafted, "{}: {:?}", p.display(), dec.diagnostics);
        for m in damage_markers(&text) {
            let want = match m.as_str() {
                "<chain looped>" => DiagnosticKind::Loop,
                "<chain broken>" => DiagnosticKind::InvalidId,
                other => panic!("unknown lspci marker {other}"),
            };
            assert!(
                dec.diagnostics.iter().any(|d| d.kind == want),
                "{}: lspci says {m}, decoder {:?}",
                p.display(),
                dec.diagnostics
            );
        }
        caps_seen += parse_lspci(&text).len();
        for e in compare(&dec, &text) {
            failures.push(format!("{}: {e}", p.file_name().unwrap().to_string_lossy()));
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} images with lspci text");
    assert!(caps_seen >= 30, "the images hold only {caps_seen} capabilities");
    assert!(failures.is_empty(), "disagreements with lspci:\n{}", failures.join("\n"));
}

#[test]
fn comparison_catches_a_wrong_field() {
    // The comparator must be able to fail: change the MSI-X table size in an image and
    // check that the disagreement is reported.
    let p = data_dir().join("qemu-nvme-sriov.bin");
    let mut bytes = std::fs::read(&p).unwrap();
    let text = std::fs::read_to_string(p.with_extension("lspci")).unwrap();
    assert!(compare(&decode_with(&bytes, &DecodeOptions::default()).unwrap(), &text).is_empty());
    bytes[0x42] ^= 1; // MSI-X message control at 0x40 + 2
    let errs = compare(&decode_with(&bytes, &DecodeOptions::default()).unwrap(), &text);
    assert!(errs.iter().any(|e| e.contains("MSI-X table size")), "{errs:?}");
}

#[test]
fn every_device_of_this_machine_agrees_with_lspci() {
    let root = Path::new("/sys/bus/pci/devices");
    if let Some(why) = live_skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let Ok(entries) = std::fs::read_dir(root) else {
        println!("skipped: no {}", root.display());
        return;
    };
    let mut failures = Vec::new();
    let mut n = 0;
    for e in entries {
        let dev = e.unwrap().path();
        let bdf = dev.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(dev.join("config")).unwrap();
        let opts = options_for(std::fs::read_to_string(dev.join("resource")).ok());
        let dec = decode_with(&bytes, &opts).unwrap();
        let out = Command::new("lspci").args(["-vvv", "-s", &bdf]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        for err in compare(&dec, &text) {
            failures.push(format!("{bdf}: {err}"));
        }
        n += 1;
    }
    println!("compared {n} devices with lspci");
    assert!(failures.is_empty(), "disagreements with lspci:\n{}", failures.join("\n"));
}

#[test]
fn virtio_vendor_capabilities_of_a_lab_device() {
    use vfio_core::pci::caps::CapabilityFields;
    // virtio-iommu-pci in the lab's guest: see tests/data/config/README.md.
    let bytes = std::fs::read(data_dir().join("lab-virtio-iommu.bin")).unwrap();
    let dec = decode_with(&bytes, &DecodeOptions::default()).unwrap();
    let virtio: Vec<_> = dec
        .capabilities
        .iter()
        .filter_map(|c| match &c.fields {
            Some(CapabilityFields::VendorSpecific(v)) => v.virtio.clone(),
            _ => None,
        })
        .map(|v| (v.type_name, v.bar, v.offset, v.length, v.notify_off_multiplier))
        .collect();
    assert_eq!(
        virtio,
        [
            ("PCICfg", 0, 0, 0, None),
            ("Notify", 4, 0x3000, 0x1000, Some(4)),
            ("DeviceCfg", 4, 0x2000, 0x1000, None),
            ("ISR", 4, 0x1000, 0x1000, None),
            ("CommonCfg", 4, 0, 0x1000, None),
        ]
    );
    // A vendor capability of another vendor is not read as VirtIO.
    let mut other = bytes.clone();
    other[0] = 0x86;
    let dec = decode_with(&other, &DecodeOptions::default()).unwrap();
    assert!(dec.capabilities.iter().all(|c| match &c.fields {
        Some(CapabilityFields::VendorSpecific(v)) => v.virtio.is_none(),
        _ => true,
    }));
}
