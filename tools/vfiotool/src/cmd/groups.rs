//! `vfiotool groups`: IOMMU groups, members, and whether VFIO can use each now.

use vfio_core::host::groups::list_groups;

use crate::context::{ids, out, print_json, warn_skipped, Context};

/// Arguments of `groups`.
#[derive(Debug, clap::Args)]
pub struct GroupsArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `groups`.
pub fn run(args: &GroupsArgs, ctx: &mut Context) -> vfio_core::Result<i32> {
    let scan = list_groups(&*ctx.fs, &ids(ctx))?;
    warn_skipped(ctx, &scan.skipped);
    let groups = scan.items;
    if args.json {
        print_json(ctx, &groups);
        return Ok(0);
    }
    if groups.is_empty() {
        out!(ctx, "no IOMMU groups: the IOMMU is not active; run 'vfiotool doctor' for the fix");
        return Ok(0);
    }
    for g in &groups {
        let state = if g.viable {
            "ready for VFIO".to_string()
        } else if g.blockers.is_empty() {
            "not known to be ready for VFIO (members could not be read)".to_string()
        } else {
            "not ready for VFIO (held by host drivers)".to_string()
        };
        let node = if g.dev_node { format!(", /dev/vfio/{}", g.id) } else { String::new() };
        out!(ctx, "group {}: {state}{node}", g.id);
        for m in &g.members {
            let role = if m.is_bridge() { " (bridge)" } else { "" };
            out!(
                ctx,
                "  {}  {}  {:<14} {}{role}",
                m.address,
                m.ids(),
                m.driver.as_deref().unwrap_or("-"),
                m.name()
            );
        }
        if let Some(a) = &g.advice {
            out!(ctx, "  fix: {}", crate::wording::cli(a));
        }
    }
    Ok(0)
}
