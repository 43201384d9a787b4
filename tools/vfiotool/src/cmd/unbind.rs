//! `vfiotool unbind`: return a device from vfio-pci to its own driver.

use vfio_core::host::restore::{plan_unbind, unbind};

use crate::context::{address, out, Context};

/// Arguments of `unbind`.
#[derive(Debug, clap::Args)]
pub struct UnbindArgs {
    /// The device (0000:01:00.0 or 01:00.0).
    #[arg(value_name = "ADDRESS")]
    pub address: String,
    /// Print what would be done, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `unbind`.
pub fn run(args: &UnbindArgs, ctx: &mut Context) -> vfio_core::Result<i32> {
    let a = address(&args.address)?;
    if args.dry_run {
        let steps = plan_unbind(&*ctx.fs, a)?;
        out!(ctx, "would run:");
        for s in steps {
            out!(ctx, "  {s}");
        }
        return Ok(0);
    }
    let r = unbind(&*ctx.fs, a)?;
    out!(ctx, "{} is now on {}", r.address, r.driver.as_deref().unwrap_or("no driver"));
    Ok(0)
}
