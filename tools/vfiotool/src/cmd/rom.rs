//! `vfiotool rom check` and `vfiotool rom dump`.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use vfio_core::device::regions;
use vfio_core::hostfs::HostFs;
use vfio_core::info::RegionFlags;
use vfio_core::rom::{self, RomReport, Severity, MAX_ROM_BYTES};
use vfio_core::{Error, Interface, PciAddress, Result, Vfio};

use crate::cli::{Context, RomCheckArgs, RomDumpArgs, RomSourceArg};

/// Exit code of `rom check` for an invalid ROM, and of `rom dump` for a ROM that reads
/// empty or blank (errors exit with 1).
pub const EXIT_INVALID: i32 = 2;

/// Bytes read per `read_at` call.
const CHUNK: usize = 64 << 10;

/// Where a device's ROM comes from. Every source gives the ROM's bytes (at most
/// [`MAX_ROM_BYTES`]) or an error that says what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RomSource {
    /// VFIO when the device is bound to vfio-pci, else sysfs (see [`RomSource::resolve`]).
    Auto,
    /// The sysfs `rom` attribute: enabled by writing "1", read, disabled by writing "0".
    Sysfs,
    /// The ROM region (index 6) of the device opened through VFIO.
    Vfio,
}

impl From<RomSourceArg> for RomSource {
    fn from(a: RomSourceArg) -> Self {
        match a {
            RomSourceArg::Auto => RomSource::Auto,
            RomSourceArg::Sysfs => RomSource::Sysfs,
            RomSourceArg::Vfio => RomSource::Vfio,
        }
    }
}

impl RomSource {
    /// The concrete source for `addr`: `Auto` becomes `Vfio` when the device is bound to
    /// vfio-pci and the host view has live VFIO device nodes (VFIO needs no ROM BAR
    /// toggling), else `Sysfs`.
    pub fn resolve(self, vfio: &Vfio, addr: PciAddress) -> RomSource {
        match self {
            RomSource::Auto => match vfio.locate(addr) {
                Ok(loc)
                    if loc.driver.as_deref() == Some("vfio-pci")
                        && crate::cmd::info::check_live_vfio(vfio.fs().as_ref()).is_ok() =>
                {
                    RomSource::Vfio
                }
                _ => RomSource::Sysfs,
            },
            other => other,
        }
    }

    /// Reads the ROM of `addr`.
    pub fn read(self, vfio: &Vfio, addr: PciAddress) -> Result<Vec<u8>> {
        match self.resolve(vfio, addr) {
            RomSource::Vfio => read_vfio_rom(vfio, addr),
            _ => read_sysfs_rom(vfio.fs().as_ref(), addr),
        }
    }

    /// What reading does, for `--dry-run` and messages.
    pub fn describe(self, vfio: &Vfio, addr: PciAddress) -> Vec<String> {
        let rom = sysfs_rom_path(addr);
        match self.resolve(vfio, addr) {
            RomSource::Vfio => vec![
                format!("open {addr} through VFIO (iommufd or the container of its group)"),
                format!(
                    "read the ROM region (index {}) with pread in {} KiB chunks (at most {} MiB)",
                    regions::ROM,
                    CHUNK >> 10,
                    MAX_ROM_BYTES >> 20
                ),
                "keep the images up to the one marked last (what sysfs `rom` returns)".into(),
                format!("close {addr}"),
            ],
            _ => vec![
                format!("write \"1\" to {} (enables the ROM BAR)", rom.display()),
                format!(
                    "read {} in {} KiB chunks (at most {} MiB)",
                    rom.display(),
                    CHUNK >> 10,
                    MAX_ROM_BYTES >> 20
                ),
                format!(
                    "write \"0\" to {} (disables it again, also when the read fails)",
                    rom.display()
                ),
            ],
        }
    }
}

/// The bytes of a ROM BAR image up to the end of the image marked last, as the kernel's
/// `pci_get_rom_size` measures it (a ROM BAR read through VFIO is as large as the BAR and
/// padded with 0xFF). Data that does not parse as a chain of images is returned whole.
pub fn trim_to_images(mut data: Vec<u8>) -> Vec<u8> {
    let report = rom::parse(&data);
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

/// Reads a device's ROM through the VFIO ROM region (the device must be bound to
/// vfio-pci; opening it may make the kernel reset it).
pub fn read_vfio_rom(vfio: &Vfio, addr: PciAddress) -> Result<Vec<u8>> {
    let dev = crate::cmd::info::open_live(vfio, addr, Interface::Auto)?;
    let region = dev.region(regions::ROM)?;
    if region.size == 0 || !region.flags.contains(RegionFlags::READ) {
        return Err(Error::NotFound {
            what: format!("ROM of {addr} (the VFIO ROM region is empty)"),
            hint: Some(
                "the device has no expansion ROM BAR; use the vendor's ROM file instead".into(),
            ),
        });
    }
    let size = region.size.min(MAX_ROM_BYTES);
    let mut data = vec![0u8; size as usize];
    for (i, chunk) in data.chunks_mut(CHUNK).enumerate() {
        dev.read_region(regions::ROM, (i * CHUNK) as u64, chunk)
            .map_err(|e| e.with_hint("is the device powered (not in D3cold)? check dmesg"))?;
    }
    Ok(trim_to_images(data))
}

/// `/sys/bus/pci/devices/BDF/rom`.
pub fn sysfs_rom_path(addr: PciAddress) -> PathBuf {
    PathBuf::from(format!("/sys/bus/pci/devices/{addr}/rom"))
}

/// Reads a device's ROM through sysfs: writes "1" to `rom`, reads it with `read_at` in
/// chunks, and writes "0" back even when the read fails.
pub fn read_sysfs_rom(fs: &dyn HostFs, addr: PciAddress) -> Result<Vec<u8>> {
    let path = sysfs_rom_path(addr);
    if !fs.exists(&path) {
        return Err(Error::NotFound {
            what: format!("ROM of {addr} ({})", path.display()),
            hint: Some(
                "the device has no expansion ROM BAR; use the vendor's ROM file instead".into(),
            ),
        });
    }
    fs.write(&path, b"1").map_err(|e| {
        Error::host("enable ROM (write \"1\")", &path, e)
            .with_hint("run as root; the file is writable by root only")
    })?;
    let result = read_chunks(fs, &path);
    let disable = fs.write(&path, b"0");
    let data = result?;
    disable.map_err(|e| {
        Error::host("disable ROM (write \"0\")", &path, e)
            .with_hint(format!("the ROM BAR may still be enabled: echo 0 > {}", path.display()))
    })?;
    Ok(data)
}

fn read_chunks(fs: &dyn HostFs, path: &Path) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    while (data.len() as u64) < MAX_ROM_BYTES {
        let n = fs.read_at(path, data.len() as u64, &mut buf).map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::EIO) {
                "the kernel found no valid ROM (no 55 AA signature): the ROM is hidden or \
                 shadowed, as on the boot GPU; dump it with the card in another slot or use \
                 the vendor's ROM file"
            } else {
                "is the device powered (not in D3cold)? check dmesg"
            };
            Error::host("read ROM", path, e).with_hint(hint)
        })?;
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
    }
    Ok(data)
}

/// A ROM file's first bytes (at most [`MAX_ROM_BYTES`]) and its total length.
pub fn read_rom_file(path: &Path) -> Result<(Vec<u8>, u64)> {
    let f = std::fs::File::open(path).map_err(|e| Error::host("open ROM file", path, e))?;
    let total = f.metadata().map_err(|e| Error::host("stat ROM file", path, e))?.len();
    let mut prefix = Vec::new();
    f.take(MAX_ROM_BYTES)
        .read_to_end(&mut prefix)
        .map_err(|e| Error::host("read ROM file", path, e))?;
    let total = total.max(prefix.len() as u64);
    Ok((prefix, total))
}

/// Parses `VVVV:DDDD`.
pub fn parse_id_pair(s: &str) -> Result<(u16, u16)> {
    let bad = |reason: &str| Error::Invalid {
        what: "device id",
        input: s.to_string(),
        reason: format!("{reason}; expected VVVV:DDDD in hex, such as 10de:1b80"),
    };
    let (v, d) = s.split_once(':').ok_or_else(|| bad("no ':'"))?;
    let hex = |x: &str| {
        if x.is_empty() || x.len() > 4 {
            return Err(bad(&format!("{x:?} is not 1-4 hex digits")));
        }
        u16::from_str_radix(x, 16).map_err(|_| bad(&format!("{x:?} is not hex")))
    };
    Ok((hex(v)?, hex(d)?))
}

/// The vendor and device id of a device, from its sysfs config.
fn device_ids(fs: &dyn HostFs, addr: PciAddress) -> Result<(u16, u16)> {
    let path = PathBuf::from(format!("/sys/bus/pci/devices/{addr}/config"));
    let mut b = [0u8; 4];
    let n = fs.read_at(&path, 0, &mut b).map_err(|e| Error::host("read", &path, e))?;
    if n < 4 {
        return Err(Error::Invalid {
            what: "config space",
            input: path.display().to_string(),
            reason: format!("only {n} bytes"),
        });
    }
    Ok((u16::from_le_bytes([b[0], b[1]]), u16::from_le_bytes([b[2], b[3]])))
}

/// Whether `target` names a device rather than a file: it parses as a PCI address and no
/// file of that name exists.
fn as_address(target: &str) -> Option<PciAddress> {
    if Path::new(target).exists() {
        return None;
    }
    PciAddress::parse(target).ok()
}

/// Runs `rom check`.
pub fn check(args: &RomCheckArgs, ctx: &mut Context) -> Result<i32> {
    let expected = args.device.as_deref().map(parse_id_pair).transpose()?;
    let (report, source) = if let Some(addr) = as_address(&args.target) {
        let dev = PathBuf::from(format!("/sys/bus/pci/devices/{addr}"));
        if !ctx.fs.exists(&dev) {
            return Err(Error::NotFound {
                what: format!("PCI device {addr}"),
                hint: Some("see `vfiotool list`; to check a file, give its path".into()),
            });
        }
        let vfio = Vfio::new(ctx.kernel.clone(), ctx.fs.clone());
        let data = RomSource::from(args.source).read(&vfio, addr)?;
        let mut r = rom::parse(&data);
        let ids = match expected {
            Some(ids) => ids,
            None => device_ids(ctx.fs.as_ref(), addr)?,
        };
        r.check_ids(ids.0, ids.1);
        (r, format!("device {addr}"))
    } else {
        let path = Path::new(&args.target);
        let (prefix, total) = read_rom_file(path)?;
        let mut r = rom::parse_prefix(&prefix, total);
        if let Some((v, d)) = expected {
            r.check_ids(v, d);
        }
        (r, path.display().to_string())
    };
    if args.json {
        let v = serde_json::json!({
            "schema": "vfiotool.rom-check/1",
            "source": source,
            "report": report,
        });
        let _ = writeln!(ctx.out, "{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        render_report(&mut ctx.out, &source, &report)?;
    }
    Ok(if report.verdicts.valid { 0 } else { EXIT_INVALID })
}

fn w(e: io::Error) -> Error {
    Error::host("write output", "<stdout>", e)
}

/// Writes the human report of a ROM.
pub fn render_report(out: &mut dyn Write, source: &str, r: &RomReport) -> Result<()> {
    writeln!(out, "ROM {source}: {} bytes, {} image(s)", r.total_length, r.images.len())
        .map_err(w)?;
    for (n, img) in r.images.iter().enumerate() {
        write!(out, "Image {} at {:#x}:", n + 1, img.offset).map_err(w)?;
        match &img.pcir {
            Some(p) => {
                writeln!(
                    out,
                    " type {} ({}), {:04x}:{:04x}, class {:06x}, PCIR rev {}, code rev {:#x}, \
                     {} bytes{}",
                    p.code_type_raw,
                    p.code_type.name(),
                    p.vendor_id,
                    p.device_id,
                    p.class_code,
                    p.revision,
                    p.code_revision,
                    img.length,
                    if img.last { ", last image" } else { "" }
                )
                .map_err(w)?;
            }
            None => writeln!(out, " no PCI data structure").map_err(w)?,
        }
        if let Some(e) = &img.efi {
            writeln!(
                out,
                "  EFI: signature {}, {} ({}), machine {} ({:#06x}), {}, init size {} bytes, \
                 EFI image at +{:#x}",
                if e.signature_valid { "valid" } else { "INVALID" },
                e.subsystem_name,
                e.subsystem,
                e.machine_name,
                e.machine_type,
                if e.compression == 0 { "uncompressed" } else { "compressed" },
                u32::from(e.init_size_units) * 512,
                e.efi_image_offset
            )
            .map_err(w)?;
        }
        if let Some(c) = &img.checksum {
            writeln!(
                out,
                "  checksum: {} (sum {:#04x} over {} bytes)",
                if c.valid { "ok" } else { "BAD" },
                c.sum,
                c.bytes
            )
            .map_err(w)?;
        }
        for p in &img.problems {
            writeln!(out, "  {}: {}", sev(p.severity), p.message).map_err(w)?;
        }
    }
    for p in &r.problems {
        writeln!(out, "{}: {}", sev(p.severity), p.message).map_err(w)?;
    }
    let v = &r.verdicts;
    writeln!(out, "Verdict:").map_err(w)?;
    writeln!(out, "  valid:          {}", yes(v.valid)).map_err(w)?;
    writeln!(
        out,
        "  UEFI (OVMF):    {}",
        match (v.uefi_capable, v.legacy_bios) {
            (true, _) => "yes, has an EFI image",
            (false, true) =>
                "no EFI image: boot the VM with SeaBIOS, or get a UEFI-capable ROM for OVMF",
            (false, false) => "no usable EFI image",
        }
    )
    .map_err(w)?;
    writeln!(out, "  legacy BIOS:    {}", yes(v.legacy_bios)).map_err(w)?;
    if let Some(id) = &r.expected_id {
        writeln!(
            out,
            "  ids match {id}: {}",
            if v.id_mismatches.is_empty() {
                "yes".to_string()
            } else {
                format!("no (images are for {})", v.id_mismatches.join(", "))
            }
        )
        .map_err(w)?;
    }
    Ok(())
}

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

/// A one-line summary of a ROM for `info`.
pub fn summary(r: &RomReport) -> String {
    if r.images.is_empty() || r.images.iter().all(|i| i.pcir.is_none()) {
        return match r.all_problems().next() {
            Some(p) => format!("unusable: {}", p.message),
            None => "no images".into(),
        };
    }
    let kinds: Vec<String> = r
        .images
        .iter()
        .filter_map(|i| i.pcir.as_ref())
        .map(|p| match p.code_type {
            rom::CodeType::X86PcAt => "legacy".to_string(),
            rom::CodeType::Efi => "EFI".to_string(),
            other => other.name().to_string(),
        })
        .collect();
    let errors = r.all_problems().filter(|p| p.severity == Severity::Error).count();
    format!(
        "{} KiB, {} image(s) [{}], {}{}",
        r.total_length / 1024,
        r.images.len(),
        kinds.join(", "),
        if r.verdicts.uefi_capable { "UEFI capable" } else { "not UEFI capable" },
        if errors == 0 {
            String::new()
        } else {
            format!(", {errors} problem(s): run `vfiotool rom check`")
        }
    )
}

/// Runs `rom dump`.
pub fn dump(args: &RomDumpArgs, ctx: &mut Context) -> Result<i32> {
    let addr = PciAddress::parse(&args.address)?;
    let dev = PathBuf::from(format!("/sys/bus/pci/devices/{addr}"));
    if !ctx.fs.exists(&dev) {
        return Err(Error::NotFound {
            what: format!("PCI device {addr}"),
            hint: Some("see `vfiotool list`".into()),
        });
    }
    let vfio = Vfio::new(ctx.kernel.clone(), ctx.fs.clone());
    let source = RomSource::from(args.source).resolve(&vfio, addr);
    if args.dry_run {
        writeln!(ctx.out, "Would dump the ROM of {addr} to {}:", args.output.display())
            .map_err(w)?;
        for step in source.describe(&vfio, addr) {
            writeln!(ctx.out, "  {step}").map_err(w)?;
        }
        writeln!(ctx.out, "  write the bytes to {}", args.output.display()).map_err(w)?;
        return Ok(0);
    }
    let data = source.read(&vfio, addr)?;
    let report = rom::parse(&data);
    let blank = data.is_empty() || data.iter().all(|&b| b == 0xff) || data.iter().all(|&b| b == 0);
    if blank {
        let what = if data.is_empty() {
            "empty (0 bytes)"
        } else if data[0] == 0xff {
            "all 0xFF"
        } else {
            "all zeros"
        };
        writeln!(
            ctx.err,
            "vfiotool: the ROM of {addr} reads {what}: it is shadowed or hidden (typical of the \
             GPU the host booted from, whose ROM the firmware copied and hid).\n\
             What to do: move the card to another slot and boot from a different GPU, dump it \
             there; or use the ROM file from the card vendor (check it with `vfiotool rom check \
             FILE --device VVVV:DDDD`). Nothing was written to {}.",
            args.output.display()
        )
        .map_err(|e| Error::host("write output", "<stderr>", e))?;
        return Ok(EXIT_INVALID);
    }
    std::fs::write(&args.output, &data).map_err(|e| Error::host("write", &args.output, e))?;
    writeln!(
        ctx.out,
        "Wrote {} bytes from {addr} (read through {}) to {}",
        data.len(),
        if source == RomSource::Vfio { "VFIO" } else { "sysfs" },
        args.output.display()
    )
    .map_err(w)?;
    writeln!(ctx.out, "ROM: {}", summary(&report)).map_err(w)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-image legacy ROM of `blocks` 512-byte blocks, marked last.
    fn image(blocks: u8) -> Vec<u8> {
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
