//! `vfiotool bench`: passthrough latency on a device bound to vfio-pci.
//!
//! Four measurements ([`measure`]), each a list of per-operation times in nanoseconds:
//! MMIO accesses to one register (reads; writes only with `--write`), DMA map and unmap
//! by size, interrupt setup and teardown, and software-triggered interrupt delivery. The
//! statistics ([`stats`]) and the report with its histograms ([`report`]) are pure.

pub mod measure;
pub mod report;
pub mod stats;

use vfio_core::{Error, PciAddress, Result};

pub use report::{render, BenchReport, SCHEMA};

use crate::context::{json_text, write_out, Context};
use crate::open::{self, open_live, InterfaceArg};

/// Arguments of `bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The device (`0000:01:00.0`), bound to vfio-pci.
    pub address: String,
    /// The BAR holding the register to access.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub bar: u32,
    /// The register's offset in the BAR (hex with 0x, or decimal).
    #[arg(long, visible_alias = "register", default_value = "0", value_name = "OFFSET")]
    pub offset: String,
    /// Access width in bits: 8, 16, 32 or 64.
    #[arg(long, default_value_t = 32, value_name = "BITS")]
    pub width: u32,
    /// Also time writes of VALUE to the register. Without it nothing is written to the
    /// device's BARs.
    #[arg(long, value_name = "VALUE")]
    pub write: Option<String>,
    /// Operations timed per measurement.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub iterations: u32,
    /// DMA mapping sizes, comma-separated (`4K,64K,2M`; multiples of 4 KiB).
    #[arg(long, default_value = "4K,64K,2M", value_name = "SIZES")]
    pub sizes: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The kernel interface to open the device through.
    #[arg(long, value_enum, default_value_t = InterfaceArg::Auto)]
    pub interface: InterfaceArg,
}

/// Parses a number: `0x` hex, or decimal.
pub fn parse_number(what: &'static str, s: &str) -> Result<u64> {
    let t = s.trim();
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => t.parse(),
    };
    r.map_err(|_| Error::Invalid {
        what,
        input: s.to_string(),
        reason: "expected a number, hex with 0x (0x10) or decimal (16)".into(),
    })
}

/// Parses a size: bytes, or a number with `K`, `M` or `G` (binary units).
pub fn parse_size(s: &str) -> Result<u64> {
    let bad = |reason: &str| Error::Invalid {
        what: "DMA size",
        input: s.to_string(),
        reason: format!("{reason}; expected sizes such as 4K,64K,2M (multiples of 4K)"),
    };
    let t = s.trim();
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = num.parse().map_err(|_| bad("not a number"))?;
    let size = n.checked_mul(mult).ok_or_else(|| bad("too large"))?;
    if size == 0 || size % 4096 != 0 {
        return Err(bad("not a positive multiple of 4 KiB"));
    }
    if size > 1 << 30 {
        return Err(bad("larger than 1G"));
    }
    Ok(size)
}

/// Parses a comma-separated size list.
pub fn parse_sizes(s: &str) -> Result<Vec<u64>> {
    s.split(',').filter(|x| !x.trim().is_empty()).map(parse_size).collect()
}

/// The register offset and the value to write, checked against the access width and
/// the iteration count before the device is opened.
fn checked_args(args: &BenchArgs) -> Result<(u64, Option<u64>)> {
    let offset = parse_number("register offset", &args.offset)?;
    let write = args.write.as_deref().map(|v| parse_number("--write value", v)).transpose()?;
    if !matches!(args.width, 8 | 16 | 32 | 64) {
        return Err(Error::Invalid {
            what: "access width",
            input: args.width.to_string(),
            reason: "use --width 8, 16, 32 or 64".into(),
        });
    }
    if let Some(v) = write {
        if args.width < 64 && v >> args.width != 0 {
            return Err(Error::Invalid {
                what: "--write value",
                input: format!("{v:#x}"),
                reason: format!("does not fit in {} bits", args.width),
            });
        }
    }
    if args.iterations == 0 {
        return Err(Error::Invalid {
            what: "iteration count",
            input: "0".into(),
            reason: "give --iterations 1 or more".into(),
        });
    }
    Ok((offset, write))
}

/// Runs `bench`.
pub fn run(args: &BenchArgs, ctx: &mut Context) -> Result<i32> {
    let addr = PciAddress::parse(&args.address)?;
    let (offset, write) = checked_args(args)?;
    let sizes = parse_sizes(&args.sizes)?;
    let dev = open_live(&open::vfio(ctx), addr, args.interface.into())?;
    let report = measure::measure(&dev, args, offset, write, &sizes, &mut *ctx.err)?;
    drop(dev);
    let text = if args.json { json_text(&report) } else { render(&report) };
    write_out(ctx, &text)?;
    let failed = report.sections.iter().any(|s| s.error.is_some());
    Ok(i32::from(failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_sizes_parse() {
        assert_eq!(parse_number("n", "0x10").unwrap(), 16);
        assert_eq!(parse_number("n", "16").unwrap(), 16);
        assert!(parse_number("n", "0xzz").is_err());
        assert_eq!(parse_sizes("4K,64K,2M").unwrap(), vec![4096, 65536, 2 << 20]);
        assert_eq!(parse_size("8192").unwrap(), 8192);
        assert!(parse_size("3K").unwrap_err().to_string().contains("multiple of 4 KiB"));
        assert!(parse_size("2T").is_err());
        assert!(parse_size("0").is_err());
    }
}
