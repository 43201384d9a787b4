//! `vfiotool sriov`: show or set the virtual functions of an SR-IOV device.

use vfio_core::host::journal::read_journal;
use vfio_core::host::sriov::{set_num_vfs, sriov_state, vfs_removed_by};

use crate::context::{address, out, Context};
use crate::dry_run::DryRunFs;

/// Arguments of `sriov`.
#[derive(Debug, clap::Args)]
pub struct SriovArgs {
    /// The physical function.
    #[arg(value_name = "ADDRESS")]
    pub address: String,
    /// Enable this many VFs (0 disables them); bounded by sriov_totalvfs.
    #[arg(long, value_name = "N")]
    pub numvfs: Option<u16>,
    /// With --numvfs: remove VFs even when they are bound to vfio-pci or used by the
    /// host, and drop the bind journal entries of the VFs that are gone.
    #[arg(long, requires = "numvfs")]
    pub force: bool,
    /// With --numvfs: print what would be done, change nothing.
    #[arg(long, requires = "numvfs")]
    pub dry_run: bool,
}

/// Runs `sriov`.
pub fn run(args: &SriovArgs, ctx: &mut Context) -> vfio_core::Result<i32> {
    let a = address(&args.address)?;
    if let (true, Some(n)) = (args.dry_run, args.numvfs) {
        let dry = DryRunFs::new(ctx.fs.clone());
        let before = sriov_state(&*ctx.fs, a)?;
        set_num_vfs(&dry, a, n, args.force)?;
        dry.print(ctx);
        // The VFs that would be gone for good, and their journal entries.
        let journal = read_journal(&*ctx.fs).unwrap_or_default();
        for v in vfs_removed_by(&*ctx.fs, &before, n) {
            if v.in_use() {
                out!(ctx, "would remove {}", v.describe());
            }
            if !v.returns && journal.entry(v.vf).is_some() {
                out!(ctx, "would drop the bind journal entry of {} (the VF would be gone)", v.vf);
            }
        }
        return Ok(0);
    }
    let st = match args.numvfs {
        Some(n) => {
            let c = set_num_vfs(&*ctx.fs, a, n, args.force)?;
            for v in c.removed.iter().filter(|v| v.in_use()) {
                out!(ctx, "removed {}", v.describe());
            }
            for e in &c.dropped {
                out!(
                    ctx,
                    "dropped the bind journal entry of {}: the VF no longer exists (it was on {} before vfiotool bound it)",
                    e.address,
                    e.driver.as_deref().unwrap_or("no driver")
                );
            }
            c.state
        }
        None => sriov_state(&*ctx.fs, a)?,
    };
    out!(ctx, "{}: {} of {} VFs enabled", st.address, st.num_vfs, st.total_vfs);
    for (vf, drv) in &st.vfs {
        out!(ctx, "  {vf}  {}", drv.as_deref().unwrap_or("-"));
    }
    Ok(0)
}
