//! Opening devices by PCI address, and mediated devices by UUID: finds the group or
//! cdev in sysfs, picks the kernel interface, and sets up the container or IOAS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::container::{Container, IommuType};
use crate::device::Device;
use crate::dma::AddressSpace;
use crate::error::{Error, Result};
use crate::feature::VfToken;
use crate::hostfs::{HostFs, RealFs, SysfsDevice, SysfsMdev};
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

/// Where a mediated device instance sits as far as VFIO is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdevLocation {
    /// Its UUID (lower case): the device name VFIO knows it by.
    pub uuid: String,
    /// The mdev driver bound to it (`None`: it is no VFIO device).
    pub driver: Option<String>,
    /// Its group node: the virtual group vfio made for it (`None`: no driver yet).
    pub group: Option<GroupNode>,
    /// `N` of `/dev/vfio/devices/vfioN` (`None`: no cdev).
    pub cdev: Option<u32>,
}

/// What opening a device needs, whether it is a PCI device or an mdev.
struct Target {
    /// The device name VFIO knows it by.
    name: String,
    group: Option<GroupNode>,
    cdev: Option<u32>,
    /// An mdev: its group is virtual and it has no PCI function behind it.
    mdev: bool,
}

impl From<&DeviceLocation> for Target {
    fn from(loc: &DeviceLocation) -> Self {
        Target { name: loc.address.to_string(), group: loc.group, cdev: loc.cdev, mdev: false }
    }
}

impl From<&MdevLocation> for Target {
    fn from(loc: &MdevLocation) -> Self {
        Target { name: loc.uuid.clone(), group: loc.group, cdev: loc.cdev, mdev: true }
    }
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
    target_cdev(&Target::from(loc))
}

fn target_cdev(t: &Target) -> Result<u32> {
    match (t.cdev, t.group) {
        (Some(n), g) if !matches!(g, Some(GroupNode::NoIommu(_))) => Ok(n),
        _ => Err(no_cdev(t)),
    }
}

fn target_group(t: &Target) -> Result<GroupNode> {
    t.group.ok_or_else(|| Error::NotFound {
        what: format!("IOMMU group of {}", t.name),
        hint: Some(if t.mdev {
            "no mdev driver has made the instance a VFIO device (is the parent's driver \
             loaded?)"
                .into()
        } else {
            "no IOMMU covers the device: enable the IOMMU (in the firmware and on the kernel \
             command line), or use no-IOMMU mode at your own risk"
                .into()
        }),
    })
}

/// Why a device has no cdev, with the way out.
fn no_cdev(t: &Target) -> Error {
    let hint = if matches!(t.group, Some(GroupNode::NoIommu(_))) {
        "it is in a no-IOMMU group, whose devices have no cdev node (Linux 6.12 lists one \
         in sysfs but makes no /dev/vfio/devices node); use Interface::Container"
    } else if t.mdev {
        "the kernel has no VFIO_DEVICE_CDEV, or no mdev driver is bound to the instance; \
         use Interface::Container"
    } else {
        "the kernel has no VFIO_DEVICE_CDEV, or the device is not bound to vfio-pci; \
         use Interface::Container"
    };
    Error::NotFound { what: format!("VFIO device cdev of {}", t.name), hint: Some(hint.into()) }
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

    /// Reads where a mediated device instance sits: its mdev driver, its group (the
    /// virtual group vfio makes for each instance) and its cdev.
    ///
    /// The group's `name` reads `vfio-noiommu` for these groups too (vfio names every
    /// group it makes so), but their node is `/dev/vfio/N`: only a `/dev/vfio/noiommu-N`
    /// node makes a no-IOMMU group.
    pub fn locate_mdev(&self, uuid: &str) -> Result<MdevLocation> {
        let dev = SysfsMdev::new(&*self.fs, uuid)?;
        if !dev.exists() {
            return Err(Error::NotFound {
                what: format!("mediated device {}", dev.uuid()),
                hint: Some(
                    "the instances are under /sys/bus/mdev/devices; create one with \
                     vfio_core::host::mdev::create (vfiotool mdev create)"
                        .into(),
                ),
            });
        }
        let group = dev.iommu_group().map(|n| {
            if self.fs.exists(Path::new(&format!("/dev/vfio/noiommu-{n}"))) {
                GroupNode::NoIommu(n)
            } else {
                GroupNode::Iommu(n)
            }
        });
        Ok(MdevLocation {
            uuid: dev.uuid().to_string(),
            driver: dev.driver(),
            group,
            cdev: dev.vfio_cdev(),
        })
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
        self.open_target(&Target::from(&loc), interface)
    }

    /// Opens a device in a new address space of its own presenting a VF token: a VF
    /// whose PF is on vfio-pci (with the token set on the PF, [`Device::set_vf_token`]),
    /// or such a PF while its VFs are open. Through the group the token goes in the
    /// device name (`vf_token=`); through the cdev with `VFIO_DEVICE_BIND_FLAG_TOKEN`.
    /// A missing or wrong token is [`Error::VfToken`].
    pub fn open_with_token(
        &self,
        address: PciAddress,
        interface: Interface,
        token: &VfToken,
    ) -> Result<Device> {
        let loc = self.locate(address)?;
        self.check_bound(&loc)?;
        let t = Target::from(&loc);
        let space = self.new_space(&t, interface)?;
        match &space {
            AddressSpace::Container(c) => {
                let node = target_group(&t)?;
                let group = c.group(node, || self.not_viable(node.id()))?;
                Device::open_in_group_token(&group, &t.name, Some(token))
            }
            AddressSpace::Ioas(ioas) => {
                let cdev = target_cdev(&t)?;
                Device::open_cdev_token(ioas, &t.name, cdev, Some(token))
            }
        }
    }

    /// Opens a mediated device instance (`uuid`, as created with
    /// `host::mdev::create`) in a new address space of its own, through its virtual
    /// group or its cdev as `interface` says. The device's name is its UUID; its regions
    /// and interrupts are whatever its mdev driver offers (vfio-pci's layout for a
    /// `vfio-pci` device API).
    pub fn open_mdev(&self, uuid: &str, interface: Interface) -> Result<Device> {
        let loc = self.locate_mdev(uuid)?;
        check_mdev_driver(&loc)?;
        self.open_target(&Target::from(&loc), interface)
    }

    /// Opens a mediated device instance into an existing address space.
    pub fn open_mdev_in(&self, uuid: &str, space: &AddressSpace) -> Result<Device> {
        let loc = self.locate_mdev(uuid)?;
        check_mdev_driver(&loc)?;
        self.open_in_space(&Target::from(&loc), space)
    }

    fn open_target(&self, t: &Target, interface: Interface) -> Result<Device> {
        let space = self.new_space(t, interface)?;
        self.open_in_space(t, &space)
    }

    fn new_space(&self, t: &Target, interface: Interface) -> Result<AddressSpace> {
        // Without a cdev or a group there is nothing to open: say so before opening
        // /dev/iommu or /dev/vfio/vfio.
        Ok(if self.iommufd_for(t, interface) {
            target_cdev(t)?;
            AddressSpace::Ioas(Iommufd::open(self.kernel.clone())?.alloc_ioas()?)
        } else {
            target_group(t)?;
            let wanted = match interface {
                Interface::ContainerWith(t) => Some(t),
                _ => None,
            };
            AddressSpace::Container(Container::open(self.kernel.clone(), wanted)?)
        })
    }

    /// Whether a device is opened through iommufd for an interface choice.
    pub(crate) fn use_iommufd(&self, loc: &DeviceLocation, interface: Interface) -> bool {
        self.iommufd_for(&Target::from(loc), interface)
    }

    fn iommufd_for(&self, t: &Target, interface: Interface) -> bool {
        match interface {
            Interface::Iommufd => true,
            Interface::Auto => {
                t.cdev.is_some()
                    && self.fs.exists(Path::new("/dev/iommu"))
                    && !matches!(t.group, Some(GroupNode::NoIommu(_)))
            }
            Interface::Container | Interface::ContainerWith(_) => false,
        }
    }

    /// Opens a device into an existing address space (another device's, so that both
    /// share DMA mappings).
    pub fn open_in(&self, address: PciAddress, space: &AddressSpace) -> Result<Device> {
        let loc = self.locate(address)?;
        self.check_bound(&loc)?;
        self.open_in_space(&Target::from(&loc), space)
    }

    fn open_in_space(&self, t: &Target, space: &AddressSpace) -> Result<Device> {
        match space {
            AddressSpace::Container(c) => {
                let node = target_group(t)?;
                let group = c.group(node, || self.not_viable(node.id()))?;
                Device::open_named_in_group(&group, &t.name)
            }
            AddressSpace::Ioas(ioas) => {
                let cdev = target_cdev(t)?;
                Device::open_named_cdev(ioas, &t.name, cdev)
            }
        }
    }
}

/// An mdev is a VFIO device only while an mdev driver is bound to it.
fn check_mdev_driver(loc: &MdevLocation) -> Result<()> {
    if loc.driver.is_some() {
        return Ok(());
    }
    Err(Error::Unsupported {
        what: format!("VFIO access to mediated device {} (bound to no driver)", loc.uuid),
        hint: Some(
            "its parent's mdev driver binds it when the instance is created; check dmesg".into(),
        ),
    })
}

#[cfg(all(test, feature = "mock"))]
mod tests {
    use super::*;
    use crate::kernel::KernelOp;
    use std::os::unix::fs::symlink;

    const U: &str = "c1dffd2a-c271-4023-80ec-c50cdccf31f0";
    const BARE: &str = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";

    /// An mtty instance as Linux 7.2 shows it (seen in the lab): bound to mtty, in group
    /// 9 whose `name` reads `vfio-noiommu` though its node is `/dev/vfio/9`, with cdev
    /// `vfio4`; and an instance no driver has taken.
    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let parent = r.join("sys/devices/virtual/mtty/mtty");
        for (u, bound) in [(U, true), (BARE, false)] {
            let inst = parent.join(u);
            std::fs::create_dir_all(&inst).unwrap();
            std::fs::create_dir_all(r.join("sys/bus/mdev/devices")).unwrap();
            symlink(
                format!("../../../devices/virtual/mtty/mtty/{u}"),
                r.join("sys/bus/mdev/devices").join(u),
            )
            .unwrap();
            if bound {
                symlink("../../../../../bus/mdev/drivers/mtty", inst.join("driver")).unwrap();
                symlink("../../../../../kernel/iommu_groups/9", inst.join("iommu_group")).unwrap();
                std::fs::create_dir_all(inst.join("vfio-dev/vfio4")).unwrap();
            }
        }
        std::fs::create_dir_all(r.join("sys/kernel/iommu_groups/9")).unwrap();
        std::fs::write(r.join("sys/kernel/iommu_groups/9/name"), "vfio-noiommu\n").unwrap();
        std::fs::create_dir_all(r.join("dev/vfio")).unwrap();
        std::fs::write(r.join("dev/vfio/9"), "").unwrap();
        dir
    }

    fn vfio(root: &Path) -> (Vfio, Arc<crate::mock::MockKernel>) {
        let kernel = crate::mock::MockHost::new([]).kernel();
        (Vfio::new(kernel.clone(), Arc::new(RealFs::new(root))), kernel)
    }

    #[test]
    fn an_mdev_group_is_an_iommu_group_whatever_its_name() {
        let dir = tree();
        let (v, _) = vfio(dir.path());
        let loc = v.locate_mdev(&U.to_ascii_uppercase()).unwrap();
        assert_eq!(
            loc,
            MdevLocation {
                uuid: U.into(),
                driver: Some("mtty".into()),
                group: Some(GroupNode::Iommu(9)),
                cdev: Some(4),
            }
        );
        // Only a noiommu-N node makes a no-IOMMU group.
        std::fs::write(dir.path().join("dev/vfio/noiommu-9"), "").unwrap();
        assert_eq!(v.locate_mdev(U).unwrap().group, Some(GroupNode::NoIommu(9)));
    }

    #[test]
    fn a_simulated_mtty_instance_opens_through_its_group_and_its_cdev() {
        use crate::mock::{MockHost, SimMdevParent};
        use crate::RegionIndex;
        use crate::{IrqIndex, PciAddress};
        let edu = crate::mock::DeviceSpec::edu("0000:00:04.0").group(3).driver("vfio-pci");
        let h = MockHost::new([edu]).with_sys(|s| s.mdev_parents.push(SimMdevParent::mtty()));
        let fs = h.fs();
        let u = crate::host::mdev::create(&*fs, "mtty", "mtty-2", None).unwrap();
        let v = Vfio::new(h.kernel(), fs.clone());
        let loc = v.locate_mdev(&u).unwrap();
        // The lowest free group and cdev numbers (edu has group 3 and vfio0); the group's
        // name reads vfio-noiommu as on Linux.
        assert_eq!(
            (loc.driver.as_deref(), loc.group, loc.cdev),
            (Some("mtty"), Some(GroupNode::Iommu(0)), Some(1))
        );
        let name = fs.read_string(Path::new("/sys/kernel/iommu_groups/0/name")).unwrap();
        assert_eq!(name, "vfio-noiommu");
        for interface in [Interface::Container, Interface::Iommufd, Interface::Auto] {
            let d = v.open_mdev(&u, interface).unwrap();
            assert_eq!(d.name(), u);
            assert_eq!(d.address(), None);
            // Auto takes iommufd only where /dev/iommu exists (module iommufd loaded).
            let iommufd = interface == Interface::Iommufd
                || (interface == Interface::Auto && fs.exists(Path::new("/dev/iommu")));
            assert_eq!(d.group().is_none(), iommufd, "{interface:?}");
            let info = d.info();
            assert!(info.is_pci() && !info.can_reset(), "{info:?}");
            let sizes: Vec<u64> = d.regions().iter().map(|r| r.size).collect();
            assert_eq!(sizes[..2], [8, 8]);
            assert_eq!(d.region(RegionIndex::CONFIG).unwrap().size, 256);
            assert_eq!(d.config_read_u32(0).unwrap(), 0x3253_4348);
            assert_eq!(d.irq_info(IrqIndex::Intx).unwrap().count, 1);
            assert_eq!(d.irq_info(IrqIndex::Msi).unwrap().count, 1);
            d.write_region(RegionIndex::BAR0, 7, &[0x5a]).unwrap();
            let mut b = [0u8];
            d.read_region(RegionIndex::BAR0, 7, &mut b).unwrap();
            assert_eq!(b[0], 0x5a);
            // edu opens beside it, into the same address space.
            let e = v.open_in(PciAddress::parse("00:04.0").unwrap(), &d.address_space()).unwrap();
            assert_eq!(e.name(), "0000:00:04.0");
        }
        // Another instance gets the next group; the first one, open, is busy.
        let u2 = crate::host::mdev::create(&*fs, "mtty", "mtty-1", None).unwrap();
        assert_eq!(v.locate_mdev(&u2).unwrap().group, Some(GroupNode::Iommu(1)));
        let d = v.open_mdev(&u, Interface::Container).unwrap();
        let e = v.open_mdev(&u, Interface::Container).unwrap_err();
        assert_eq!(e.errno(), Some(crate::kernel::Errno::EBUSY), "{e}");
        let d2 = v.open_mdev_in(&u2, &d.address_space()).unwrap();
        assert_eq!(d2.regions()[1].size, 0, "one port: no BAR1");
        drop((d, d2));
        crate::host::mdev::remove(&*fs, &u).unwrap();
        assert!(v.locate_mdev(&u).is_err());
        assert!(!fs.exists(Path::new("/dev/vfio/0")));
    }

    #[test]
    fn open_mdev_says_why_an_instance_cannot_be_opened() {
        let dir = tree();
        let (v, kernel) = vfio(dir.path());
        let e = v.open_mdev("../../x", Interface::Auto).unwrap_err().to_string();
        assert!(e.starts_with("invalid UUID \"../../x\""), "{e}");
        let absent = "00000000-0000-4000-8000-000000000000";
        let e = v.open_mdev(absent, Interface::Auto).unwrap_err().to_string();
        assert!(e.starts_with(&format!("mediated device {absent} not found; ")), "{e}");
        let e = v.open_mdev(BARE, Interface::Auto).unwrap_err().to_string();
        assert!(e.contains("(bound to no driver) is not supported"), "{e}");
        // Bound but without group or cdev: refused before /dev/iommu or /dev/vfio/vfio is
        // opened.
        symlink(
            "../../../../../bus/mdev/drivers/mtty",
            dir.path().join(format!("sys/devices/virtual/mtty/mtty/{BARE}/driver")),
        )
        .unwrap();
        let e = v.open_mdev(BARE, Interface::Iommufd).unwrap_err().to_string();
        assert!(e.contains(&format!("VFIO device cdev of {BARE} not found")), "{e}");
        assert!(e.contains("no mdev driver is bound to the instance"), "{e}");
        let e = v.open_mdev(BARE, Interface::Container).unwrap_err().to_string();
        assert!(e.contains("no mdev driver has made the instance a VFIO device"), "{e}");
        let opened = [KernelOp::OpenIommufd, KernelOp::OpenContainer, KernelOp::OpenGroup];
        assert!(opened.iter().all(|op| kernel.calls(*op) == 0));
    }
}
