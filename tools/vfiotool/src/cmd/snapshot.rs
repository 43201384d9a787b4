//! `vfiotool snapshot`: capture the host's files for `--sysfs-root`.

use std::path::PathBuf;

use vfio_core::host::snapshot::snapshot;

use crate::cli::Context;
use crate::cmd::out;

/// Arguments of `snapshot`.
#[derive(Debug, clap::Args)]
pub struct SnapshotArgs {
    /// The directory to write the tree into.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// Runs `snapshot`.
pub fn run(args: &SnapshotArgs, ctx: &mut Context) -> vfio_core::Result<i32> {
    let r = snapshot(&*ctx.fs, &args.dir)?;
    out!(
        ctx,
        "captured {} files, {} links, {} directories into {} ({} unreadable paths skipped); read it back with: vfiotool --sysfs-root {} list",
        r.files,
        r.links,
        r.dirs,
        args.dir.display(),
        r.skipped.len(),
        args.dir.display()
    );
    Ok(0)
}
