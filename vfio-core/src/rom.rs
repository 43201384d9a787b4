//! PCI option ROM parser: walks every image of a ROM, decodes its headers and reports
//! each structural problem, with verdicts for a passthrough user (UEFI/OVMF capable,
//! legacy BIOS image present, IDs matching the device).
//!
//! The parser is pure and bounded: it takes the bytes it may look at (a prefix of the
//! ROM, at most [`MAX_ROM_BYTES`] is ever needed) and the ROM's total length, so a huge
//! file never has to be read whole. Bad input gives problems in the report, never a
//! panic.
//!
//! Reading a device's ROM is not done here: [`crate::hostfs::SysfsDevice::read_rom`]
//! reads it through sysfs, [`crate::Device::read_rom`] through the VFIO ROM region.

use crate::bytes::{le_u16, le_u32};

/// The largest ROM a PCI expansion ROM BAR can map (16 MiB). Nothing past this is
/// examined; pass at most this many bytes to [`parse_prefix`].
pub const MAX_ROM_BYTES: u64 = 16 << 20;
/// The chunk size of the ROM readers ([`crate::hostfs::SysfsDevice::read_rom`],
/// [`crate::Device::read_rom`]): one `read` or `pread` call asks for at most this many
/// bytes.
pub const ROM_READ_CHUNK: usize = 64 << 10;
/// Images walked at most before the chain is declared endless.
pub const MAX_IMAGES: usize = 64;
/// Minimum PCIR structure length read.
const PCIR_MIN: usize = 0x18;

/// How serious a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Severity {
    /// Worth knowing; the ROM still works.
    Warning,
    /// The ROM (or an image of it) will be refused by firmware.
    Error,
}

/// The kind of a problem found in a ROM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum ProblemKind {
    /// The ROM is empty.
    Empty,
    /// The ROM reads as all 0xFF or all zeros: a hidden or shadowed ROM.
    Blank,
    /// An image does not start with 0x55 0xAA.
    BadSignature,
    /// The PCIR pointer points outside the ROM.
    PcirOutOfBounds,
    /// The PCIR pointer is not 4-byte aligned.
    PcirMisaligned,
    /// No "PCIR" structure where the pointer says (or a pointer of 0).
    MissingPcir,
    /// The PCIR image length is 0.
    ZeroLength,
    /// The image runs past the end of the ROM.
    OverlongLength,
    /// Non-padding data after the last image.
    DataAfterLastImage,
    /// The chain reaches the end of the ROM without an image marked last.
    NoLastImage,
    /// More than [`MAX_IMAGES`] images.
    TooManyImages,
    /// A legacy x86 image whose bytes do not sum to 0 mod 256.
    BadChecksum,
    /// An EFI image without the 0x0EF1 signature.
    BadEfiSignature,
    /// An EFI image whose initialization size exceeds the image.
    EfiInitSizeTooLarge,
    /// The vendor:device of an image differs from the device's.
    IdMismatch,
    /// Part of the ROM was not examined (beyond the bytes read).
    NotExamined,
}

/// One problem, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Problem {
    /// What kind.
    pub kind: ProblemKind,
    /// How serious.
    pub severity: Severity,
    /// Offset in the ROM it concerns.
    pub offset: u64,
    /// One line for a human.
    pub message: String,
}

/// The code type of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum CodeType {
    /// 0: x86 PC-AT (legacy BIOS).
    X86PcAt,
    /// 1: Open Firmware.
    OpenFirmware,
    /// 2: HP PA-RISC.
    PaRisc,
    /// 3: EFI.
    Efi,
    /// Anything else.
    Unknown,
}

impl CodeType {
    /// From the PCIR code type byte.
    pub fn from_byte(b: u8) -> Self {
        match b {
            0 => CodeType::X86PcAt,
            1 => CodeType::OpenFirmware,
            2 => CodeType::PaRisc,
            3 => CodeType::Efi,
            _ => CodeType::Unknown,
        }
    }

    /// A short human name.
    pub fn name(self) -> &'static str {
        match self {
            CodeType::X86PcAt => "x86 PC-AT (legacy BIOS)",
            CodeType::OpenFirmware => "Open Firmware",
            CodeType::PaRisc => "PA-RISC",
            CodeType::Efi => "EFI",
            CodeType::Unknown => "unknown",
        }
    }
}

/// The PCI data structure of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Pcir {
    /// Vendor id.
    pub vendor_id: u16,
    /// Device id.
    pub device_id: u16,
    /// PCIR structure length.
    pub length: u16,
    /// PCIR revision.
    pub revision: u8,
    /// Class code (24 bits).
    pub class_code: u32,
    /// Image length in 512-byte units.
    pub image_length_units: u16,
    /// Code (vendor) revision.
    pub code_revision: u16,
    /// Code type byte.
    pub code_type_raw: u8,
    /// Code type.
    pub code_type: CodeType,
    /// Indicator byte.
    pub indicator: u8,
}

/// The EFI header of a code type 3 image.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct EfiHeader {
    /// The signature field (0x0EF1 when valid).
    pub signature: u32,
    /// Whether the signature is valid.
    pub signature_valid: bool,
    /// Initialization size in 512-byte units.
    pub init_size_units: u16,
    /// EFI subsystem.
    pub subsystem: u16,
    /// EFI subsystem name.
    pub subsystem_name: &'static str,
    /// Machine type.
    pub machine_type: u16,
    /// Machine type name.
    pub machine_name: &'static str,
    /// Compression type (0 none, 1 compressed).
    pub compression: u16,
    /// Offset of the EFI image from the image start.
    pub efi_image_offset: u16,
}

/// The checksum of a legacy x86 image.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Checksum {
    /// Sum of the image's bytes mod 256.
    pub sum: u8,
    /// Whether it is 0.
    pub valid: bool,
    /// Bytes summed.
    pub bytes: u64,
}

/// One image of a ROM.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RomImage {
    /// Offset of the image in the ROM.
    pub offset: u64,
    /// Whether it starts with 0x55 0xAA.
    pub signature_valid: bool,
    /// The PCIR pointer (image +0x18).
    pub pcir_offset: u16,
    /// The PCI data structure, when found.
    pub pcir: Option<Pcir>,
    /// The EFI header, for code type 3 images.
    pub efi: Option<EfiHeader>,
    /// The checksum, for legacy x86 images.
    pub checksum: Option<Checksum>,
    /// Image length in bytes (from the PCIR).
    pub length: u64,
    /// Whether the image is marked last.
    pub last: bool,
    /// Problems of this image.
    pub problems: Vec<Problem>,
}

/// Verdicts for a passthrough user.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Verdicts {
    /// No problem of severity error.
    pub valid: bool,
    /// Holds an EFI (code type 3) image with a valid signature: OVMF can use it.
    pub uefi_capable: bool,
    /// Holds a legacy x86 (code type 0) image: SeaBIOS can use it.
    pub legacy_bios: bool,
    /// Image ids differ from the device compared against, as `VVVV:DDDD` strings.
    pub id_mismatches: Vec<String>,
}

/// The full report on a ROM.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RomReport {
    /// The ROM's total length in bytes.
    pub total_length: u64,
    /// Bytes examined (the prefix given).
    pub examined_length: u64,
    /// The images in order.
    pub images: Vec<RomImage>,
    /// Problems of the ROM as a whole (trailing data, endless chain, blank ROM, ...).
    pub problems: Vec<Problem>,
    /// The device the ids were compared against, as `VVVV:DDDD`.
    pub expected_id: Option<String>,
    /// The verdicts.
    pub verdicts: Verdicts,
}

impl RomReport {
    /// Every problem, the ROM's and each image's.
    pub fn all_problems(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().chain(self.images.iter().flat_map(|i| i.problems.iter()))
    }

    /// Compares each image's ids with `vendor:device`, records mismatches as errors and
    /// updates the verdicts.
    pub fn check_ids(&mut self, vendor: u16, device: u16) {
        self.expected_id = Some(format!("{vendor:04x}:{device:04x}"));
        for img in &mut self.images {
            if let Some(p) = &img.pcir {
                if p.vendor_id != vendor || p.device_id != device {
                    let id = format!("{:04x}:{:04x}", p.vendor_id, p.device_id);
                    img.problems.push(Problem {
                        kind: ProblemKind::IdMismatch,
                        severity: Severity::Error,
                        offset: img.offset,
                        message: format!(
                            "image at {:#x} is for {id}, not {vendor:04x}:{device:04x}: firmware \
                             will not run it for this device",
                            img.offset
                        ),
                    });
                    self.verdicts.id_mismatches.push(id);
                }
            }
        }
        self.update_valid();
    }

    fn update_valid(&mut self) {
        let valid = !self.all_problems().any(|p| p.severity == Severity::Error);
        self.verdicts.valid = valid;
    }
}

fn efi_subsystem_name(v: u16) -> &'static str {
    match v {
        10 => "application",
        11 => "boot service driver",
        12 => "runtime driver",
        _ => "unknown",
    }
}

fn efi_machine_name(v: u16) -> &'static str {
    match v {
        0x014c => "IA32",
        0x0200 => "IA64",
        0x0ebc => "EBC",
        0x8664 => "X64",
        0x01c2 => "ARM",
        0xaa64 => "AArch64",
        0x5064 => "RISC-V 64",
        0x6264 => "LoongArch 64",
        _ => "unknown",
    }
}

fn push(
    problems: &mut Vec<Problem>,
    kind: ProblemKind,
    severity: Severity,
    offset: u64,
    message: String,
) {
    problems.push(Problem { kind, severity, offset, message });
}

/// Parses a ROM held whole in memory.
pub fn parse(data: &[u8]) -> RomReport {
    parse_prefix(data, data.len() as u64)
}

/// The bytes of a ROM BAR image up to the end of the image marked last, as the kernel's
/// `pci_get_rom_size` measures it (a ROM BAR read through VFIO is as large as the BAR
/// and padded with 0xFF). Data that does not parse as a chain of images is returned
/// whole.
pub fn trim_to_images(mut data: Vec<u8>) -> Vec<u8> {
    let report = parse(&data);
    let end = report
        .images
        .iter()
        .take_while(|i| i.signature_valid && i.pcir.is_some())
        .find(|i| i.last)
        .map(|i| i.offset + i.length);
    if let Some(end) = end {
        if end > 0 && end <= data.len() as u64 {
            data.truncate(end as usize);
        }
    }
    data
}

/// Parses a ROM of `total_length` bytes of which `prefix` holds the first bytes. Parts
/// beyond the prefix are reported as not examined.
pub fn parse_prefix(prefix: &[u8], total_length: u64) -> RomReport {
    let cap = (prefix.len() as u64).min(total_length).min(MAX_ROM_BYTES) as usize;
    let data = &prefix[..cap];
    let mut report = RomReport {
        total_length,
        examined_length: data.len() as u64,
        images: Vec::new(),
        problems: Vec::new(),
        expected_id: None,
        verdicts: Verdicts {
            valid: false,
            uefi_capable: false,
            legacy_bios: false,
            id_mismatches: Vec::new(),
        },
    };
    if total_length == 0 {
        push(
            &mut report.problems,
            ProblemKind::Empty,
            Severity::Error,
            0,
            "the ROM is empty (0 bytes): the device has no ROM, or it is hidden; use the \
             vendor's ROM file, or dump it with the card in another slot"
                .into(),
        );
        report.update_valid();
        return report;
    }
    if !data.is_empty() && (data.iter().all(|&b| b == 0xff) || data.iter().all(|&b| b == 0)) {
        let what = if data[0] == 0xff { "0xFF" } else { "zero" };
        push(
            &mut report.problems,
            ProblemKind::Blank,
            Severity::Error,
            0,
            format!(
                "the ROM reads as all {what} bytes: it is shadowed or hidden (typical of the \
                 boot GPU); dump it with the card in another slot or use the vendor's ROM file"
            ),
        );
        report.update_valid();
        return report;
    }

    let mut offset: usize = 0;
    let mut saw_last = false;
    let mut end_of_chain: usize = 0;
    loop {
        if offset as u64 >= total_length {
            break;
        }
        if offset >= data.len() {
            push(
                &mut report.problems,
                ProblemKind::NotExamined,
                Severity::Warning,
                offset as u64,
                format!(
                    "the chain continues at {offset:#x}, past the {:#x} bytes examined",
                    data.len()
                ),
            );
            break;
        }
        if report.images.len() >= MAX_IMAGES {
            push(
                &mut report.problems,
                ProblemKind::TooManyImages,
                Severity::Error,
                offset as u64,
                format!(
                    "more than {MAX_IMAGES} images without one marked last: the chain does not end"
                ),
            );
            break;
        }
        let (img, next) = parse_image(data, offset, total_length);
        saw_last |= img.last;
        if img.pcir.is_some() && img.length > 0 {
            end_of_chain = offset.saturating_add(img.length as usize);
        }
        report.images.push(img);
        match next {
            Some(n) => offset = n,
            None => break,
        }
    }

    let last_ok = report.images.last().map(|i| i.last).unwrap_or(false);
    if !saw_last
        && report.images.last().is_some_and(|i| i.pcir.is_some() && i.length > 0)
        && !report
            .problems
            .iter()
            .any(|p| matches!(p.kind, ProblemKind::NotExamined | ProblemKind::TooManyImages))
    {
        let off = report.images.last().map(|i| i.offset).unwrap_or(0);
        push(
            &mut report.problems,
            ProblemKind::NoLastImage,
            Severity::Error,
            off,
            "the chain reaches the end of the ROM without an image marked last (indicator \
             bit 7): the ROM is truncated"
                .into(),
        );
    }
    if last_ok && (end_of_chain as u64) < total_length {
        let tail = &data[end_of_chain.min(data.len())..];
        let padding = tail.iter().all(|&b| b == 0xff) || tail.iter().all(|&b| b == 0);
        let beyond = total_length - data.len() as u64;
        if !padding {
            push(
                &mut report.problems,
                ProblemKind::DataAfterLastImage,
                Severity::Warning,
                end_of_chain as u64,
                format!(
                    "{:#x} bytes of data after the last image (ends at {end_of_chain:#x}); \
                     firmware ignores them, but a dump with trailing data may be damaged",
                    total_length - end_of_chain as u64
                ),
            );
        } else if beyond > 0 {
            push(
                &mut report.problems,
                ProblemKind::NotExamined,
                Severity::Warning,
                data.len() as u64,
                format!("{beyond:#x} bytes after the last image were not examined"),
            );
        }
    }

    for img in &report.images {
        if let Some(p) = &img.pcir {
            match p.code_type {
                CodeType::Efi if img.efi.as_ref().is_some_and(|e| e.signature_valid) => {
                    report.verdicts.uefi_capable = true
                }
                CodeType::X86PcAt => report.verdicts.legacy_bios = true,
                _ => {}
            }
        }
    }
    report.update_valid();
    report
}

/// Parses the image at `offset`; returns it and the offset of the next image, `None`
/// when the walk stops here.
fn parse_image(data: &[u8], offset: usize, total: u64) -> (RomImage, Option<usize>) {
    let mut img = RomImage {
        offset: offset as u64,
        signature_valid: false,
        pcir_offset: 0,
        pcir: None,
        efi: None,
        checksum: None,
        length: 0,
        last: false,
        problems: Vec::new(),
    };
    let at = offset as u64;
    let problem = |img: &mut RomImage, kind, severity, message: String| {
        img.problems.push(Problem { kind, severity, offset: at, message })
    };
    let d = &data[offset..];
    if d.len() < 2 || d[0] != 0x55 || d[1] != 0xaa {
        let found = d.iter().take(2).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
        problem(
            &mut img,
            ProblemKind::BadSignature,
            Severity::Error,
            format!("no ROM signature at {offset:#x} (expected 55 aa, found {found:?})"),
        );
        return (img, None);
    }
    img.signature_valid = true;
    let Some(pcir_off) = le_u16(d, 0x18) else {
        problem(
            &mut img,
            ProblemKind::PcirOutOfBounds,
            Severity::Error,
            format!("image at {offset:#x} is cut off before its PCIR pointer (+0x18)"),
        );
        return (img, None);
    };
    img.pcir_offset = pcir_off;
    if pcir_off == 0 {
        problem(
            &mut img,
            ProblemKind::MissingPcir,
            Severity::Error,
            format!(
                "image at {offset:#x} has a PCIR pointer of 0: not a PCI option ROM (an ISA \
                 ROM?); PCI firmware will not load it"
            ),
        );
        return (img, None);
    }
    let pcir_abs = offset + usize::from(pcir_off);
    if pcir_abs as u64 + PCIR_MIN as u64 > total || pcir_abs + PCIR_MIN > data.len() {
        problem(
            &mut img,
            ProblemKind::PcirOutOfBounds,
            Severity::Error,
            format!(
                "image at {offset:#x}: PCIR pointer {pcir_off:#x} points past the end of the ROM \
                 ({total:#x} bytes)"
            ),
        );
        return (img, None);
    }
    if pcir_off % 4 != 0 {
        problem(
            &mut img,
            ProblemKind::PcirMisaligned,
            Severity::Error,
            format!(
                "image at {offset:#x}: PCIR pointer {pcir_off:#x} is not 4-byte aligned; UEFI \
                 firmware (OVMF) refuses the ROM"
            ),
        );
    }
    let p = &data[pcir_abs..];
    if &p[..4] != b"PCIR" {
        problem(
            &mut img,
            ProblemKind::MissingPcir,
            Severity::Error,
            format!("image at {offset:#x}: no \"PCIR\" at {pcir_abs:#x} (found {:02x?})", &p[..4]),
        );
        return (img, None);
    }
    let g16 = |o| le_u16(p, o).unwrap_or(0);
    let code_type_raw = p[0x14];
    let pcir = Pcir {
        vendor_id: g16(4),
        device_id: g16(6),
        length: g16(0x0a),
        revision: p[0x0c],
        class_code: (u32::from(p[0x0f]) << 16) | (u32::from(p[0x0e]) << 8) | u32::from(p[0x0d]),
        image_length_units: g16(0x10),
        code_revision: g16(0x12),
        code_type_raw,
        code_type: CodeType::from_byte(code_type_raw),
        indicator: p[0x15],
    };
    img.length = u64::from(pcir.image_length_units) * 512;
    img.last = pcir.indicator & 0x80 != 0;
    let code_type = pcir.code_type;
    img.pcir = Some(pcir);

    if code_type == CodeType::Efi {
        let sig = le_u32(d, 4).unwrap_or(0);
        let init = le_u16(d, 2).unwrap_or(0);
        let subsystem = le_u16(d, 8).unwrap_or(0);
        let machine = le_u16(d, 0x0a).unwrap_or(0);
        let efi = EfiHeader {
            signature: sig,
            signature_valid: sig == 0x0ef1,
            init_size_units: init,
            subsystem,
            subsystem_name: efi_subsystem_name(subsystem),
            machine_type: machine,
            machine_name: efi_machine_name(machine),
            compression: le_u16(d, 0x0c).unwrap_or(0),
            efi_image_offset: le_u16(d, 0x16).unwrap_or(0),
        };
        if !efi.signature_valid {
            problem(
                &mut img,
                ProblemKind::BadEfiSignature,
                Severity::Error,
                format!(
                    "EFI image at {offset:#x} has signature {sig:#x}, not 0xef1: OVMF will not \
                     load it"
                ),
            );
        }
        let len = img.length;
        if len > 0 && u64::from(init) * 512 > len {
            problem(
                &mut img,
                ProblemKind::EfiInitSizeTooLarge,
                Severity::Error,
                format!(
                    "EFI image at {offset:#x}: initialization size {:#x} exceeds the image \
                     length {:#x}",
                    u64::from(init) * 512,
                    len
                ),
            );
        }
        img.efi = Some(efi);
    }

    if img.length == 0 {
        problem(
            &mut img,
            ProblemKind::ZeroLength,
            Severity::Error,
            format!("image at {offset:#x} has a length of 0 in its PCIR: the chain cannot go on"),
        );
        return (img, None);
    }
    let len = img.length;
    let end = offset as u64 + len;
    if end > total {
        problem(
            &mut img,
            ProblemKind::OverlongLength,
            Severity::Error,
            format!(
                "image at {offset:#x} claims {:#x} bytes, running past the end of the ROM at \
                 {total:#x}: the ROM is truncated or the length is wrong",
                len
            ),
        );
    }
    if code_type == CodeType::X86PcAt {
        let stop = (end.min(data.len() as u64)) as usize;
        let bytes = &data[offset..stop];
        let sum = bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b));
        img.checksum = Some(Checksum { sum, valid: sum == 0, bytes: bytes.len() as u64 });
        if end > data.len() as u64 {
            // Not all bytes are here: the sum is meaningless, do not judge it.
            img.checksum = None;
        } else if sum != 0 {
            problem(
                &mut img,
                ProblemKind::BadChecksum,
                Severity::Error,
                format!(
                    "legacy image at {offset:#x}: bytes sum to {sum:#04x} mod 256, not 0; the \
                     BIOS refuses it (the dump is damaged or was modified)"
                ),
            );
        }
    }
    if img.last || end >= total {
        return (img, None);
    }
    (img, Some(end as usize))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A one-image legacy ROM of `blocks` 512-byte blocks, marked last.
    pub(crate) fn image(blocks: u8) -> Vec<u8> {
        let len = usize::from(blocks) * 512;
        let mut r = vec![0u8; len];
        r[0] = 0x55;
        r[1] = 0xaa;
        r[2] = blocks;
        r[0x18] = 0x20; // PCIR at 0x20
        r[0x20..0x24].copy_from_slice(b"PCIR");
        r[0x20 + 0x0a] = 0x18; // PCIR length
        r[0x20 + 0x10] = blocks; // image length in 512-byte units
        r[0x20 + 0x15] = 0x80; // last image
        let sum = r.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        r[len - 1] = 0u8.wrapping_sub(sum);
        r
    }

    #[test]
    fn trim_keeps_the_images_and_drops_bar_padding() {
        let img = image(2);
        let mut padded = img.clone();
        padded.resize(8192, 0xff);
        assert_eq!(trim_to_images(padded), img);
        // Exactly the image: unchanged.
        assert_eq!(trim_to_images(img.clone()), img);
    }

    #[test]
    fn trim_leaves_data_that_is_no_rom_whole() {
        let blank = vec![0xffu8; 4096];
        assert_eq!(trim_to_images(blank.clone()), blank);
        // An image without the last-image flag: the chain's end is unknown.
        let mut img = image(2);
        img[0x20 + 0x15] = 0;
        let mut padded = img.clone();
        padded.resize(4096, 0xff);
        assert_eq!(trim_to_images(padded.clone()), padded);
        assert!(trim_to_images(Vec::new()).is_empty());
    }
}
