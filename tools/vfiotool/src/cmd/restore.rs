//! `vfiotool restore`: finish or undo binds recorded in the journal.

use vfio_core::host::journal::{read_journal, JOURNAL};
use vfio_core::host::restore::{plan_restore, restore};

use crate::context::{address, out, Context};

/// Arguments of `restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The device to restore; without it (and without --all), list the journal.
    #[arg(value_name = "ADDRESS", conflicts_with = "all")]
    pub address: Option<String>,
    /// Restore every journaled device.
    #[arg(long)]
    pub all: bool,
    /// Print what would be done, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `restore`.
pub fn run(args: &RestoreArgs, ctx: &mut Context) -> vfio_core::Result<i32> {
    if args.address.is_none() && !args.all {
        let j = read_journal(&*ctx.fs)?;
        if j.is_empty() {
            out!(ctx, "the journal ({JOURNAL}) is empty: nothing to restore");
        }
        for e in &j.devices {
            out!(
                ctx,
                "{}: moved to {}, was {} (override {}, VFs {}); restore with: vfiotool restore {}",
                e.address,
                e.target,
                e.driver.as_deref().unwrap_or("no driver"),
                e.driver_override.as_deref().unwrap_or("none"),
                e.sriov_numvfs.map_or("-".to_string(), |n| n.to_string()),
                e.address
            );
        }
        for n in &j.nodes {
            out!(ctx, "{}: owner was {}:{} before --user", n.path, n.uid, n.gid);
        }
        return Ok(0);
    }
    let which = args.address.as_deref().map(address).transpose()?;
    if args.dry_run {
        let (plans, chowns) = plan_restore(&*ctx.fs, which)?;
        if plans.is_empty() && chowns.is_empty() {
            out!(ctx, "nothing in the journal to restore");
        }
        for (e, steps) in plans {
            let Some(steps) = steps else {
                out!(ctx, "{}: the device no longer exists; would drop its entry", e.address);
                continue;
            };
            out!(
                ctx,
                "{}: back to {}; would run:",
                e.address,
                e.driver.as_deref().unwrap_or("no driver")
            );
            for s in steps {
                out!(ctx, "  {s}");
            }
            out!(ctx, "  (and drop its entry from {JOURNAL})");
        }
        if !chowns.is_empty() {
            out!(ctx, "group nodes back to their owners; would run:");
            for s in chowns {
                out!(ctx, "  {s}");
            }
        }
        return Ok(0);
    }
    let done = restore(&*ctx.fs, which)?;
    if done.is_empty() {
        out!(ctx, "nothing in the journal to restore");
    }
    for r in done {
        match &r.note {
            Some(n) => out!(ctx, "{}: {n}", r.address),
            None => {
                out!(ctx, "{} is back on {}", r.address, r.driver.as_deref().unwrap_or("no driver"))
            }
        }
    }
    Ok(0)
}
