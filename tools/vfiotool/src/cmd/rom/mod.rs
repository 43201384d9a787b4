//! `vfiotool rom check` and `vfiotool rom dump`: check a ROM file or a device's ROM, and
//! dump a device's ROM to a file. The ROM is read by the library (see [`source`]) and
//! decoded by [`vfio_core::rom`].

pub mod report;
pub mod source;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::Subcommand;
use vfio_core::hostfs::SysfsDevice;
use vfio_core::rom::{self, MAX_ROM_BYTES};
use vfio_core::{Error, PciAddress, Result};

pub use report::render_report;
pub use source::RomSource;

use crate::context::{print_json, write_out, Context};
use crate::format::{parse_id_pair, rom_summary};
use crate::open::{self, existing_device};

/// Exit code of `rom check` for an invalid ROM, and of `rom dump` for a ROM that reads
/// empty or blank (errors exit with 1).
pub const EXIT_INVALID: i32 = 2;

/// `rom` subcommands.
#[derive(Debug, Subcommand)]
pub enum RomCommand {
    /// Check a ROM file, or a device's ROM (read through VFIO or sysfs): images, code types, ids,
    /// checksums, UEFI (OVMF) capability. Exit 0 when valid, 2 when invalid.
    Check(RomCheckArgs),
    /// Dump a device's ROM to a file: through the VFIO ROM region when the device is bound
    /// to vfio-pci, else through sysfs (`echo 1 > rom; cat rom; echo 0 > rom`).
    Dump(RomDumpArgs),
}

/// Arguments of `rom check`.
#[derive(Debug, clap::Args)]
pub struct RomCheckArgs {
    /// A ROM file, or a device address (`0000:01:00.0`) to read the ROM from.
    pub target: String,
    /// Compare the images' ids with this `VVVV:DDDD` (default for an address: the
    /// device's own ids).
    #[arg(long, value_name = "VVVV:DDDD")]
    pub device: Option<String>,
    /// Where to read a device's ROM from.
    #[arg(long, value_enum, default_value_t = RomSource::Auto)]
    pub source: RomSource,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `rom dump`.
#[derive(Debug, clap::Args)]
pub struct RomDumpArgs {
    /// The device (`0000:01:00.0`).
    pub address: String,
    /// The file to write.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Where to read the ROM from.
    #[arg(long, value_enum, default_value_t = RomSource::Auto)]
    pub source: RomSource,
    /// Print what would be done without touching the device.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs a `rom` subcommand.
pub fn run(command: &RomCommand, ctx: &mut Context) -> Result<i32> {
    match command {
        RomCommand::Check(args) => check(args, ctx),
        RomCommand::Dump(args) => dump(args, ctx),
    }
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
        existing_device(&*ctx.fs, addr, "see `vfiotool list`; to check a file, give its path")?;
        let data = args.source.read(&open::vfio(ctx), addr)?;
        let mut r = rom::parse(&data);
        let ids = match expected {
            Some(ids) => ids,
            None => SysfsDevice::new(&*ctx.fs, addr).config_ids()?,
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
        print_json(ctx, &v);
    } else {
        render_report(&mut ctx.out, &source, &report)?;
    }
    Ok(if report.verdicts.valid { 0 } else { EXIT_INVALID })
}

/// What a blank ROM reads as (`empty (0 bytes)`, `all 0xFF`, `all zeros`); `None` when
/// it holds data.
fn blank(data: &[u8]) -> Option<&'static str> {
    if data.is_empty() {
        Some("empty (0 bytes)")
    } else if data.iter().all(|&b| b == 0xff) {
        Some("all 0xFF")
    } else if data.iter().all(|&b| b == 0) {
        Some("all zeros")
    } else {
        None
    }
}

/// Runs `rom dump`.
pub fn dump(args: &RomDumpArgs, ctx: &mut Context) -> Result<i32> {
    let addr = PciAddress::parse(&args.address)?;
    existing_device(&*ctx.fs, addr, "see `vfiotool list`")?;
    let vfio = open::vfio(ctx);
    let source = args.source.resolve(&vfio, addr);
    let output = args.output.display();
    if args.dry_run {
        let mut text = format!("Would dump the ROM of {addr} to {output}:\n");
        for step in source.describe(&vfio, addr) {
            text += &format!("  {step}\n");
        }
        text += &format!("  write the bytes to {output}\n");
        write_out(ctx, &text)?;
        return Ok(0);
    }
    let data = source.read(&vfio, addr)?;
    if let Some(what) = blank(&data) {
        writeln!(
            ctx.err,
            "vfiotool: the ROM of {addr} reads {what}: it is shadowed or hidden (typical of the \
             GPU the host booted from, whose ROM the firmware copied and hid).\n\
             What to do: move the card to another slot and boot from a different GPU, dump it \
             there; or use the ROM file from the card vendor (check it with `vfiotool rom check \
             FILE --device VVVV:DDDD`). Nothing was written to {output}."
        )
        .map_err(|e| Error::host("write output", "<stderr>", e))?;
        return Ok(EXIT_INVALID);
    }
    std::fs::write(&args.output, &data).map_err(|e| Error::host("write", &args.output, e))?;
    let through = if source == RomSource::Vfio { "VFIO" } else { "sysfs" };
    let text = format!(
        "Wrote {} bytes from {addr} (read through {through}) to {output}\nROM: {}\n",
        data.len(),
        rom_summary(&rom::parse(&data))
    );
    write_out(ctx, &text)?;
    Ok(0)
}
