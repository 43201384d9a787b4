//! `vfiotool sriov`: show or set the virtual functions of an SR-IOV device.

use vfio_core::host::sriov::{set_num_vfs, sriov_state};

use crate::cli::Context;
use crate::cmd::{address, out};
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
    /// With --numvfs: print what would be done, change nothing.
    #[arg(long, requires = "numvfs")]
    pub dry_run: bool,
}

/// Runs `sriov`.
pub fn run(args: &SriovArgs, ctx: &mut Context) -> vfio_core::Result<i32> {
    let a = address(&args.address)?;
    if let (true, Some(n)) = (args.dry_run, args.numvfs) {
        let dry = DryRunFs::new(ctx.fs.clone());
        set_num_vfs(&dry, a, n)?;
        dry.print(ctx);
        return Ok(0);
    }
    let st = match args.numvfs {
        Some(n) => set_num_vfs(&*ctx.fs, a, n)?,
        None => sriov_state(&*ctx.fs, a)?,
    };
    out!(ctx, "{}: {} of {} VFs enabled", st.address, st.num_vfs, st.total_vfs);
    for (vf, drv) in &st.vfs {
        out!(ctx, "  {vf}  {}", drv.as_deref().unwrap_or("-"));
    }
    Ok(0)
}
