//! One module per command.

pub mod bench;
pub mod bind;
pub mod doctor;
pub mod groups;
pub mod info;
pub mod list;
pub mod mdev;
pub mod persist;
pub mod restore;
pub mod rom;
pub mod snapshot;
pub mod sriov;
pub mod unbind;

use vfio_core::host::pci_ids::PciIds;

use crate::cli::Context;

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
    use std::io::Write as _;
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

/// The pci.ids database of the host the context reads.
pub(crate) fn ids(ctx: &Context) -> PciIds {
    PciIds::load(&*ctx.fs)
}

/// Parses a full PCI address argument.
pub(crate) fn address(s: &str) -> vfio_core::Result<vfio_core::PciAddress> {
    Ok(vfio_core::PciAddress::parse(s)?)
}
