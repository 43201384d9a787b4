//! The mock kernel's objects: what each descriptor refers to (containers, groups,
//! iommufd contexts with their IOASes and page tables, device files) and the per-device
//! state behind them (open count, iommufd attachment, interrupts, saved config), all
//! kept in [`KernelState`] inside the host state.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{OwnedFd, RawFd};

use super::model::DeviceModel;
use super::MockKernelConfig;
use crate::kernel::KernelOp;
use crate::pci::PciAddress;

/// What a mock descriptor refers to.
#[derive(Debug, Clone, Copy)]
pub(super) enum FdObj {
    Container(u32),
    Group(u32),
    Device(DevFd),
    Iommufd(u32),
}

/// One open device file (`vfio_device_file`).
#[derive(Debug, Clone, Copy)]
pub(super) struct DevFd {
    pub(super) addr: PciAddress,
    /// Opened through this group (`VFIO_GROUP_GET_DEVICE_FD`).
    pub(super) group: Option<u32>,
    /// Cdev bound to (iommufd ctx, devid) by `BIND_IOMMUFD` (access granted).
    pub(super) bound: Option<(u32, u32)>,
}

impl DevFd {
    pub(super) fn access_granted(&self) -> bool {
        self.group.is_some() || self.bound.is_some()
    }
}

/// A vfio group (`struct vfio_group`, group.c), by IOMMU group number.
#[derive(Debug, Default)]
pub(super) struct GroupState {
    pub(super) opened: bool,
    pub(super) noiommu: bool,
    pub(super) device_fds: u32,
    pub(super) container: Option<u32>,
}

/// One type1 DMA mapping (`struct vfio_dma`), by IOVA.
#[derive(Debug)]
pub(super) struct Dma {
    pub(super) size: u64,
    pub(super) vaddr: u64,
    pub(super) vaddr_invalid: bool,
    pub(super) read: bool,
    pub(super) write: bool,
}

/// A container's type1 IOMMU (`struct vfio_iommu`).
#[derive(Debug)]
pub(super) struct Type1 {
    pub(super) v2: bool,
    pub(super) dmas: BTreeMap<u64, Dma>,
    pub(super) avail: u32,
}

/// The IOMMU driver a container was given with `VFIO_SET_IOMMU`.
#[derive(Debug)]
pub(super) enum Iommu {
    Type1(Type1),
    NoIommu,
}

/// A container (`struct vfio_container`, container.c).
#[derive(Debug, Default)]
pub(super) struct Container {
    pub(super) fd_open: bool,
    pub(super) groups: BTreeSet<u32>,
    pub(super) noiommu: bool,
    pub(super) iommu: Option<Iommu>,
}

/// One IOAS mapping (`struct iopt_area`), by IOVA.
#[derive(Debug)]
pub(super) struct Area {
    pub(super) len: u64,
    /// The process address of the area's first byte: the user's (`IOMMU_IOAS_MAP`) or,
    /// for a file area, inside the mock's own mapping of the file (0 if it has none).
    pub(super) uptr: u64,
    pub(super) read: bool,
    pub(super) write: bool,
    /// Pages pinned (and accounted) for the attached domains.
    pub(super) pinned: u64,
    /// The file behind an `IOMMU_IOAS_MAP_FILE` area; `None` for a user-address area.
    pub(super) file: Option<FileArea>,
}

/// The file of an `IOMMU_IOAS_MAP_FILE` area (`iopt_pages` of type IOPT_ADDRESS_FILE):
/// the kernel keeps a reference to the file; the mock keeps a descriptor of it and maps
/// its pages shared, so that device DMA reaches them as the kernel's pinned folios do.
#[derive(Debug)]
pub(super) struct FileArea {
    pub(super) file: OwnedFd,
    /// Byte offset in the file of the area's first byte.
    pub(super) start: u64,
    /// The mock's shared mapping of the file (page-aligned address and length), when the
    /// file could be mapped.
    pub(super) map: Option<(u64, usize)>,
}

impl Drop for FileArea {
    fn drop(&mut self) {
        if let Some((addr, len)) = self.map.take() {
            // SAFETY: the mock's own mapping, made in `iommufd::ioas_map_file` and
            // reached only through its area, which is going away.
            unsafe { libc::munmap(addr as *mut libc::c_void, len) };
        }
    }
}

/// An IO address space (`struct iommufd_ioas`).
#[derive(Debug, Default)]
pub(super) struct Ioas {
    pub(super) areas: BTreeMap<u64, Area>,
    /// Auto-domain HWPTs attached to this IOAS.
    pub(super) hwpts: BTreeSet<u32>,
}

/// An object of an iommufd context, by id.
#[derive(Debug)]
pub(super) enum IoObj {
    Ioas(Ioas),
    Hwpt { ioas: u32, devices: u32 },
    Device,
}

/// An iommufd context (`struct iommufd_ctx`), one per open `/dev/iommu`.
#[derive(Debug, Default)]
pub(super) struct Ictx {
    pub(super) fd_open: bool,
    pub(super) objs: BTreeMap<u32, IoObj>,
    pub(super) bound_devices: u32,
}

/// A device's interrupt setup (`vdev->irq_type` and the triggers of pci_intrs).
#[derive(Debug, Default)]
pub(super) struct IrqState {
    /// The enabled interrupt type (INTx, MSI or MSI-X), `None` = `VFIO_PCI_NUM_IRQS`.
    pub(super) kind: Option<u32>,
    /// MSI/MSI-X: vectors allocated (MSI: at enable; MSI-X: grows when dynamic).
    pub(super) nvec: u32,
    /// MSI/MSI-X triggers by vector.
    pub(super) vectors: BTreeMap<u32, OwnedFd>,
    pub(super) intx_trigger: Option<OwnedFd>,
    pub(super) intx_masked: bool,
    pub(super) intx_pending: bool,
    pub(super) intx_unmask_fd: Option<OwnedFd>,
    pub(super) err_trigger: Option<OwnedFd>,
    pub(super) req_trigger: Option<OwnedFd>,
}

/// The kernel's state of one PCI function (`struct vfio_pci_core_device`).
#[derive(Debug, Default)]
pub(super) struct DevState {
    /// `device->open_count`: device files opened (group) or bound (cdev).
    pub(super) open_count: u32,
    /// Bound through a cdev to (ictx, devid).
    pub(super) cdev: Option<(u32, u32)>,
    /// Attached to (ictx, ioas, hwpt).
    pub(super) attached: Option<(u32, u32, u32)>,
    pub(super) irq: IrqState,
    /// Config saved at first open (`pci_store_saved_state`), restored at last close.
    pub(super) saved_config: Option<Vec<u8>>,
    /// Resets done on the device (FLR or bus reset).
    pub(super) resets: u64,
    /// Low power allowed by `LOW_POWER_ENTRY[_WITH_WAKEUP]` (`pm_runtime_engaged`).
    pub(super) pm_engaged: bool,
    /// The wake-up eventfd of `LOW_POWER_ENTRY_WITH_WAKEUP` (`pm_wake_eventfd_ctx`).
    pub(super) pm_wake: Option<OwnedFd>,
    /// A PF's VF token as set by the user (`vf_token->uuid`); `None` is the random one
    /// vfio-pci made at probe, which nobody knows.
    pub(super) vf_token: Option<[u8; 16]>,
}

impl KernelState {
    /// A device left vfio-pci: the next probe makes a new random VF token.
    pub(crate) fn forget_vf_token(&mut self, addr: PciAddress) {
        if let Some(d) = self.devs.get_mut(&addr) {
            d.vf_token = None;
        }
    }
}

/// The mock kernel's state, kept inside [`HostState`](crate::mock::HostState) so that
/// the kernel, the simulated sysfs and the device models share one lock.
#[derive(Debug, Default)]
pub struct KernelState {
    pub(crate) config: MockKernelConfig,
    pub(super) fds: BTreeMap<RawFd, FdObj>,
    /// The real descriptor behind each mock descriptor the mock still holds (not exported).
    pub(super) backing: BTreeMap<RawFd, OwnedFd>,
    /// The inode of each mock descriptor's file, to recognise it when it comes back.
    pub(super) inodes: BTreeMap<RawFd, (u64, u64)>,
    pub(super) containers: BTreeMap<u32, Container>,
    pub(super) next_container: u32,
    pub(super) groups: BTreeMap<u32, GroupState>,
    pub(super) ictxs: BTreeMap<u32, Ictx>,
    pub(super) next_ictx: u32,
    pub(super) devs: BTreeMap<PciAddress, DevState>,
    pub(super) bars: BTreeMap<(PciAddress, u32), OwnedFd>,
    pub(super) extra: BTreeMap<(PciAddress, u32), Vec<u8>>,
    pub(super) mmaps: BTreeMap<usize, (PciAddress, usize)>,
    pub(super) models: BTreeMap<PciAddress, (u32, Box<dyn DeviceModel>)>,
    pub(crate) noiommu_ids: BTreeMap<PciAddress, u32>,
    pub(super) calls: BTreeMap<KernelOp, u64>,
    /// Pages pinned by type1 (`mm->locked_vm`).
    pub(super) locked_mm: u64,
    /// Pages pinned by iommufd (`user->locked_vm`).
    pub(super) locked_user: u64,
}
