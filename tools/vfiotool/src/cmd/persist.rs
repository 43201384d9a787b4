//! `vfiotool persist`: the boot-time configuration binding devices to vfio-pci.

use vfio_core::host::persist::{plan_persist, write_persist};

use crate::cli::Context;
use crate::cmd::{address, out};
use crate::dry_run::DryRunFs;

/// Arguments of `persist`.
#[derive(Debug, clap::Args)]
pub struct PersistArgs {
    /// Devices to claim at boot (default: those bound to vfio-pci now).
    #[arg(value_name = "ADDRESS")]
    pub addresses: Vec<String>,
    /// Write the files instead of printing them.
    #[arg(long)]
    pub write: bool,
    /// With --write: print what would be written, change nothing.
    #[arg(long, requires = "write")]
    pub dry_run: bool,
}

/// Runs `persist`.
pub fn run(args: &PersistArgs, ctx: &mut Context) -> vfio_core::Result<i32> {
    let devs = args.addresses.iter().map(|a| address(a)).collect::<Result<Vec<_>, _>>()?;
    let plan = plan_persist(&*ctx.fs, &devs)?;
    if !plan.also_claimed.is_empty() {
        let v: Vec<String> = plan.also_claimed.iter().map(|a| a.to_string()).collect();
        out!(ctx, "warning: ids= also claims {} (same vendor:device); bind per device with 'vfiotool bind' at boot instead if they must stay on the host", v.join(", "));
    }
    if args.write && args.dry_run {
        let dry = DryRunFs::new(ctx.fs.clone());
        write_persist(&dry, &plan)?;
        dry.print(ctx);
        for (p, text) in &plan.files {
            out!(ctx, "# {}", p.display());
            out!(ctx, "{}", text.trim_end());
        }
    } else if args.write {
        write_persist(&*ctx.fs, &plan)?;
        for (p, _) in &plan.files {
            out!(ctx, "wrote {}", p.display());
        }
    } else {
        for (p, text) in &plan.files {
            out!(ctx, "# {}", p.display());
            out!(ctx, "{}", text.trim_end());
        }
    }
    out!(ctx, "then run:");
    for c in &plan.after {
        out!(ctx, "  {c}");
    }
    Ok(0)
}
