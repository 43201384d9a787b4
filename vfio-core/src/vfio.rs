//! Opening devices by PCI address: finds the group or cdev in sysfs, picks the kernel
//! interface, and sets up the container or IOAS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::container::{Container, IommuType};
use crate::device::Device;
use crate::dma::AddressSpace;
use crate::error::{Error, Result};
use crate::hostfs::{HostFs, RealFs, SysfsDevice};
use crate::iommufd::Iommufd;
use crate::kernel::{GroupNode, RealKernel, VfioKernel};
use crate::pci::PciAddress;

/// Which kernel interface to open devices through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Interface {
    /// iommufd when `/dev/iommu` and the device's cdev exist, else the legacy container
    /// (type1v2, falling back to type1; no-IOMMU for no-IOMMU groups).
    #[default]
    Auto,
    /// The legacy container, with the best type1 the kernel offers.
    Container,
    /// The legacy container with a forced IOMMU type.
    ContainerWith(IommuType),
    /// iommufd and the device cdev.
    Iommufd,
}

/// Where a device sits as far as VFIO is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceLocation {
    /// Its address.
    pub address: PciAddress,
    /// Driver bound now.
    pub driver: Option<String>,
    /// Its group node (`None`: no IOMMU group).
    pub group: Option<GroupNode>,
    /// `N` of `/dev/vfio/devices/vfioN` (`None`: no cdev, or not bound to vfio-pci).
    pub cdev: Option<u32>,
}

/// The entry point: a kernel and a host view, from which devices are opened.
#[derive(Debug, Clone)]
pub struct Vfio {
    kernel: Arc<dyn VfioKernel>,
    fs: Arc<dyn HostFs>,
}

/// The cdev number of a device that can be opened through iommufd. A device in a
/// no-IOMMU group cannot: 6.12 lists `vfio-dev/vfioN` in sysfs for it but makes no
/// `/dev/vfio/devices` node (seen in the lab).
pub(crate) fn cdev_of(loc: &DeviceLocation) -> Result<u32> {
    match (loc.cdev, loc.group) {
        (Some(n), g) if !matches!(g, Some(GroupNode::NoIommu(_))) => Ok(n),
        _ => Err(no_cdev(loc)),
    }
}

/// Why a device has no cdev, with the way out.
fn no_cdev(loc: &DeviceLocation) -> Error {
    let hint = if matches!(loc.group, Some(GroupNode::NoIommu(_))) {
        "it is in a no-IOMMU group, whose devices have no cdev node (Linux 6.12 lists one \
         in sysfs but makes no /dev/vfio/devices node); use Interface::Container"
    } else {
        "the kernel has no VFIO_DEVICE_CDEV, or the device is not bound to vfio-pci; \
         use Interface::Container"
    };
    Error::NotFound {
        what: format!("VFIO device cdev of {}", loc.address),
        hint: Some(hint.into()),
    }
}

impl Vfio {
    /// Over explicit backends (a `mock::MockHost`'s kernel and view in tests).
    pub fn new(kernel: Arc<dyn VfioKernel>, fs: Arc<dyn HostFs>) -> Self {
        Vfio { kernel, fs }
    }

    /// The live host: `/dev` and `/`.
    pub fn host() -> Self {
        Vfio::new(Arc::new(RealKernel::new()), Arc::new(RealFs::new("/")))
    }

    /// The kernel seam in use.
    pub fn kernel(&self) -> &Arc<dyn VfioKernel> {
        &self.kernel
    }

    /// The host view in use.
    pub fn fs(&self) -> &Arc<dyn HostFs> {
        &self.fs
    }

    /// Reads where a device sits: driver, group node, cdev.
    pub fn locate(&self, address: PciAddress) -> Result<DeviceLocation> {
        let dev = SysfsDevice::new(&*self.fs, address);
        if !dev.exists() {
            return Err(Error::NotFound {
                what: format!("PCI device {address}"),
                hint: Some("the devices of this host are under /sys/bus/pci/devices".into()),
            });
        }
        let group = dev.iommu_group().map(|n| {
            let name = self
                .fs
                .read_string(Path::new(&format!("/sys/kernel/iommu_groups/{n}/name")))
                .unwrap_or_default();
            if name == "vfio-noiommu"
                || self.fs.exists(Path::new(&format!("/dev/vfio/noiommu-{n}")))
            {
                GroupNode::NoIommu(n)
            } else {
                GroupNode::Iommu(n)
            }
        });
        Ok(DeviceLocation { address, driver: dev.driver(), group, cdev: dev.vfio_cdev() })
    }

    /// The members of a group that keep it from being viable, with their drivers.
    pub fn group_blockers(&self, group: u32) -> Vec<(String, String)> {
        let dir = PathBuf::from(format!("/sys/kernel/iommu_groups/{group}/devices"));
        self.fs
            .read_dir(&dir)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|name| {
                let a = PciAddress::parse(&name).ok().filter(|a| a.to_string() == name)?;
                Some((name, SysfsDevice::new(&*self.fs, a).blocks_group()?))
            })
            .collect()
    }

    fn not_viable(&self, group: u32) -> Error {
        let blockers = self.group_blockers(group);
        let first = blockers.first().map(|b| b.0.clone()).unwrap_or_default();
        Error::GroupNotViable { group, first, blockers }
    }

    pub(crate) fn check_bound(&self, loc: &DeviceLocation) -> Result<()> {
        match loc.driver.as_deref() {
            Some("vfio-pci") => Ok(()),
            other => Err(Error::Unsupported {
                what: format!(
                    "VFIO access to {} ({})",
                    loc.address,
                    other.map_or("bound to no driver".to_string(), |d| format!("bound to {d}"))
                ),
                hint: Some(format!("bind {} to vfio-pci first", loc.address)),
            }),
        }
    }

    /// Opens a device in a new address space of its own.
    pub fn open(&self, address: PciAddress, interface: Interface) -> Result<Device> {
        let loc = self.locate(address)?;
        self.check_bound(&loc)?;
        let space = if self.use_iommufd(&loc, interface) {
            AddressSpace::Ioas(Iommufd::open(self.kernel.clone())?.alloc_ioas()?)
        } else {
            let wanted = match interface {
                Interface::ContainerWith(t) => Some(t),
                _ => None,
            };
            AddressSpace::Container(Container::open(self.kernel.clone(), wanted)?)
        };
        self.open_located(&loc, &space)
    }

    /// Whether a device is opened through iommufd for an interface choice.
    pub(crate) fn use_iommufd(&self, loc: &DeviceLocation, interface: Interface) -> bool {
        match interface {
            Interface::Iommufd => true,
            Interface::Auto => {
                loc.cdev.is_some()
                    && self.fs.exists(Path::new("/dev/iommu"))
                    && !matches!(loc.group, Some(GroupNode::NoIommu(_)))
            }
            Interface::Container | Interface::ContainerWith(_) => false,
        }
    }

    /// Opens a device into an existing address space (another device's, so that both
    /// share DMA mappings).
    pub fn open_in(&self, address: PciAddress, space: &AddressSpace) -> Result<Device> {
        let loc = self.locate(address)?;
        self.check_bound(&loc)?;
        self.open_located(&loc, space)
    }

    fn open_located(&self, loc: &DeviceLocation, space: &AddressSpace) -> Result<Device> {
        match space {
            AddressSpace::Container(c) => {
                let node = loc.group.ok_or_else(|| Error::NotFound {
                    what: format!("IOMMU group of {}", loc.address),
                    hint: Some(
                        "no IOMMU covers the device: enable the IOMMU (in the firmware and on \
                         the kernel command line), or use no-IOMMU mode at your own risk"
                            .into(),
                    ),
                })?;
                let group = c.group(node, || self.not_viable(node.id()))?;
                Device::open_in_group(&group, loc.address)
            }
            AddressSpace::Ioas(ioas) => {
                let cdev = cdev_of(loc)?;
                Device::open_cdev(ioas, loc.address, cdev)
            }
        }
    }
}
