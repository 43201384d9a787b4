//! What every command runs with: the [`Context`] (the host and kernel backends and the
//! output streams) and the small helpers for writing to it.
//!
//! Commands take a `&mut Context` and return an exit code; they print through the
//! helpers here, so a test can run any command on a simulated host and read what it
//! printed.

use std::io::Write;
use std::sync::Arc;

use vfio_core::host::pci_ids::PciIds;
use vfio_core::hostfs::HostFs;
use vfio_core::kernel::VfioKernel;
use vfio_core::{Error, PciAddress, Result};

/// The backends and output streams a command runs against.
pub struct Context {
    /// The host's filesystem view.
    pub fs: Arc<dyn HostFs>,
    /// The kernel's VFIO interface.
    pub kernel: Arc<dyn VfioKernel>,
    /// Standard output.
    pub out: Box<dyn Write>,
    /// Standard error.
    pub err: Box<dyn Write>,
}

/// Writes a line to the command's output (a closed pipe is not an error worth reporting).
macro_rules! out {
    ($ctx:expr, $($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!($ctx.out, $($arg)*);
    }};
}
pub(crate) use out;

/// Names, on standard error, what a listing skipped (`vfiotool: skipped WHAT: WHY`).
pub(crate) fn warn_skipped(ctx: &mut Context, skipped: &[String]) {
    for s in skipped {
        let _ = writeln!(ctx.err, "vfiotool: skipped {s}");
    }
}

/// Prints a value as pretty JSON.
pub(crate) fn print_json<T: serde::Serialize>(ctx: &mut Context, v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => out!(ctx, "{s}"),
        Err(e) => out!(ctx, "{{\"error\": \"{e}\"}}"),
    }
}

/// A value as pretty JSON and a final newline, for [`write_out`].
pub(crate) fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

/// The error of a failed write to standard output.
pub(crate) fn output_error(e: std::io::Error) -> Error {
    Error::host("write output", "<stdout>", e)
}

/// Writes a whole report to the command's output; a failed write is an error.
pub(crate) fn write_out(ctx: &mut Context, text: &str) -> Result<()> {
    ctx.out.write_all(text.as_bytes()).map_err(output_error)
}

/// The pci.ids database of the host the context reads.
pub(crate) fn ids(ctx: &Context) -> PciIds {
    PciIds::load(&*ctx.fs)
}

/// Parses a full PCI address argument.
pub(crate) fn address(s: &str) -> Result<PciAddress> {
    Ok(PciAddress::parse(s)?)
}
