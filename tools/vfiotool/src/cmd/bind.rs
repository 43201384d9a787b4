//! `vfiotool bind`: move a device, a slot or a group to vfio-pci, transactionally.

use vfio_core::host::bind::{execute, plan_bind, BindRequest};

use crate::context::{out, Context};

/// Arguments of `bind`.
#[derive(Debug, clap::Args)]
pub struct BindArgs {
    /// A function (0000:01:00.0 or 01:00.0) or a slot (01:00: all its functions).
    #[arg(value_name = "ADDRESS")]
    pub address: String,
    /// The driver to bind to.
    #[arg(long, default_value = "vfio-pci")]
    pub driver: String,
    /// Bind every member of the device's IOMMU group (bridges stay).
    #[arg(long)]
    pub group: bool,
    /// Give /dev/vfio/N to this user, for a VMM that does not run as root.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// Bind even a device the host uses (its display, network or storage).
    #[arg(long)]
    pub force: bool,
    /// Print what would be done, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `bind`.
pub fn run(args: &BindArgs, ctx: &mut Context) -> vfio_core::Result<i32> {
    let req = BindRequest {
        address: args.address.clone(),
        driver: args.driver.clone(),
        group: args.group,
        user: args.user.clone(),
        force: args.force,
    };
    let plan = plan_bind(&*ctx.fs, &req)?;
    for w in &plan.warnings {
        out!(ctx, "warning: {w}");
    }
    for a in &plan.already {
        out!(ctx, "{a} is already bound to {}", plan.driver);
    }
    if args.dry_run {
        if plan.steps.is_empty() {
            out!(ctx, "nothing to do");
        } else {
            out!(
                ctx,
                "would run (prior state is journaled in {} first):",
                vfio_core::host::journal::JOURNAL
            );
            for s in &plan.steps {
                out!(ctx, "  {s}");
            }
        }
        return Ok(0);
    }
    let done = execute(&*ctx.fs, &plan)?;
    for s in &done.plan.steps {
        out!(ctx, "  {s}");
    }
    for e in &done.plan.devices {
        out!(
            ctx,
            "{} bound to {} (was {}); undo with: vfiotool unbind {}",
            e.address,
            done.plan.driver,
            e.driver.as_deref().unwrap_or("no driver"),
            e.address
        );
    }
    for n in &done.dev_nodes {
        out!(ctx, "group node: {n}");
    }
    Ok(0)
}
