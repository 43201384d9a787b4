//! Crafted config-space images against `lspci -vvv -F`: header layouts and capabilities
//! that no stored device image has (a CardBus bridge, a conventional device with bytes
//! above 0x100, unassigned I/O and ROM BARs, the standard capabilities of `caps_std`,
//! the extended ones of `caps_ext`). Each image is built here, written in the
//! `lspci -xxxx` text format and given to `lspci -F`; without lspci (package pciutils)
//! the text it printed before, stored in `tests/data/crafted/`, stands in. Set
//! `LSPCI_UPDATE=1` to rewrite the stored text from the installed lspci.

use std::path::{Path, PathBuf};
use std::process::Command;

use vfio_core::pci::config::{decode, DecodedConfig, Header};

#[path = "common/image.rs"]
mod image;
#[path = "common/lspci.rs"]
mod lspci;
use image::Image;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/crafted")
}

/// lspci's text for `bytes`: from the installed lspci, else the stored text.
fn lspci_text(name: &str, bytes: &[u8]) -> String {
    let stored = data_dir().join(format!("{name}.lspci"));
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join(format!("{name}.x"));
    std::fs::write(&dump, image::lspci_dump(bytes)).unwrap();
    match Command::new("lspci").arg("-vvv").arg("-F").arg(&dump).output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8(out.stdout).unwrap();
            if std::env::var_os("LSPCI_UPDATE").is_some() {
                std::fs::write(&stored, &text).unwrap();
            }
            text
        }
        _ => std::fs::read_to_string(&stored)
            .unwrap_or_else(|e| panic!("no lspci and no {}: {e}", stored.display())),
    }
}

/// Decodes `bytes`, compares with lspci, and returns the decode.
fn check(name: &str, bytes: &[u8]) -> DecodedConfig {
    let dec = decode(bytes).unwrap();
    let text = lspci_text(name, bytes);
    let errs = lspci::compare(&dec, &text);
    assert!(errs.is_empty(), "{name}: disagreements with lspci:\n{}\n{text}", errs.join("\n"));
    assert!(dec.diagnostics.is_empty(), "{name}: {:?}", dec.diagnostics);
    dec
}

#[test]
fn cardbus_bridge_keeps_its_capabilities_pointer_at_0x14() {
    let dec = check("cardbus", &image::cardbus());
    let Header::CardBus(c) = &dec.header else { panic!("{:?}", dec.header) };
    assert_eq!(c.interrupt.pin, Some("A"));
    assert_eq!(c.bars.len(), 1);
    assert_eq!((c.primary_bus, c.cardbus_bus, c.subordinate_bus), (2, 3, 6));
    assert_eq!((c.subsystem_vendor_id, c.subsystem_id), (Some(0x1028), Some(0x0188)));
    assert!(c.memory_windows[0].prefetchable && c.cardbus_reset);
    assert_eq!((c.io_windows[1].base, c.io_windows[1].limit), (0x4400, 0x44ff));
    assert_eq!(dec.capabilities.len(), 1);
    assert_eq!(dec.capabilities[0].offset, 0x80);
    assert!(dec.not_decoded.is_empty(), "{:?}", dec.not_decoded);
}

#[test]
fn conventional_device_has_no_extended_space_and_unassigned_bars_are_listed() {
    let bytes = image::conventional_with_echo();
    let dec = check("conventional-echo", &bytes);
    assert!(dec.extended_capabilities.is_empty(), "{:?}", dec.extended_capabilities);
    let Header::Endpoint(h) = &dec.header else { panic!() };
    assert_eq!(h.bars.len(), 2);
    assert_eq!((h.bars[0].index, h.bars[0].address), (0, 0));
    let rom = h.expansion_rom.as_ref().unwrap();
    assert!(rom.enabled && rom.address == 0);
    // The same bytes with a PCIe capability do have an extended chain.
    let mut pcie = Image::from(bytes);
    pcie.b(0xdd, 0x40).pcie(0x40, 0);
    let dec = decode(pcie.bytes()).unwrap();
    assert!(!dec.extended_capabilities.is_empty());
}

#[test]
fn standard_capabilities_af_vpd_debug_hotplug_subsystem_sata() {
    use vfio_core::pci::caps::CapabilityFields as F;
    let dec = check("standard-caps", &image::standard_caps());
    let kinds: Vec<_> = dec.capabilities.iter().map(|c| c.fields.clone()).collect();
    let Some(F::AdvancedFeatures(af)) = &kinds[0] else { panic!("{kinds:?}") };
    assert!(af.tp_capable && af.flr_capable && af.transactions_pending && !af.initiate_flr);
    let Some(F::Vpd(v)) = &kinds[1] else { panic!("{kinds:?}") };
    assert_eq!((v.address, v.flag, v.data), (0x10, true, 0x1234_5678));
    let Some(F::DebugPort(d)) = &kinds[2] else { panic!("{kinds:?}") };
    assert_eq!((d.bar, d.offset), (1, 0xa0));
    assert!(kinds[3].is_none(), "hot-plug has no fields");
    let Some(F::BridgeSubsystem(b)) = &kinds[4] else { panic!("{kinds:?}") };
    assert_eq!((b.subsystem_vendor_id, b.subsystem_id), (0x1af4, 0x7a7a));
    let Some(F::Sata(s)) = &kinds[5] else { panic!("{kinds:?}") };
    assert_eq!((s.major, s.bar, s.offset), (1, Some(5), 4));
    let Some(F::Sata(s)) = &kinds[6] else { panic!("{kinds:?}") };
    assert!(s.in_config_space && s.bar.is_none());
}

#[test]
fn capability_kinds_decoded_are_listed_in_the_user_guide() {
    use vfio_core::pci::caps::{cap_name, decode_capability, ext_cap_name, RawCapability};
    use vfio_core::pci::config::ConfigSpace;
    // Each id on an image of zeros (except for the capability's own registers, zero): a
    // capability kind is decoded when its fields are not null.
    let bytes = [0u8; 4096];
    let cs = ConfigSpace::new(&bytes);
    let mut decoded = Vec::new();
    for extended in [false, true] {
        for id in 0..=0x31u16 {
            let offset = if extended { 0x100 } else { 0x40 };
            let raw = RawCapability { offset, id, version: 1, next: 0, extended };
            if decode_capability(&cs, &raw).fields.is_some() {
                let name = if extended { ext_cap_name(id) } else { cap_name(id as u8) };
                decoded.push((extended, name.unwrap()));
            }
        }
    }
    println!("capability kinds decoded:");
    for (extended, name) in &decoded {
        println!("  {} {name}", if *extended { "extended" } else { "standard" });
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/user-guide.md");
    let Ok(guide) = std::fs::read_to_string(&path) else {
        // The crate as packaged for crates.io carries no workspace docs.
        println!("skipped the guide check: {} is not here (packaged crate)", path.display());
        return;
    };
    let guide = guide.replace('\n', " ");
    // The guide's names for the kinds whose specification name it shortens.
    let in_guide = |name: &'static str| match name {
        "Advanced Features (FLR)" => "PCI Advanced Features",
        "Advanced Error Reporting" => "AER",
        "Access Control Services" => "ACS",
        "Alternative Routing-ID Interpretation" => "ARI",
        "Address Translation Services" => "ATS",
        "Page Request Interface" => "PRI",
        "Designated Vendor-Specific" => "DVSECs",
        "Vendor Specific" => "Vendor Specific",
        n => n,
    };
    let missing: Vec<_> =
        decoded.iter().filter(|(_, n)| !guide.contains(in_guide(n))).map(|(_, n)| *n).collect();
    assert!(missing.is_empty(), "decoded, not in docs/user-guide.md: {missing:?}");
    assert!(decoded.len() >= 20, "{decoded:?}");
}
