//! The text of `rom check`: every image with its headers, checksum and problems, then the
//! verdicts a passthrough user needs.

use std::io::Write;

use vfio_core::rom::{RomImage, RomReport, Severity};
use vfio_core::Result;

use crate::context::output_error;
use crate::format::id_pair;

fn sev(s: Severity) -> &'static str {
    match s {
        Severity::Warning => "warning",
        Severity::Error => "error",
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// The lines of one image (the first without its newline: it follows `Image N at X:`).
fn image_lines(img: &RomImage) -> Vec<String> {
    let mut lines = vec![match &img.pcir {
        Some(p) => format!(
            " type {} ({}), {}, class {:06x}, PCIR rev {}, code rev {:#x}, {} bytes{}",
            p.code_type_raw,
            p.code_type.name(),
            id_pair(p.vendor_id, p.device_id),
            p.class_code,
            p.revision,
            p.code_revision,
            img.length,
            if img.last { ", last image" } else { "" }
        ),
        None => " no PCI data structure".into(),
    }];
    if let Some(e) = &img.efi {
        lines.push(format!(
            "  EFI: signature {}, {} ({}), machine {} ({:#06x}), {}, init size {} bytes, EFI \
             image at +{:#x}",
            if e.signature_valid { "valid" } else { "INVALID" },
            e.subsystem_name,
            e.subsystem,
            e.machine_name,
            e.machine_type,
            if e.compression == 0 { "uncompressed" } else { "compressed" },
            u32::from(e.init_size_units) * 512,
            e.efi_image_offset
        ));
    }
    if let Some(c) = &img.checksum {
        lines.push(format!(
            "  checksum: {} (sum {:#04x} over {} bytes)",
            if c.valid { "ok" } else { "BAD" },
            c.sum,
            c.bytes
        ));
    }
    lines.extend(img.problems.iter().map(|p| format!("  {}: {}", sev(p.severity), p.message)));
    lines
}

/// The verdict lines.
fn verdict_lines(r: &RomReport) -> Vec<String> {
    let v = &r.verdicts;
    let mut lines = vec![
        "Verdict:".to_string(),
        format!("  valid:          {}", yes(v.valid)),
        format!(
            "  UEFI (OVMF):    {}",
            match (v.uefi_capable, v.legacy_bios) {
                (true, _) => "yes, has an EFI image",
                (false, true) =>
                    "no EFI image: boot the VM with SeaBIOS, or get a UEFI-capable ROM for OVMF",
                (false, false) => "no usable EFI image",
            }
        ),
        format!("  legacy BIOS:    {}", yes(v.legacy_bios)),
    ];
    if let Some(id) = &r.expected_id {
        lines.push(format!(
            "  ids match {id}: {}",
            if v.id_mismatches.is_empty() {
                "yes".to_string()
            } else {
                format!("no (images are for {})", v.id_mismatches.join(", "))
            }
        ));
    }
    lines
}

/// Writes the human report of a ROM.
pub fn render_report(out: &mut dyn Write, source: &str, r: &RomReport) -> Result<()> {
    let mut text = format!("ROM {source}: {} bytes, {} image(s)\n", r.total_length, r.images.len());
    for (n, img) in r.images.iter().enumerate() {
        text += &format!("Image {} at {:#x}:", n + 1, img.offset);
        for l in image_lines(img) {
            text += &l;
            text.push('\n');
        }
    }
    for p in &r.problems {
        text += &format!("{}: {}\n", sev(p.severity), p.message);
    }
    for l in verdict_lines(r) {
        text += &l;
        text.push('\n');
    }
    out.write_all(text.as_bytes()).map_err(output_error)
}
