//! fd passing: a privileged process opens a device's descriptors, an unprivileged one
//! (a VMM, sandboxed) builds the device on them with no access to `/dev/vfio`,
//! `/dev/iommu` or sysfs.
//!
//! This is how management stacks run VMMs: libvirt, KubeVirt or a cloud-hypervisor
//! launcher open the nodes as root and pass the descriptors (inherited, or over a Unix
//! socket with `SCM_RIGHTS`). [`Vfio::open_fds`] is the privileged half: it finds the
//! device's nodes through sysfs and opens them, changing nothing else.
//! [`DeviceFds::open`] is the other half; the objects' own `from_fd` constructors
//! ([`Container::from_fd`], [`Container::group_from_fd`], [`Iommufd::from_fd`],
//! [`Iommufd::ioas`], [`Device::from_cdev_fd`]) serve other splits (an iommufd and IOAS
//! shared between several VMMs, say).

use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::container::{Container, IommuType};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::group::Group;
use crate::iommufd::Iommufd;
use crate::kernel::{GroupNode, VfioKernel};
use crate::pci::PciAddress;
use crate::vfio::{Interface, Vfio};

/// The descriptors of one device, opened by a privileged process for another.
#[derive(Debug)]
pub enum DeviceFds {
    /// The legacy interface: `/dev/vfio/vfio` and the group node.
    Group {
        /// `/dev/vfio/vfio`.
        container: OwnedFd,
        /// `/dev/vfio/N` (or `/dev/vfio/noiommu-N`).
        group: OwnedFd,
        /// Which group node `group` is.
        node: GroupNode,
        /// The device.
        address: PciAddress,
    },
    /// iommufd: `/dev/iommu` and the device cdev `/dev/vfio/devices/vfioN`.
    Cdev {
        /// `/dev/iommu`.
        iommufd: OwnedFd,
        /// The device cdev.
        device: OwnedFd,
        /// The device.
        address: PciAddress,
    },
}

impl Vfio {
    /// Opens the nodes a process needs to use a device through `interface`, and nothing
    /// more: no container is set up, no device opened. Needs the privileges `open` needs
    /// (root, or ownership of the nodes); the result can be handed to a process that has
    /// none.
    pub fn open_fds(&self, address: PciAddress, interface: Interface) -> Result<DeviceFds> {
        let loc = self.locate(address)?;
        self.check_bound(&loc)?;
        let kernel = self.kernel();
        if self.use_iommufd(&loc, interface) {
            let cdev = crate::vfio::cdev_of(&loc)?;
            let iommufd = Iommufd::open_node(kernel)?;
            let device = match Device::open_cdev_node(kernel, &address.to_string(), cdev) {
                Ok(d) => d,
                Err(e) => {
                    kernel.close(iommufd);
                    return Err(e);
                }
            };
            Ok(DeviceFds::Cdev {
                iommufd: kernel.export(iommufd),
                device: kernel.export(device),
                address,
            })
        } else {
            let node = loc.group.ok_or_else(|| Error::NotFound {
                what: format!("IOMMU group of {address}"),
                hint: Some(
                    "no IOMMU covers the device: enable the IOMMU (in the firmware and on the kernel command line)"
                        .into(),
                ),
            })?;
            let container = Container::open_node(kernel)?;
            let group = match Group::open_node(kernel, node) {
                Ok(g) => g,
                Err(e) => {
                    kernel.close(container);
                    return Err(e);
                }
            };
            Ok(DeviceFds::Group {
                container: kernel.export(container),
                group: kernel.export(group),
                node,
                address,
            })
        }
    }
}

impl DeviceFds {
    /// The device the descriptors are for.
    pub fn address(&self) -> PciAddress {
        match self {
            DeviceFds::Group { address, .. } | DeviceFds::Cdev { address, .. } => *address,
        }
    }

    /// Builds the device on the descriptors, in a new address space of its own (a new
    /// IOAS on the iommufd; the container with `wanted` or the best type1). Opens nothing
    /// by path and reads no sysfs.
    pub fn open(self, kernel: Arc<dyn VfioKernel>, wanted: Option<IommuType>) -> Result<Device> {
        match self {
            DeviceFds::Group { container, group, node, address } => {
                let c = Container::from_fd(kernel, container, wanted)?;
                let g = c.group_from_fd(node, group)?;
                Device::open_in_group(&g, address)
            }
            DeviceFds::Cdev { iommufd, device, address } => {
                let ioas = Iommufd::from_fd(kernel, iommufd)?.alloc_ioas()?;
                Device::from_cdev_fd(&ioas, device, &address.to_string())
            }
        }
    }
}
