//! Option ROM parser on real ROMs (iPXE, SeaBIOS VGA BIOSes) and on crafted broken ones.

use std::path::{Path, PathBuf};

use vfio_core::rom::{parse, parse_prefix, CodeType, ProblemKind, RomReport, Severity, MAX_IMAGES};

fn data(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rom").join(name)).unwrap()
}

/// What rom-parser reports for an image: offset, code type, vendor, device, class, last.
#[derive(Debug, PartialEq)]
struct RefImage {
    offset: usize,
    code_type: u8,
    vendor: u16,
    device: u16,
    class: u32,
    last: bool,
}

/// An independent walk the way rom-parser does it: look at every 512-byte boundary for
/// 55 aa with a "PCIR" behind the pointer, stop at the first image with a non-zero
/// indicator. Returns the images and whether an image without PCIR was met first.
fn reference_walk(d: &[u8]) -> (Vec<RefImage>, bool) {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 0x1a <= d.len() {
        if d[off] == 0x55 && d[off + 1] == 0xaa {
            let p = off + usize::from(u16::from_le_bytes([d[off + 0x18], d[off + 0x19]]));
            if p + 0x18 > d.len() || &d[p..p + 4] != b"PCIR" {
                return (out, true);
            }
            let r16 = |o: usize| u16::from_le_bytes([d[p + o], d[p + o + 1]]);
            let class = (u32::from(d[p + 0xf]) << 16)
                | (u32::from(d[p + 0xe]) << 8)
                | u32::from(d[p + 0xd]);
            let last = d[p + 0x15] != 0;
            out.push(RefImage {
                offset: off,
                code_type: d[p + 0x14],
                vendor: r16(4),
                device: r16(6),
                class,
                last,
            });
            if last {
                break;
            }
        }
        off += 512;
    }
    (out, false)
}

fn ours(r: &RomReport) -> Vec<RefImage> {
    r.images
        .iter()
        .filter_map(|i| {
            let p = i.pcir.as_ref()?;
            Some(RefImage {
                offset: i.offset as usize,
                code_type: p.code_type_raw,
                vendor: p.vendor_id,
                device: p.device_id,
                class: p.class_code,
                last: i.last,
            })
        })
        .collect()
}

fn check_real_rom(path: &Path, d: &[u8]) {
    let r = parse(d);
    let (reference, no_pcir) = reference_walk(d);
    assert_eq!(ours(&r), reference, "{}", path.display());
    if no_pcir {
        assert!(!r.verdicts.valid, "{}", path.display());
        assert!(r.all_problems().any(|p| p.kind == ProblemKind::MissingPcir), "{}", path.display());
        return;
    }
    assert!(r.verdicts.valid, "{}: {:?}", path.display(), r.all_problems().collect::<Vec<_>>());
    for img in &r.images {
        if img.pcir.as_ref().unwrap().code_type == CodeType::X86PcAt {
            let c = img.checksum.as_ref().unwrap();
            assert!(c.valid && c.bytes == img.length, "{}: {c:?}", path.display());
        }
        if let Some(e) = &img.efi {
            assert!(e.signature_valid, "{}", path.display());
            assert_eq!(e.machine_name, "X64");
        }
    }
    let has_efi = reference.iter().any(|i| i.code_type == 3);
    assert_eq!(r.verdicts.uefi_capable, has_efi, "{}", path.display());
    assert_eq!(r.verdicts.legacy_bios, reference.iter().any(|i| i.code_type == 0));
}

fn glob(dir: &str, prefix: &str, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    let n = p.file_name().unwrap().to_string_lossy();
                    n.starts_with(prefix) && n.ends_with(suffix)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn efi_e1000e_matches_rom_parser() {
    let r = parse(&data("efi-e1000e.rom"));
    assert_eq!(r.images.len(), 2);
    let a = &r.images[0];
    let p = a.pcir.as_ref().unwrap();
    assert_eq!((a.offset, p.code_type_raw, p.vendor_id, p.device_id), (0, 0, 0x8086, 0x10d3));
    assert_eq!(p.class_code, 0x020000);
    assert!(!a.last);
    assert!(a.checksum.as_ref().unwrap().valid);
    let b = &r.images[1];
    let p = b.pcir.as_ref().unwrap();
    assert_eq!((b.offset, p.code_type), (0x12600, CodeType::Efi));
    let e = b.efi.as_ref().unwrap();
    assert!(e.signature_valid);
    assert_eq!((e.subsystem_name, e.machine_name), ("boot service driver", "X64"));
    assert!(b.last);
    assert!(r.verdicts.valid && r.verdicts.uefi_capable && r.verdicts.legacy_bios);
}

#[test]
fn stored_real_roms_agree_with_the_reference_walk() {
    for n in ["efi-e1000e.rom", "vgabios-bochs-display.bin"] {
        check_real_rom(Path::new(n), &data(n));
    }
    let r = parse(&data("vgabios-bochs-display.bin"));
    assert!(!r.verdicts.uefi_capable && r.verdicts.legacy_bios);
}

#[test]
fn installed_ipxe_and_seabios_roms_agree_with_the_reference_walk() {
    let mut files = glob("/usr/lib/ipxe/qemu", "", ".rom");
    files.extend(glob("/usr/share/seabios", "vgabios-", ".bin"));
    if files.is_empty() {
        println!("skipped: no /usr/lib/ipxe/qemu/*.rom or /usr/share/seabios/vgabios-*.bin (packages ipxe-qemu, seabios)");
        return;
    }
    for f in &files {
        check_real_rom(f, &std::fs::read(f).unwrap());
    }
    println!("checked {} ROM files", files.len());
}

#[test]
fn id_mismatch_is_reported() {
    let mut r = parse(&data("efi-e1000e.rom"));
    r.check_ids(0x8086, 0x10d3);
    assert!(r.verdicts.valid && r.verdicts.id_mismatches.is_empty());
    let mut r = parse(&data("efi-e1000e.rom"));
    r.check_ids(0x8086, 0x100e);
    assert!(!r.verdicts.valid);
    assert_eq!(r.verdicts.id_mismatches, ["8086:10d3", "8086:10d3"]);
    assert_eq!(r.expected_id.as_deref(), Some("8086:100e"));
}

// ---- crafted ROMs ----

/// A legacy (or other code type) image of `units` * 512 bytes with a valid checksum.
fn image(units: u16, code_type: u8, last: bool) -> Vec<u8> {
    let mut b = vec![0u8; usize::from(units) * 512];
    b[0] = 0x55;
    b[1] = 0xaa;
    b[2] = units as u8;
    b[0x18] = 0x20;
    let p = 0x20;
    b[p..p + 4].copy_from_slice(b"PCIR");
    b[p + 4..p + 6].copy_from_slice(&0x10deu16.to_le_bytes());
    b[p + 6..p + 8].copy_from_slice(&0x1280u16.to_le_bytes());
    b[p + 0xa..p + 0xc].copy_from_slice(&0x18u16.to_le_bytes());
    b[p + 0xf] = 0x03;
    b[p + 0x10..p + 0x12].copy_from_slice(&units.to_le_bytes());
    b[p + 0x14] = code_type;
    b[p + 0x15] = if last { 0x80 } else { 0 };
    if code_type == 3 {
        b[2..4].copy_from_slice(&units.to_le_bytes());
        b[4..8].copy_from_slice(&0x0ef1u32.to_le_bytes());
        b[8] = 11;
        b[0xa..0xc].copy_from_slice(&0x8664u16.to_le_bytes());
    }
    fix_checksum(&mut b);
    b
}

fn fix_checksum(b: &mut [u8]) {
    let n = b.len();
    b[n - 1] = 0;
    let s = b.iter().fold(0u8, |a, &x| a.wrapping_add(x));
    b[n - 1] = s.wrapping_neg();
}

fn kinds(r: &RomReport) -> Vec<ProblemKind> {
    r.all_problems().map(|p| p.kind).collect()
}

#[test]
fn crafted_valid_two_image_rom() {
    let mut rom = image(2, 0, false);
    rom.extend(image(4, 3, true));
    let r = parse(&rom);
    assert!(r.verdicts.valid, "{:?}", kinds(&r));
    assert_eq!(r.images.len(), 2);
    assert_eq!(r.images[1].offset, 1024);
    assert!(r.verdicts.uefi_capable);
}

#[test]
fn bad_signature() {
    let mut rom = image(2, 0, true);
    rom[0] = 0x4d;
    let r = parse(&rom);
    assert_eq!(kinds(&r), [ProblemKind::BadSignature]);
    assert!(!r.verdicts.valid);
    // On the second image of a chain.
    let mut rom = image(2, 0, false);
    rom.extend(vec![0x12; 1024]);
    let r = parse(&rom);
    assert_eq!(r.images.len(), 2);
    assert_eq!(r.images[1].problems[0].kind, ProblemKind::BadSignature);
    assert_eq!(r.images[1].offset, 1024);
}

#[test]
fn pcir_pointer_problems() {
    let mut rom = image(2, 0, true);
    rom[0x18..0x1a].copy_from_slice(&0xfff0u16.to_le_bytes());
    assert_eq!(kinds(&parse(&rom)), [ProblemKind::PcirOutOfBounds]);
    let mut rom = image(2, 0, true);
    rom[0x18..0x1a].copy_from_slice(&0u16.to_le_bytes());
    assert_eq!(kinds(&parse(&rom)), [ProblemKind::MissingPcir]);
    let mut rom = image(2, 0, true);
    rom[0x20] = b'X';
    fix_checksum(&mut rom);
    assert_eq!(kinds(&parse(&rom)), [ProblemKind::MissingPcir]);
    // Misaligned: move the PCIR to 0x22.
    let mut rom = image(2, 0, true);
    let pcir: Vec<u8> = rom[0x20..0x38].to_vec();
    rom[0x22..0x3a].copy_from_slice(&pcir);
    rom[0x18] = 0x22;
    fix_checksum(&mut rom);
    let r = parse(&rom);
    assert_eq!(kinds(&r), [ProblemKind::PcirMisaligned]);
    assert_eq!(r.images[0].pcir.as_ref().unwrap().vendor_id, 0x10de);
}

#[test]
fn length_problems() {
    let mut rom = image(2, 0, false);
    rom[0x30..0x32].copy_from_slice(&0u16.to_le_bytes());
    fix_checksum(&mut rom);
    assert_eq!(kinds(&parse(&rom)), [ProblemKind::ZeroLength]);
    let mut rom = image(2, 0, true);
    rom[0x30..0x32].copy_from_slice(&0xffffu16.to_le_bytes());
    let r = parse(&rom);
    assert!(kinds(&r).contains(&ProblemKind::OverlongLength), "{:?}", kinds(&r));
    assert!(r.images[0].checksum.is_none(), "a checksum over missing bytes is not judged");
    // Truncated in the middle of the second image.
    let mut rom = image(2, 0, false);
    rom.extend(image(4, 0, true));
    rom.truncate(1024 + 700);
    let r = parse(&rom);
    assert_eq!(kinds(&r), [ProblemKind::OverlongLength]);
}

#[test]
fn data_after_the_last_image() {
    let mut rom = image(2, 0, true);
    rom.extend(vec![0xffu8; 4096]);
    let r = parse(&rom);
    assert!(r.verdicts.valid && kinds(&r).is_empty(), "padding is fine: {:?}", kinds(&r));
    let mut rom = image(2, 0, true);
    rom.extend(b"some trailing garbage".iter());
    let r = parse(&rom);
    assert_eq!(kinds(&r), [ProblemKind::DataAfterLastImage]);
    assert_eq!(r.problems[0].severity, Severity::Warning);
    assert!(r.verdicts.valid);
}

#[test]
fn chain_without_a_last_image_or_endless() {
    let mut rom = image(2, 0, false);
    rom.extend(image(2, 0, false));
    assert_eq!(kinds(&parse(&rom)), [ProblemKind::NoLastImage]);
    let mut rom = Vec::new();
    for _ in 0..MAX_IMAGES + 5 {
        rom.extend(image(1, 0, false));
    }
    let r = parse(&rom);
    assert_eq!(r.images.len(), MAX_IMAGES);
    assert_eq!(kinds(&r), [ProblemKind::TooManyImages]);
}

#[test]
fn checksum_and_efi_checks() {
    let mut rom = image(2, 0, true);
    rom[0x100] ^= 1;
    let r = parse(&rom);
    assert_eq!(kinds(&r), [ProblemKind::BadChecksum]);
    assert_eq!(r.images[0].checksum.as_ref().unwrap().sum, 1);
    let mut rom = image(2, 3, true);
    rom[4] = 0;
    let r = parse(&rom);
    assert_eq!(kinds(&r), [ProblemKind::BadEfiSignature]);
    assert!(!r.verdicts.uefi_capable);
    let mut rom = image(2, 3, true);
    rom[2] = 9;
    assert_eq!(kinds(&parse(&rom)), [ProblemKind::EfiInitSizeTooLarge]);
}

#[test]
fn empty_blank_and_random_input() {
    assert_eq!(kinds(&parse(&[])), [ProblemKind::Empty]);
    assert_eq!(kinds(&parse(&[0xff; 65536])), [ProblemKind::Blank]);
    assert_eq!(kinds(&parse(&[0; 4096])), [ProblemKind::Blank]);
    assert!(parse(&[0xff; 65536]).problems[0].message.contains("another slot"));
    assert_eq!(kinds(&parse(&[0x55])), [ProblemKind::BadSignature]);
    assert_eq!(kinds(&parse(&[0x55, 0xaa, 1])), [ProblemKind::PcirOutOfBounds]);
    let mut x: u32 = 12345;
    for len in [1usize, 2, 27, 511, 512, 4096, 70000] {
        let mut b: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        let _ = parse(&b);
        b[0] = 0x55;
        if len > 1 {
            b[1] = 0xaa;
        }
        let r = parse(&b);
        assert!(!r.images.is_empty());
    }
}

#[test]
fn huge_rom_is_parsed_from_a_prefix() {
    let mut prefix = image(2, 0, false);
    prefix.extend(image(2, 0, false));
    // A 1 TiB "file" of which 2 KiB were read.
    let r = parse_prefix(&prefix, 1 << 40);
    assert_eq!(r.images.len(), 2);
    assert_eq!(r.total_length, 1 << 40);
    assert_eq!(r.examined_length, 2048);
    assert_eq!(kinds(&r), [ProblemKind::NotExamined]);
    // A prefix longer than the total length is clipped to it.
    let r = parse_prefix(&image(2, 0, true), 512);
    assert_eq!(kinds(&r), [ProblemKind::OverlongLength]);
}
