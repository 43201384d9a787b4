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
    Info(InfoArgs),
    /// List PCI devices with their driver and IOMMU group.
    List(ListArgs),
    /// Mediated devices: list types and instances, create, remove.
    Mdev(cmd::mdev::MdevArgs),
    /// Print or write the boot-time configuration that puts devices on vfio-pci (and
    /// VF counts); list and remove what it wrote.
    Persist(cmd::persist::PersistArgs),
    /// Dump and check option ROMs.
    #[command(subcommand)]
    Rom(RomCommand),
    /// Return devices moved by `bind` to their prior driver (from the journal).
    Restore(cmd::restore::RestoreArgs),
    /// Capture the host files vfiotool reads into a directory (for --sysfs-root).
    Snapshot(cmd::snapshot::SnapshotArgs),
    /// Show or set the virtual functions of an SR-IOV device.
    Sriov(cmd::sriov::SriovArgs),
    /// Return a device from vfio-pci to its own driver.
    Unbind(cmd::unbind::UnbindArgs),
}

/// Arguments of `list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Select by ids, as lspci: vendor:device[:class[:prog-if]] in hex, `*` or empty for any.
    #[arg(short = 'd', long = "device", value_name = "V:D[:C]")]
    pub ids: Vec<String>,
    /// Select by a case-insensitive regular expression over vendor and device names.
    #[arg(long, value_name = "REGEX")]
    pub name: Vec<String>,
    /// Select by address: 0000:01:00.0, 01:00.0, or a slot 01:00.
    #[arg(value_name = "ADDRESS")]
    pub addresses: Vec<String>,
}

/// Arguments of `info`.
#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// The device (`0000:01:00.0` or `01:00.0`).
    pub address: String,
    /// More detail: `-v` decodes every capability (and reads the ROM, which enables
    /// the ROM BAR for a moment), `-vv` adds every field and a hex dump.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print JSON (the schema is in the user guide).
    #[arg(long)]
    pub json: bool,
    /// Do not open the device through VFIO even when it is bound to vfio-pci (opening
    /// makes the kernel reset the device when it can).
    #[arg(long)]
    pub no_vfio: bool,
    /// The kernel interface to open a vfio-pci device through.
    #[arg(long, value_enum, default_value_t = InterfaceArg::Auto)]
    pub interface: InterfaceArg,
}

/// The kernel interface a device is opened through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum InterfaceArg {
    /// iommufd when `/dev/iommu` and the device's cdev exist, else the legacy container.
    #[default]
    Auto,
    /// The legacy container (`/dev/vfio/vfio` and the group).
    Container,
    /// iommufd and the device cdev.
    Iommufd,
}

impl From<InterfaceArg> for vfio_core::Interface {
    fn from(a: InterfaceArg) -> Self {
        match a {
            InterfaceArg::Auto => vfio_core::Interface::Auto,
            InterfaceArg::Container => vfio_core::Interface::Container,
            InterfaceArg::Iommufd => vfio_core::Interface::Iommufd,
        }
    }
}

/// `rom` subcommands.
#[derive(Debug, Subcommand)]
pub enum RomCommand {
    /// Check a ROM file, or a device's ROM (read through VFIO or sysfs): images, code types, ids,
    /// checksums, UEFI (OVMF) capability. Exit 0 when valid, 2 when invalid.
    Check(RomCheckArgs),
    /// Dump a device's ROM to a file: through the VFIO ROM region when the device is bound
    /// to vfio-pci, else through sysfs (`echo 1 > rom; cat rom; echo 0 > rom`).
    Dump(RomDumpArgs),
}

/// Where a device's ROM is read from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RomSourceArg {
    /// VFIO when the device is bound to vfio-pci, else sysfs.
    #[default]
    Auto,
    /// The sysfs `rom` attribute of the device.
    Sysfs,
    /// The ROM region (index 6) of the device opened through VFIO (vfio-pci only).
    Vfio,
}

/// Arguments of `rom check`.
#[derive(Debug, clap::Args)]
pub struct RomCheckArgs {
    /// A ROM file, or a device address (`0000:01:00.0`) to read the ROM from.
    pub target: String,
    /// Compare the images' ids with this `VVVV:DDDD` (default for an address: the
    /// device's own ids).
    #[arg(long, value_name = "VVVV:DDDD")]
    pub device: Option<String>,
    /// Where to read a device's ROM from.
    #[arg(long, value_enum, default_value_t = RomSourceArg::Auto)]
    pub source: RomSourceArg,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `rom dump`.
#[derive(Debug, clap::Args)]
pub struct RomDumpArgs {
    /// The device (`0000:01:00.0`).
    pub address: String,
    /// The file to write.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Where to read the ROM from.
    #[arg(long, value_enum, default_value_t = RomSourceArg::Auto)]
    pub source: RomSourceArg,
    /// Print what would be done without touching the device.
    #[arg(long)]
    pub dry_run: bool,
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
        Command::Bench(args) => cmd::bench::run(args, ctx),
        Command::Bind(args) => cmd::bind::run(args, ctx),
        Command::Doctor(args) => cmd::doctor::run(args, ctx),
        Command::Groups(args) => cmd::groups::run(args, ctx),
        Command::Info(args) => cmd::info::run(args, ctx),
        Command::List(args) => cmd::list::run(args, ctx),
        Command::Mdev(args) => cmd::mdev::run(args, ctx),
        Command::Persist(args) => cmd::persist::run(args, ctx),
        Command::Rom(RomCommand::Check(args)) => cmd::rom::check(args, ctx),
        Command::Rom(RomCommand::Dump(args)) => cmd::rom::dump(args, ctx),
        Command::Restore(args) => cmd::restore::run(args, ctx),
        Command::Snapshot(args) => cmd::snapshot::run(args, ctx),
        Command::Sriov(args) => cmd::sriov::run(args, ctx),
        Command::Unbind(args) => cmd::unbind::run(args, ctx),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(ctx.err, "vfiotool: {e}");
            1
        }
    }
}
