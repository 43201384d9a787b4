//! `vfiotool mdev`: mediated device types and instances.

use vfio_core::host::mdev::{create, list_instances, list_types, remove};

use crate::context::{out, print_json, Context};
use crate::dry_run::DryRunFs;

/// Arguments of `mdev`.
#[derive(Debug, clap::Args)]
pub struct MdevArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: MdevAction,
}

/// `mdev` actions.
#[derive(Debug, clap::Subcommand)]
pub enum MdevAction {
    /// List the types each parent device offers and the instances.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Create an instance of a type on a parent device.
    Create {
        /// The parent device: a PCI address (00:02.0) or another parent's name (mtty), as
        /// `mdev list` shows it.
        parent: String,
        /// The type id (a directory of mdev_supported_types).
        type_id: String,
        /// The UUID to use (a random one when absent).
        #[arg(long)]
        uuid: Option<String>,
        /// Print what would be done, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove an instance.
    Remove {
        /// Its UUID.
        uuid: String,
        /// Print what would be done, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Runs `mdev`.
pub fn run(args: &MdevArgs, ctx: &mut Context) -> vfio_core::Result<i32> {
    match &args.action {
        MdevAction::List { json } => {
            let types = list_types(&*ctx.fs)?;
            let inst = list_instances(&*ctx.fs);
            if *json {
                print_json(ctx, &serde_json::json!({ "types": types, "instances": inst }));
                return Ok(0);
            }
            if types.is_empty() {
                out!(ctx, "no device offers mediated device types");
            }
            for t in &types {
                out!(
                    ctx,
                    "{}  {}  {}  available {}  {}",
                    t.parent,
                    t.id,
                    t.name.as_deref().unwrap_or("-"),
                    t.available,
                    t.description.as_deref().unwrap_or("")
                );
                for i in &t.instances {
                    let group = inst
                        .iter()
                        .find(|x| x.uuid == *i)
                        .and_then(|x| x.iommu_group)
                        .map_or(String::new(), |g| format!(" (IOMMU group {g})"));
                    out!(ctx, "    instance {i}{group}");
                }
            }
        }
        MdevAction::Create { parent, type_id, uuid, dry_run: true } => {
            let dry = DryRunFs::new(ctx.fs.clone());
            create(&dry, parent, type_id, uuid.as_deref())?;
            dry.print(ctx);
        }
        MdevAction::Create { parent, type_id, uuid, dry_run: false } => {
            let u = create(&*ctx.fs, parent, type_id, uuid.as_deref())?;
            out!(ctx, "{u}");
        }
        MdevAction::Remove { uuid, dry_run: true } => {
            let dry = DryRunFs::new(ctx.fs.clone());
            remove(&dry, uuid)?;
            dry.print(ctx);
        }
        MdevAction::Remove { uuid, dry_run: false } => {
            remove(&*ctx.fs, uuid)?;
            out!(ctx, "removed {uuid}");
        }
    }
    Ok(0)
}
