//! Device reset: function reset (`VFIO_DEVICE_RESET`) and bus/slot hot reset.

use std::os::fd::RawFd;
use std::sync::Arc;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::group::Group;
use crate::kernel::{Errno, KernelOp};
use crate::pci::PciAddress;

/// A device a hot reset would also reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct AffectedDevice {
    /// Its address.
    pub address: PciAddress,
    /// Its IOMMU group (legacy interface) or iommufd device id (cdev interface), as the
    /// kernel reports it.
    pub group_or_devid: u32,
}

const INFO_HDR: usize = 12; // argsz, flags, count
const DEP_SIZE: usize = 8; // sizeof(struct vfio_pci_dependent_device)

/// Flag of `vfio_pci_hot_reset_info`: entries carry device ids (cdev interface).
pub const HOT_RESET_FLAG_DEV_ID: u32 = 1 << 0;

impl Device {
    /// Whether `VFIO_DEVICE_RESET` is available (function-level, PM or slot reset the
    /// kernel can do for this device alone).
    pub fn can_reset(&self) -> bool {
        self.info().can_reset()
    }

    /// Resets the device (`VFIO_DEVICE_RESET`).
    pub fn reset(&self) -> Result<()> {
        if !self.can_reset() {
            return Err(Error::Unsupported {
                what: format!("VFIO_DEVICE_RESET of {}", self.target()),
                hint: Some(
                    "the device has no function-level reset; see hot_reset_info for a bus reset"
                        .into(),
                ),
            });
        }
        self.kernel().device_reset(self.fd()).map_err(|e| self.kerr(KernelOp::DeviceReset, e))
    }

    /// The devices a bus/slot hot reset of this device would reset with it.
    pub fn hot_reset_info(&self) -> Result<Vec<AffectedDevice>> {
        let mut room = 8usize;
        for _ in 0..4 {
            let mut buf = vec![0u8; INFO_HDR + DEP_SIZE * room];
            let len = buf.len() as u32;
            buf[..4].copy_from_slice(&len.to_ne_bytes());
            match self.kernel().device_get_pci_hot_reset_info(self.fd(), &mut buf) {
                Ok(()) => {
                    let count = u32::from_ne_bytes(buf[8..12].try_into().unwrap()) as usize;
                    return Ok((0..count.min(room))
                        .filter_map(|i| {
                            // struct vfio_pci_dependent_device: group_id/devid u32,
                            // segment u16, bus u8, devfn u8.
                            let at = INFO_HDR + DEP_SIZE * i;
                            let id = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap());
                            let seg = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
                            let bus = buf[at + 6];
                            let devfn = buf[at + 7];
                            Some(AffectedDevice {
                                address: PciAddress::new(seg.into(), bus, devfn >> 3, devfn & 7)?,
                                group_or_devid: id,
                            })
                        })
                        .collect());
                }
                Err(Errno::ENOSPC) => {
                    let count = u32::from_ne_bytes(buf[8..12].try_into().unwrap()) as usize;
                    if count <= room {
                        return Err(self.kerr(KernelOp::DeviceGetPciHotResetInfo, Errno::ENOSPC));
                    }
                    room = count.min(1024);
                }
                Err(e) => {
                    let err = self.kerr(KernelOp::DeviceGetPciHotResetInfo, e);
                    return Err(if e == Errno::ENODEV {
                        err.with_hint("the device cannot be reset at bus or slot level")
                    } else {
                        err
                    });
                }
            }
        }
        Err(self.kerr(KernelOp::DeviceGetPciHotResetInfo, Errno::ENOSPC))
    }

    /// Hot-resets the bus or slot. On the legacy interface, `groups` must hold every group
    /// [`Device::hot_reset_info`] names (proving ownership); on iommufd pass none: the
    /// kernel checks that the affected devices are bound to this iommufd.
    pub fn hot_reset(&self, groups: &[&Arc<Group>]) -> Result<()> {
        const MAX: usize = 64;
        if groups.len() > MAX {
            return Err(Error::Invalid {
                what: "group list",
                input: groups.len().to_string(),
                reason: format!("at most {MAX} groups"),
            });
        }
        let mut buf = [0u8; INFO_HDR + 4 * MAX];
        let len = INFO_HDR + 4 * groups.len();
        buf[..4].copy_from_slice(&(len as u32).to_ne_bytes());
        buf[8..12].copy_from_slice(&(groups.len() as u32).to_ne_bytes());
        for (i, g) in groups.iter().enumerate() {
            let fd: RawFd = g.fd().raw();
            buf[INFO_HDR + 4 * i..INFO_HDR + 4 * i + 4].copy_from_slice(&fd.to_ne_bytes());
        }
        self.kernel().device_pci_hot_reset(self.fd(), &buf[..len]).map_err(|e| {
            let err = self.kerr(KernelOp::DevicePciHotReset, e);
            if e == Errno::EINVAL || e == Errno::EPERM {
                err.with_hint("every affected group must be open by this process and passed in")
            } else {
                err
            }
        })
    }
}
