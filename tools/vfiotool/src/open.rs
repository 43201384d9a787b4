//! Finding a device and opening it through VFIO, for the commands that talk to a device
//! through the kernel (`info`, `rom`, `bench`): the `--interface` argument, the refusal
//! to open anything through a captured tree, and the "bind it first" error.

use std::path::Path;

use vfio_core::host::require_device;
use vfio_core::hostfs::{HostFs, NodeKind, SysfsDevice};
use vfio_core::{Device, Error, Interface, PciAddress, Result, Vfio};

use crate::context::Context;

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

impl From<InterfaceArg> for Interface {
    fn from(a: InterfaceArg) -> Self {
        match a {
            InterfaceArg::Auto => Interface::Auto,
            InterfaceArg::Container => Interface::Container,
            InterfaceArg::Iommufd => Interface::Iommufd,
        }
    }
}

/// The VFIO entry point on the context's backends.
pub fn vfio(ctx: &Context) -> Vfio {
    Vfio::new(ctx.kernel.clone(), ctx.fs.clone())
}

/// Checks that `addr` is a PCI device of the host view; the error ends with `hint`.
pub fn existing_device(fs: &dyn HostFs, addr: PciAddress, hint: &str) -> Result<()> {
    require_device(fs, addr).map_err(|e| e.with_hint(hint))
}

/// Checks that the host view has live VFIO device nodes (`/dev/vfio/vfio` or
/// `/dev/iommu` as character devices). A captured tree (`--sysfs-root`) holds empty files
/// in their place: opening a device through it would reach this machine's kernel with
/// another machine's group numbers, so it is refused.
pub fn check_live_vfio(fs: &dyn HostFs) -> Result<()> {
    let live = ["/dev/vfio/vfio", "/dev/iommu"]
        .iter()
        .any(|p| fs.metadata(Path::new(p)).is_ok_and(|m| m.kind == NodeKind::CharDevice));
    if live {
        return Ok(());
    }
    Err(Error::Unsupported {
        what: "VFIO through this host view (/dev/vfio/vfio and /dev/iommu are not device nodes)"
            .into(),
        hint: Some(
            "on a captured tree (--sysfs-root) only sysfs is read; on a live host load VFIO: \
             modprobe vfio-pci"
                .into(),
        ),
    })
}

/// Whether `addr` can be opened through VFIO here: it is bound to vfio-pci and the host
/// view has live VFIO device nodes.
pub fn vfio_usable(vfio: &Vfio, addr: PciAddress) -> bool {
    let fs = vfio.fs().as_ref();
    SysfsDevice::new(fs, addr).driver().as_deref() == Some("vfio-pci")
        && check_live_vfio(fs).is_ok()
}

/// Opens a device through VFIO after [`check_live_vfio`]; a device not bound to
/// vfio-pci gets the "bind it first" error without the kernel being asked.
pub fn open_live(vfio: &Vfio, addr: PciAddress, interface: Interface) -> Result<Device> {
    if vfio.locate(addr)?.driver.as_deref() == Some("vfio-pci") {
        check_live_vfio(vfio.fs().as_ref())?;
    }
    vfio.open(addr, interface)
}
