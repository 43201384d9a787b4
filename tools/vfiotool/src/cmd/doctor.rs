//! `vfiotool doctor`: check the host for PCI passthrough.

use vfio_core::host::doctor::{any_failed, run_checks, DoctorOptions};

use crate::context::{out, print_json, Context};

/// Arguments of `doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Guest memory to check RLIMIT_MEMLOCK against, in MiB.
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    pub guest_memory: u64,
}

/// Runs `doctor`: exit code 1 when a check fails.
pub fn run(args: &DoctorArgs, ctx: &mut Context) -> vfio_core::Result<i32> {
    let checks = run_checks(&*ctx.fs, &DoctorOptions { guest_memory: args.guest_memory << 20 });
    if args.json {
        print_json(ctx, &checks);
    } else {
        for c in &checks {
            out!(ctx, "{:<4}  {:<24} {}", c.status.to_string(), c.id, c.message);
            if let Some(f) = &c.fix {
                out!(ctx, "      {:<24} fix: {f}", "");
            }
        }
    }
    Ok(i32::from(any_failed(&checks)))
}
