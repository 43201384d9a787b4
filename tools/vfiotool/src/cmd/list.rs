//! `vfiotool list`.

use std::io::Write;
use std::path::Path;

use crate::cli::{Context, ListArgs};

/// Runs `list`.
pub fn run(args: &ListArgs, ctx: &mut Context) -> vfio_core::Result<i32> {
    let path = Path::new("/sys/bus/pci/devices");
    let names =
        ctx.fs.read_dir(path).map_err(|e| vfio_core::Error::host("read directory", path, e))?;
    if args.json {
        let _ = writeln!(ctx.out, "{}", serde_json::to_string_pretty(&names).unwrap_or_default());
    } else {
        for n in names {
            let _ = writeln!(ctx.out, "{n}");
        }
    }
    Ok(0)
}
