//! Resets (drivers/vfio/pci/vfio_pci_core.c): function reset (`VFIO_DEVICE_RESET`, an
//! FLR), and the bus reset of `VFIO_DEVICE_PCI_HOT_RESET` with its info ioctl, which
//! lists the affected devices and requires the caller to own them all (through their
//! groups, or through the iommufd a cdev is bound to). Slot resets are not modelled.

use std::collections::BTreeSet;

use vfio_bindings::bindings::vfio::{
    VFIO_PCI_DEVID_NOT_OWNED, VFIO_PCI_DEVID_OWNED, VFIO_PCI_HOT_RESET_FLAG_DEV_ID,
    VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED,
};

use super::device::sim;
use super::fds::{device_fd, fd_is_open};
use super::group::{group_of, is_vfio};
use super::info::argsz;
use super::le::{rd32, wr16, wr32};
use super::state::{FdObj, KernelState};
use crate::kernel::{Errno, KResult, KernelFd};
use crate::mock::HostState;
use crate::pci::PciAddress;

pub(super) fn device_reset(st: &mut HostState, device: &KernelFd) -> KResult<()> {
    let d = device_fd(&st.kernel, device)?;
    // pci_core vfio_pci_ioctl_reset: EINVAL unless reset_works.
    if !sim(st, d.addr)?.spec.flr {
        return Err(Errno::EINVAL);
    }
    // pci_try_reset_function saves and restores the config state around the FLR,
    // so the config image reads back as before; the device's own state is reset.
    reset_function(&mut st.kernel, d.addr);
    Ok(())
}

pub(super) fn hot_reset_info(st: &HostState, device: &KernelFd, buf: &mut [u8]) -> KResult<()> {
    let d = device_fd(&st.kernel, device)?;
    // pci_core vfio_pci_ioctl_get_pci_hot_reset_info.
    let argsz = argsz(buf, 12)?;
    // No slot reset is modelled; a bus reset needs a non-root bus.
    if !bus_resettable(d.addr) {
        return Err(Errno::ENODEV);
    }
    let affected = same_bus(st, d.addr);
    let count = affected.len() as u32;
    let cdev = d.bound;
    let mut flags = 0;
    if cdev.is_some() {
        flags = VFIO_PCI_HOT_RESET_FLAG_DEV_ID | VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED;
    }
    if (argsz as usize) < 12 + 8 * affected.len() {
        wr32(buf, 4, 0);
        wr32(buf, 8, count);
        return Err(Errno::ENOSPC);
    }
    let mut entries = Vec::new();
    for a in &affected {
        let id = match cdev {
            Some((ictx, _)) => {
                let id = devid_of(st, *a, ictx);
                if id == VFIO_PCI_DEVID_NOT_OWNED as u32 {
                    flags &= !VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED;
                }
                id
            }
            // Legacy: the IOMMU group id; a device without one cannot be reset (EPERM).
            None => group_of(st, *a).ok_or(Errno::EPERM)?,
        };
        entries.push((id, *a));
    }
    let need = 12 + 8 * entries.len();
    if buf.len() < need {
        return Err(Errno::EFAULT);
    }
    for (i, (id, a)) in entries.iter().enumerate() {
        let o = 12 + 8 * i;
        wr32(buf, o, *id);
        wr16(buf, o + 4, a.domain as u16);
        buf[o + 6] = a.bus;
        buf[o + 7] = (a.device << 3) | a.function;
    }
    wr32(buf, 4, flags);
    wr32(buf, 8, count);
    Ok(())
}

/// vfio_pci_fill_devs for a cdev bound to `ictx`: the devid of a device bound to the
/// same iommufd, OWNED when its group is owned through that iommufd, else NOT_OWNED.
fn devid_of(st: &HostState, a: PciAddress, ictx: u32) -> u32 {
    let k = &st.kernel;
    match k.devs.get(&a).and_then(|s| s.cdev) {
        Some((c, devid)) if c == ictx => devid,
        Some(_) => VFIO_PCI_DEVID_NOT_OWNED as u32,
        None => {
            let g = group_of(st, a);
            let owned = g.is_some()
                && k.devs
                    .iter()
                    .any(|(b, s)| group_of(st, *b) == g && s.cdev.is_some_and(|(c, _)| c == ictx))
                && st.devices.get(&a).is_some_and(is_vfio);
            if owned {
                VFIO_PCI_DEVID_OWNED
            } else {
                VFIO_PCI_DEVID_NOT_OWNED as u32
            }
        }
    }
}

pub(super) fn hot_reset(st: &mut HostState, device: &KernelFd, buf: &[u8]) -> KResult<()> {
    let d = device_fd(&st.kernel, device)?;
    // pci_core vfio_pci_ioctl_pci_hot_reset.
    argsz(buf, 12)?;
    let (flags, count) = (rd32(buf, 4), rd32(buf, 8));
    if flags != 0 {
        return Err(Errno::EINVAL);
    }
    // A zero-length array is for cdev-opened devices only, and only then.
    if (count != 0) == d.bound.is_some() {
        return Err(Errno::EINVAL);
    }
    if !bus_resettable(d.addr) {
        return Err(Errno::ENODEV);
    }
    let affected = same_bus(st, d.addr);
    // vfio_pci_dev_set_resettable: every device on the bus must be a vfio device.
    let all_vfio = affected.iter().all(|a| st.devices.get(a).is_some_and(is_vfio));
    // Whether the caller owns each affected device.
    let owned: Vec<bool> = if count > 0 {
        // vfio_pci_ioctl_pci_hot_reset_groups: through the groups it passes.
        if count as usize > affected.len() {
            return Err(Errno::EINVAL);
        }
        let fds = buf.get(12..12 + 4 * count as usize).ok_or(Errno::EFAULT)?;
        let groups = groups_of_fds(&st.kernel, fds)?;
        affected.iter().map(|a| group_of(st, *a).is_some_and(|g| groups.contains(&g))).collect()
    } else {
        // Through the iommufd its cdev is bound to: a device bound there, or an unbound
        // one whose group has a device bound there.
        let ictx = d.bound.map(|b| b.0);
        let binds: Vec<(Option<u32>, Option<u32>)> = affected
            .iter()
            .map(|a| (st.kernel.devs.get(a).and_then(|s| s.cdev).map(|c| c.0), group_of(st, *a)))
            .collect();
        binds
            .iter()
            .map(|(bound, g)| match bound {
                Some(c) => Some(*c) == ictx,
                None => binds.iter().any(|b| b.1 == *g && g.is_some() && b.0 == ictx),
            })
            .collect()
    };
    if !all_vfio || !owned.iter().all(|o| *o) {
        return Err(Errno::EINVAL);
    }
    for a in affected {
        reset_function(&mut st.kernel, a);
    }
    Ok(())
}

/// The groups named by an array of group fds (EINVAL for a descriptor that is not a
/// vfio group, EBADF for one that is not open).
fn groups_of_fds(k: &KernelState, fds: &[u8]) -> KResult<BTreeSet<u32>> {
    let mut groups = BTreeSet::new();
    for i in 0..fds.len() / 4 {
        let fd = rd32(fds, 4 * i) as i32;
        match k.fds.get(&fd) {
            Some(FdObj::Group(g)) => {
                groups.insert(*g);
            }
            Some(_) => return Err(Errno::EINVAL),
            // A real descriptor that is not ours is not a vfio group either.
            None if fd >= 0 && fd_is_open(fd) => return Err(Errno::EINVAL),
            None => return Err(Errno::EBADF),
        }
    }
    Ok(groups)
}

/// Resets a function's own state (and its model's), counting the reset.
pub(super) fn reset_function(k: &mut KernelState, addr: PciAddress) {
    k.devs.entry(addr).or_default().resets += 1;
    if let Some((_, m)) = k.models.get_mut(&addr) {
        m.reset();
    }
}

/// Bus reset reachable: not on a root bus (`pci_probe_reset_bus` needs `bus->self`).
fn bus_resettable(addr: PciAddress) -> bool {
    addr.bus != 0
}

/// The devices on the bus of `addr` (what a bus reset affects).
fn same_bus(st: &HostState, addr: PciAddress) -> Vec<PciAddress> {
    st.devices.keys().filter(|a| a.domain == addr.domain && a.bus == addr.bus).copied().collect()
}
