//! `vfiotool info`: one device through sysfs (config space, BAR sizes, driver, IOMMU
//! group, reset methods, SR-IOV, ROM) and, when it is bound to vfio-pci, through VFIO,
//! as text or JSON.
//!
//! [`collect`](mod@collect) gathers the host's facts, [`vfio::vfio_section`] what the kernel reports
//! through VFIO, [`render::render`] writes the text.

pub mod caps;
pub mod collect;
pub mod render;
pub mod vfio;

use vfio_core::{PciAddress, Result};

pub use collect::{collect, DeviceReport, Names, SCHEMA};
pub use render::render;

use crate::context::{ids, json_text, write_out, Context};
use crate::open::{self, InterfaceArg};

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

/// Runs `info`.
pub fn run(args: &InfoArgs, ctx: &mut Context) -> Result<i32> {
    let addr = PciAddress::parse(&args.address)?;
    let ids = ids(ctx);
    let mut info = collect(ctx.fs.as_ref(), addr, args.verbose >= 1)?;
    info.names = Names::lookup(&ids, &info.config);
    if !args.no_vfio && info.driver.as_deref() == Some("vfio-pci") {
        info.vfio = Some(vfio::vfio_section(&open::vfio(ctx), addr, args.interface.into()));
    }
    let text = if args.json { json_text(&info) } else { render(&info, args.verbose) };
    write_out(ctx, &text)?;
    Ok(0)
}
