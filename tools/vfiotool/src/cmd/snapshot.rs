//! `vfiotool snapshot`: capture the host's files for `--sysfs-root`.

use std::path::PathBuf;

use vfio_core::host::snapshot::{snapshot, Disposition, SnapshotOptions};

use crate::context::{out, Context};

/// Arguments of `snapshot`.
#[derive(Debug, clap::Args)]
pub struct SnapshotArgs {
    /// The directory to create and write the tree into; it must not exist.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Keep identifying content verbatim (/etc/passwd, the whole kernel log, disk
    /// identifiers, addresses, mount points, serial numbers); by default it is left out
    /// or redacted.
    #[arg(long)]
    pub keep_private: bool,
}

/// Runs `snapshot`: prints every file with what happened to it, then a summary.
pub fn run(args: &SnapshotArgs, ctx: &mut Context) -> vfio_core::Result<i32> {
    let opts = SnapshotOptions { keep_private: args.keep_private };
    let r = snapshot(&*ctx.fs, &args.dir, &opts)?;
    for e in &r.entries {
        match &e.note {
            Some(n) => out!(
                ctx,
                "{:<9} {}  ({})",
                e.disposition.to_string(),
                e.path,
                crate::wording::cli(n)
            ),
            None => out!(ctx, "{:<9} {}", e.disposition.to_string(), e.path),
        }
    }
    let dir = args.dir.display();
    out!(
        ctx,
        "captured {} files ({} kept, {} redacted), {} links, {} directories into {dir}; {} left out, {} skipped",
        r.files,
        r.count(Disposition::Kept),
        r.count(Disposition::Redacted),
        r.links,
        r.dirs,
        r.count(Disposition::LeftOut),
        r.count(Disposition::Skipped),
    );
    if !args.keep_private && r.count(Disposition::Redacted) + r.count(Disposition::LeftOut) > 0 {
        out!(ctx, "identifying content was left out or redacted; --keep-private keeps it");
    }
    out!(ctx, "read it back with: vfiotool --sysfs-root {dir} list");
    Ok(0)
}
