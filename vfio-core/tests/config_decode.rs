//! Config-space decoder on captured and crafted images: header fields, BAR sizes,
//! short images, and damaged capability chains reported as diagnostics.

use std::path::Path;

use vfio_core::pci::caps::{CapabilityFields, RawCapability};
use vfio_core::pci::config::{
    decode, decode_with, parse_sysfs_resource, BarKind, ConfigSpace, DecodeOptions, DiagnosticKind,
    Header,
};

fn image(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/config").join(name))
        .unwrap()
}

/// A 256-byte type 0 image with the capability list bit set and the given chain of
/// (offset, id, next) standard capabilities.
fn crafted(chain: &[(u8, u8, u8)]) -> Vec<u8> {
    let mut b = vec![0u8; 256];
    b[0..4].copy_from_slice(&[0x34, 0x12, 0x78, 0x56]);
    b[6] = 0x10; // status: capabilities list
    b[0x34] = chain.first().map(|c| c.0).unwrap_or(0);
    for &(off, id, next) in chain {
        b[usize::from(off)] = id;
        b[usize::from(off) + 1] = next;
    }
    b
}

fn ext_header(id: u16, ver: u8, next: u16) -> [u8; 4] {
    (u32::from(id) | (u32::from(ver) << 16) | (u32::from(next) << 20)).to_le_bytes()
}

#[test]
fn header_of_a_captured_nvme_with_sriov() {
    let d = decode(&image("qemu-nvme-sriov.bin")).unwrap();
    assert_eq!((d.vendor_id, d.device_id, d.revision), (0x1b36, 0x0010, 2));
    assert_eq!(d.class.code, 0x010802);
    assert_eq!((d.class.base, d.class.sub, d.class.prog_if), (1, 8, 2));
    assert!(d.command.memory && d.command.bus_master && !d.command.interrupt_disable);
    assert!(d.status.capabilities_list && d.status.interrupt_status);
    assert_eq!(d.header_type, 0);
    let Header::Endpoint(h) = &d.header else { panic!("not type 0: {:?}", d.header) };
    assert_eq!(h.bars.len(), 1);
    assert_eq!(h.bars[0].kind, BarKind::Memory64);
    assert_eq!(h.bars[0].address, 0xfe80_0000);
    assert_eq!(h.interrupt.pin, Some("A"));
    let names: Vec<_> = d.capabilities.iter().map(|c| c.name.unwrap()).collect();
    assert_eq!(names, ["MSI-X", "PCI Express", "Power Management"]);
    let ext: Vec<_> = d.extended_capabilities.iter().map(|c| c.id).collect();
    assert_eq!(ext, [0x0e, 0x10]);
    let sriov = d
        .find_fields(|f| match f {
            CapabilityFields::Sriov(s) => Some(s),
            _ => None,
        })
        .unwrap();
    assert_eq!((sriov.initial_vfs, sriov.total_vfs, sriov.num_vfs), (4, 4, 0));
    assert_eq!((sriov.first_vf_offset, sriov.vf_stride, sriov.vf_device_id), (1, 1, 0x0010));
    assert_eq!(sriov.vf_bars.len(), 1);
    assert_eq!(sriov.vf_bars[0].kind, BarKind::Memory64);
    let pcie = d
        .find_fields(|f| match f {
            CapabilityFields::PciExpress(p) => Some(p),
            _ => None,
        })
        .unwrap();
    assert!(pcie.device_capabilities.flr_capable);
    assert_eq!(pcie.port_type, "Endpoint");
    let pm = d
        .find_fields(|f| match f {
            CapabilityFields::PowerManagement(p) => Some(p),
            _ => None,
        })
        .unwrap();
    assert!(pm.no_soft_reset);
    assert_eq!(pm.power_state, "D0");
    assert!(d.diagnostics.is_empty() && d.not_decoded.is_empty());
}

#[test]
fn bridge_header_buses_and_windows() {
    let d = decode(&image("qemu-pcie-pci-bridge.bin")).unwrap();
    let Header::Bridge(b) = &d.header else { panic!("not a bridge") };
    assert_eq!((b.primary_bus, b.secondary_bus, b.subordinate_bus), (0, 4, 4));
    assert_eq!((b.io_window.base, b.io_window.limit, b.io_window.width), (0xc000, 0xcfff, 16));
    assert_eq!((b.memory_window.base, b.memory_window.limit), (0xfe20_0000, 0xfe3f_ffff));
    assert!(b.prefetchable_window.enabled);
    assert_eq!(b.prefetchable_window.width, 64);
    assert_eq!(b.prefetchable_window.base, 0xfd00_0000);
    // The root port's windows are closed (base above limit).
    let rp = decode(&image("qemu-root-port.bin")).unwrap();
    let Header::Bridge(r) = &rp.header else { panic!("not a bridge") };
    assert!(!r.io_window.enabled && !r.memory_window.enabled && !r.prefetchable_window.enabled);
    let acs = rp
        .find_fields(|f| match f {
            CapabilityFields::Acs(a) => Some(a),
            _ => None,
        })
        .unwrap();
    assert!(acs.capabilities.sv && acs.capabilities.rr && !acs.capabilities.ec);
    assert!(!acs.control.sv);
}

#[test]
fn bar_sizes_come_from_sysfs_resource() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/config/host-0000_00_03.0.resource"),
    )
    .unwrap();
    let lines = parse_sysfs_resource(&text).unwrap();
    let opts = DecodeOptions::from_resource(&lines);
    assert_eq!(opts.bar_sizes[0], Some(512 << 10));
    let d = decode_with(&image("host-0000_00_03.0.bin"), &opts).unwrap();
    let Header::Endpoint(h) = &d.header else { panic!() };
    assert_eq!(h.bars[0].size, Some(512 << 10));
    assert!(parse_sysfs_resource("0x1 0x2\n").is_err());
    assert!(parse_sysfs_resource("0x1 zz 0x3\n").is_err());
}

#[test]
fn a_64_byte_image_decodes_the_header_and_says_what_is_missing() {
    let full = image("qemu-e1000e.bin");
    let d = decode(&full[..64]).unwrap();
    assert_eq!((d.vendor_id, d.device_id), (0x8086, 0x10d3));
    assert_eq!(d.image_length, 64);
    assert!(d.capabilities.is_empty());
    assert!(d.diagnostics.is_empty(), "{:?}", d.diagnostics);
    assert!(d.not_decoded.iter().any(|s| s.contains("capabilities") && s.contains("root")));
    let Header::Endpoint(h) = &d.header else { panic!() };
    assert_eq!(h.bars.len(), 4);
    assert_eq!(h.bars[2].kind, BarKind::Io);
    assert!(h.expansion_rom.is_some());
    // 256 bytes of a PCIe device: standard capabilities, extended ones reported missing.
    let d = decode(&full[..256]).unwrap();
    assert_eq!(d.capabilities.len(), 4);
    assert!(d.extended_capabilities.is_empty());
    assert!(d.not_decoded.iter().any(|s| s.starts_with("extended capabilities")));
    // Below the header: a typed error.
    let e = decode(&full[..40]).unwrap_err();
    assert!(e.to_string().contains("64-byte header"), "{e}");
}

#[test]
fn standard_chain_loop_is_a_diagnostic() {
    let b = crafted(&[(0x40, 0x05, 0x50), (0x50, 0x11, 0x40)]);
    let d = decode(&b).unwrap();
    assert_eq!(d.capabilities.iter().map(|c| c.offset).collect::<Vec<_>>(), [0x40, 0x50]);
    assert_eq!(d.diagnostics.len(), 1);
    assert_eq!(d.diagnostics[0].kind, DiagnosticKind::Loop);
    assert_eq!(d.diagnostics[0].offset, Some(0x50));
    // A capability pointing to itself.
    let d = decode(&crafted(&[(0x40, 0x01, 0x40)])).unwrap();
    assert_eq!(d.capabilities.len(), 1);
    assert_eq!(d.diagnostics[0].kind, DiagnosticKind::Loop);
}

#[test]
fn pointer_into_the_header_is_a_diagnostic() {
    let d = decode(&crafted(&[(0x40, 0x01, 0x08)])).unwrap();
    assert_eq!(d.capabilities.len(), 1);
    assert_eq!(d.diagnostics[0].kind, DiagnosticKind::PointerIntoHeader);
    // The first pointer itself.
    let d = decode(&crafted(&[(0x20, 0x01, 0)])).unwrap();
    assert!(d.capabilities.is_empty());
    assert_eq!(d.diagnostics[0].kind, DiagnosticKind::PointerIntoHeader);
    assert_eq!(d.diagnostics[0].offset, Some(0x34));
}

#[test]
fn id_0xff_and_pointer_past_the_end() {
    let d = decode(&crafted(&[(0x40, 0x05, 0x60), (0x60, 0xff, 0)])).unwrap();
    assert_eq!(d.capabilities.len(), 1);
    assert_eq!(d.diagnostics[0].kind, DiagnosticKind::InvalidId);
    // A pointer past a truncated image.
    let b = crafted(&[(0x40, 0x05, 0xc0), (0xc0, 0x01, 0)]);
    let d = decode(&b[..0x80]).unwrap();
    assert_eq!(d.capabilities.len(), 1);
    assert_eq!(d.diagnostics[0].kind, DiagnosticKind::Truncated);
    // A capability whose registers run past the end: header found, fields truncated.
    let b = crafted(&[(0x40, 0x11, 0)]);
    let d = decode(&b[..0x44]).unwrap();
    assert!(matches!(d.capabilities[0].fields, Some(CapabilityFields::Truncated { .. })));
    assert!(d.not_decoded.iter().any(|s| s.contains("MSI-X")));
    // The list bit clear: the pointer is ignored.
    let mut b = crafted(&[(0x40, 0x05, 0)]);
    b[6] = 0;
    assert!(decode(&b).unwrap().capabilities.is_empty());
}

#[test]
fn extended_chain_damage() {
    let mut b = crafted(&[(0x40, 0x10, 0)]);
    b.resize(4096, 0);
    b[0x100..0x104].copy_from_slice(&ext_header(0x01, 2, 0x140));
    b[0x140..0x144].copy_from_slice(&ext_header(0x03, 1, 0x100));
    let d = decode(&b).unwrap();
    assert_eq!(d.extended_capabilities.len(), 2);
    assert_eq!(d.diagnostics[0].kind, DiagnosticKind::Loop);
    assert_eq!(d.diagnostics[0].offset, Some(0x140));
    // Pointer into standard space.
    b[0x140..0x144].copy_from_slice(&ext_header(0x03, 1, 0x80));
    let d = decode(&b).unwrap();
    assert_eq!(d.diagnostics[0].kind, DiagnosticKind::PointerIntoHeader);
    // All-ones header in the chain.
    b[0x140..0x144].copy_from_slice(&ext_header(0x03, 1, 0x200));
    b[0x200..0x204].copy_from_slice(&[0xff; 4]);
    let d = decode(&b).unwrap();
    assert_eq!(d.extended_capabilities.len(), 2);
    assert_eq!(d.diagnostics[0].kind, DiagnosticKind::BrokenHeader);
    // Pointer past a truncated image.
    let d = decode(&b[..0x180]).unwrap();
    assert_eq!(d.diagnostics[0].kind, DiagnosticKind::Truncated);
    // A PCIe device whose extended space reads all ones from the start.
    b[0x100..0x104].copy_from_slice(&[0xff; 4]);
    assert_eq!(decode(&b).unwrap().diagnostics[0].kind, DiagnosticKind::BrokenHeader);
    // A conventional device read through ECAM: all ones is normal, no diagnostic.
    let conv = decode(&image("qemu-edu.bin")).unwrap();
    assert!(conv.diagnostics.is_empty() && conv.extended_capabilities.is_empty());
}

#[test]
fn field_decoders_on_crafted_extended_capabilities() {
    let mut b = crafted(&[(0x40, 0x10, 0)]);
    b.resize(4096, 0);
    // Resizable BAR with one entry: BAR 2, 256 MiB current, 1 MiB..256 MiB supported.
    b[0x100..0x104].copy_from_slice(&ext_header(0x15, 1, 0x110));
    b[0x104..0x108].copy_from_slice(&(0x1ff0u32).to_le_bytes());
    b[0x108..0x10c].copy_from_slice(&((8u32 << 8) | (1 << 5) | 2).to_le_bytes());
    // PASID: exec + priv, width 20, enabled.
    b[0x110..0x114].copy_from_slice(&ext_header(0x1b, 1, 0x120));
    b[0x114..0x116].copy_from_slice(&((20u16 << 8) | 6).to_le_bytes());
    b[0x116] = 1;
    // PRI: enabled, capacity 512.
    b[0x120..0x124].copy_from_slice(&ext_header(0x13, 1, 0x130));
    b[0x124] = 1;
    b[0x128..0x12c].copy_from_slice(&512u32.to_le_bytes());
    // DVSEC: vendor 0x1e98, rev 1, length 0x38, id 3.
    b[0x130..0x134].copy_from_slice(&ext_header(0x23, 1, 0x140));
    b[0x134..0x138].copy_from_slice(&(0x1e98u32 | (1 << 16) | (0x38 << 20)).to_le_bytes());
    b[0x138..0x13a].copy_from_slice(&3u16.to_le_bytes());
    // Vendor-specific: id 0x23, rev 2, length 0x10.
    b[0x140..0x144].copy_from_slice(&ext_header(0x0b, 1, 0));
    b[0x144..0x148].copy_from_slice(&(0x23u32 | (2 << 16) | (0x10 << 20)).to_le_bytes());
    let d = decode(&b).unwrap();
    let f: Vec<_> = d.extended_capabilities.iter().map(|c| c.fields.clone().unwrap()).collect();
    let CapabilityFields::ResizableBar(r) = &f[0] else { panic!("{:?}", f[0]) };
    assert_eq!(r.entries.len(), 1);
    assert_eq!(r.entries[0].bar, 2);
    assert_eq!(r.entries[0].current_size, 256 << 20);
    assert_eq!(r.entries[0].supported_sizes.first(), Some(&(1 << 20)));
    assert_eq!(r.entries[0].supported_sizes.last(), Some(&(256 << 20)));
    let CapabilityFields::Pasid(p) = &f[1] else { panic!() };
    assert!(p.exec_permission && p.privileged_mode && p.enabled);
    assert_eq!(p.max_pasid_width, 20);
    let CapabilityFields::Pri(p) = &f[2] else { panic!() };
    assert!(p.enabled);
    assert_eq!(p.outstanding_capacity, 512);
    let CapabilityFields::Dvsec(v) = &f[3] else { panic!() };
    assert_eq!((v.vendor_id, v.revision, v.length, v.dvsec_id), (0x1e98, 1, 0x38, 3));
    let CapabilityFields::VendorSpecificExtended(v) = &f[4] else { panic!() };
    assert_eq!((v.vsec_id, v.vsec_revision, v.vsec_length), (0x23, 2, 0x10));
}

#[test]
fn msi_vector_counts_and_masking() {
    let mut b = crafted(&[(0x50, 0x05, 0)]);
    // 8 capable (MMC=3), 4 enabled (MME=2), 64-bit, maskable, enabled.
    let ctl: u16 = 1 | (3 << 1) | (2 << 4) | (1 << 7) | (1 << 8);
    b[0x52..0x54].copy_from_slice(&ctl.to_le_bytes());
    let d = decode(&b).unwrap();
    let Some(CapabilityFields::Msi(m)) = &d.capabilities[0].fields else { panic!() };
    assert_eq!((m.vectors_capable, m.vectors_enabled), (8, 4));
    assert!(m.enabled && m.address_64bit && m.per_vector_masking);
}

#[test]
fn all_ones_device_and_link_less_pcie_functions() {
    let d = decode(&[0xff; 256]).unwrap();
    assert_eq!(d.diagnostics[0].kind, DiagnosticKind::AllOnes);
    // A root complex integrated endpoint: no link registers to decode.
    let mut b = crafted(&[(0x40, 0x10, 0)]);
    b[0x42] = 0x92; // version 2, type 9
    b[0x4c] = 0x11; // link caps that must be ignored
    let d = decode(&b).unwrap();
    let Some(CapabilityFields::PciExpress(e)) = &d.capabilities[0].fields else { panic!() };
    assert_eq!(e.port_type, "Root Complex Integrated Endpoint");
    assert!(e.link_capabilities.is_none() && e.link_status.is_none());
    b[0x42] = 0x02; // an endpoint: link decoded
    let d = decode(&b).unwrap();
    let Some(CapabilityFields::PciExpress(e)) = &d.capabilities[0].fields else { panic!() };
    assert_eq!(e.link_capabilities.as_ref().unwrap().max_speed, "2.5GT/s");
    assert_eq!(e.link_capabilities.as_ref().unwrap().max_width, 1);
}

#[test]
fn accessor_reads_and_iterators() {
    let img = image("qemu-root-port.bin");
    let cs = ConfigSpace::new(&img);
    assert_eq!(cs.len(), 4096);
    assert_eq!(cs.read_u16(0), Some(0x1b36));
    assert_eq!(cs.read_u32(0), Some(0x000c_1b36));
    assert_eq!(cs.read_u8(4096), None);
    assert_eq!(cs.read_u32(4094), None);
    let std: Vec<RawCapability> = cs.capabilities().map(Result::unwrap).collect();
    assert_eq!(std.iter().map(|c| c.offset).collect::<Vec<_>>(), [0x54, 0x48, 0x40]);
    assert_eq!(cs.find_capability(0x11).map(|c| c.offset), Some(0x48));
    assert_eq!(cs.find_extended_capability(0x0d).map(|c| c.offset), Some(0x148));
    assert!(cs.find_extended_capability(0x10).is_none());
    // Longer than 4 KiB: clipped.
    let mut big = img.clone();
    big.resize(8192, 0xaa);
    assert_eq!(ConfigSpace::new(&big).len(), 4096);
}

#[test]
#[cfg(feature = "serde")]
fn json_has_the_documented_top_level_keys() {
    let d = decode(&image("qemu-e1000e.bin")).unwrap();
    let v = serde_json::to_value(&d).unwrap();
    for k in [
        "image_length",
        "vendor_id",
        "device_id",
        "command",
        "status",
        "revision",
        "class",
        "header_type",
        "multi_function",
        "header",
        "capabilities",
        "extended_capabilities",
        "diagnostics",
        "not_decoded",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    assert_eq!(v["header"]["layout"], "endpoint");
    assert_eq!(v["capabilities"][1]["fields"]["kind"], "msi");
    assert_eq!(v["extended_capabilities"][1]["fields"]["text"], "52-54-00-ff-ff-12-34-56");
}

#[test]
fn random_and_hostile_images_never_panic() {
    // A small deterministic generator; every image length from 64 to 4096 in steps.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in (64..=4096).step_by(61) {
        let mut b = vec![0u8; len];
        for byte in b.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *byte = x as u8;
        }
        b[6] |= 0x10;
        let d = decode(&b).unwrap();
        assert!(d.capabilities.len() <= 48);
        assert!(d.extended_capabilities.len() <= 960);
    }
}

#[test]
fn every_capability_id_of_the_specification_has_a_name() {
    use vfio_core::pci::caps::{cap_name, ext_cap_name};
    for id in 0x01..=0x14u8 {
        assert!(cap_name(id).is_some(), "standard {id:#x}");
    }
    assert_eq!(cap_name(0x15), None);
    for id in (0x01..=0x2au16).chain(0x2e..=0x31) {
        assert!(ext_cap_name(id).is_some(), "extended {id:#x}");
    }
    assert_eq!(ext_cap_name(0x2b), None);
    assert_eq!(ext_cap_name(0x02), ext_cap_name(0x09));
    // Unknown ids decode with a null name, not an error.
    let d = decode(&crafted(&[(0x40, 0x42, 0)])).unwrap();
    assert_eq!((d.capabilities[0].id, d.capabilities[0].name), (0x42, None));
}
