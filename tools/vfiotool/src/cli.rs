//! Argument parsing and dispatch.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use vfio_core::hostfs::{HostFs, RealFs};
use vfio_core::kernel::{RealKernel, VfioKernel};

use crate::cmd;

/// Check a host for PCI passthrough, inspect devices and drive them through VFIO.
#[derive(Debug, Parser)]
#[command(name = "vfiotool", version, about, long_about = None)]
pub struct Cli {
    /// Read and change the host through this directory instead of `/` (a tree captured
    /// with `vfiotool snapshot`, or a test tree).
    #[arg(long, global = true, env = "VFIOTOOL_SYSFS_ROOT", value_name = "DIR")]
    pub sysfs_root: Option<PathBuf>,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List PCI devices with their driver and IOMMU group.
    List(ListArgs),
}

/// Arguments of `list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The backends and output streams a command runs against.
pub struct Context {
    /// The host's filesystem view.
    pub fs: Arc<dyn HostFs>,
    /// The kernel's VFIO interface.
    pub kernel: Arc<dyn VfioKernel>,
    /// Standard output.
    pub out: Box<dyn Write>,
    /// Standard error.
    pub err: Box<dyn Write>,
}

/// Parses the process arguments, runs the command on the real host, returns the exit code.
pub fn main_with_env() -> i32 {
    let cli = Cli::parse();
    let fs: Arc<dyn HostFs> =
        Arc::new(RealFs::new(cli.sysfs_root.clone().unwrap_or_else(|| "/".into())));
    let mut ctx = Context {
        fs,
        kernel: Arc::new(RealKernel::new()),
        out: Box::new(std::io::stdout()),
        err: Box::new(std::io::stderr()),
    };
    run(cli, &mut ctx)
}

/// Runs a parsed command; errors are printed as one line on `ctx.err`.
pub fn run(cli: Cli, ctx: &mut Context) -> i32 {
    let result = match &cli.command {
        Command::List(args) => cmd::list::run(args, ctx),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(ctx.err, "vfiotool: {e}");
            1
        }
    }
}
