//! Argument parsing and dispatch: the subcommands (each command's arguments live in its
//! module under [`crate::cmd`]) and the runner that calls the chosen one.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use vfio_core::hostfs::{HostFs, RealFs};
use vfio_core::kernel::RealKernel;

use crate::cmd;
use crate::context::Context;

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
    /// Measure passthrough latency on a device bound to vfio-pci: MMIO reads (writes only
    /// with `--write`), DMA map/unmap, interrupt setup, software-triggered interrupts.
    Bench(cmd::bench::BenchArgs),
    /// Bind a device, a slot or an IOMMU group to vfio-pci (transactional, undoable).
    Bind(cmd::bind::BindArgs),
    /// Check the host for PCI passthrough; exits non-zero when a check fails.
    Doctor(cmd::doctor::DoctorArgs),
    /// List IOMMU groups, their members, and whether VFIO can use each.
    Groups(cmd::groups::GroupsArgs),
    /// Show everything about one PCI device: ids, BARs, capabilities, driver, IOMMU group.
    Info(cmd::info::InfoArgs),
    /// List PCI devices with their driver and IOMMU group.
    List(cmd::list::ListArgs),
    /// Mediated devices: list types and instances, create, remove.
    Mdev(cmd::mdev::MdevArgs),
    /// Print or write the boot-time configuration that puts devices on vfio-pci (and
    /// VF counts); list and remove what it wrote.
    Persist(cmd::persist::PersistArgs),
    /// Dump and check option ROMs.
    #[command(subcommand)]
    Rom(cmd::rom::RomCommand),
    /// Return devices moved by `bind` to their prior driver (from the journal).
    Restore(cmd::restore::RestoreArgs),
    /// Capture the host files vfiotool reads into a directory (for --sysfs-root).
    Snapshot(cmd::snapshot::SnapshotArgs),
    /// Show or set the virtual functions of an SR-IOV device.
    Sriov(cmd::sriov::SriovArgs),
    /// Return a device from vfio-pci to its own driver.
    Unbind(cmd::unbind::UnbindArgs),
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
        Command::Bench(args) => cmd::bench::run(args, ctx),
        Command::Bind(args) => cmd::bind::run(args, ctx),
        Command::Doctor(args) => cmd::doctor::run(args, ctx),
        Command::Groups(args) => cmd::groups::run(args, ctx),
        Command::Info(args) => cmd::info::run(args, ctx),
        Command::List(args) => cmd::list::run(args, ctx),
        Command::Mdev(args) => cmd::mdev::run(args, ctx),
        Command::Persist(args) => cmd::persist::run(args, ctx),
        Command::Rom(command) => cmd::rom::run(command, ctx),
        Command::Restore(args) => cmd::restore::run(args, ctx),
        Command::Snapshot(args) => cmd::snapshot::run(args, ctx),
        Command::Sriov(args) => cmd::sriov::run(args, ctx),
        Command::Unbind(args) => cmd::unbind::run(args, ctx),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(ctx.err, "vfiotool: {}", crate::wording::cli(&e.to_string()));
            1
        }
    }
}
