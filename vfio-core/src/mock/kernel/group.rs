//! vfio groups (drivers/vfio/group.c): opening `/dev/vfio/N`, viability, joining and
//! leaving a container, and opening a device through its group. Also the no-IOMMU groups
//! vfio makes in `enable_unsafe_noiommu_mode` (`/dev/vfio/noiommu-N`).

use std::collections::BTreeSet;
use std::ffi::CStr;

use vfio_bindings::bindings::vfio::{VFIO_GROUP_FLAGS_CONTAINER_SET, VFIO_GROUP_FLAGS_VIABLE};

use super::device::open_device;
use super::fds::{group_fd, new_fd};
use super::feature::match_name;
use super::state::{DevFd, FdObj, Iommu, KernelState};
use super::type1::detach_group;
use crate::kernel::{Errno, GroupNode, KResult, KernelFd};
use crate::mock::{is_mdev_key, HostState, SimDevice};
use crate::pci::PciAddress;

pub(super) fn open(st: &mut HostState, group: GroupNode) -> KResult<KernelFd> {
    let (id, noiommu) = match group {
        GroupNode::Iommu(n) => (n, false),
        GroupNode::NoIommu(n) => (n, true),
    };
    // The node exists only while a member is bound to vfio-pci
    // (vfio_register_group_dev creates the group).
    let members = group_members(st, id, noiommu);
    let exists = members.iter().any(|a| st.vfio_device(*a).is_some_and(is_vfio));
    if !exists {
        return Err(Errno::ENOENT);
    }
    let k = &mut st.kernel;
    // group.c vfio_group_fops_open: one open at a time; EBUSY while a member is
    // bound through its cdev (cdev_device_open_cnt).
    // Device fds hold the group file, so it stays open after its fd is closed.
    if k.groups.get(&id).is_some_and(|g| g.opened || g.device_fds > 0) {
        return Err(Errno::EBUSY);
    }
    if members.iter().any(|a| k.devs.get(a).is_some_and(|d| d.cdev.is_some())) {
        return Err(Errno::EBUSY);
    }
    let g = k.groups.entry(id).or_default();
    g.opened = true;
    g.noiommu = noiommu;
    Ok(new_fd(k, FdObj::Group(id)))
}

pub(super) fn get_status(st: &HostState, group: &KernelFd) -> KResult<u32> {
    let gid = group_fd(&st.kernel, group)?;
    let g = st.kernel.groups.get(&gid).ok_or(Errno::EBADF)?;
    // group.c vfio_group_ioctl_get_status.
    if g.container.is_some() {
        return Ok(VFIO_GROUP_FLAGS_CONTAINER_SET | VFIO_GROUP_FLAGS_VIABLE);
    }
    if g.noiommu || group_viable(st, gid, false) {
        Ok(VFIO_GROUP_FLAGS_VIABLE)
    } else {
        Ok(0)
    }
}

pub(super) fn set_container(
    st: &mut HostState,
    group: &KernelFd,
    container: &KernelFd,
) -> KResult<()> {
    let gid = group_fd(&st.kernel, group)?;
    // group.c vfio_group_ioctl_set_container: EBADF for a bad fd, EINVAL when the
    // group already has one, EBADFD for an fd that is not a container.
    let target = st.kernel.fds.get(&container.raw()).copied().ok_or(Errno::EBADF)?;
    let noiommu = st.kernel.groups.get(&gid).is_some_and(|g| g.noiommu);
    if st.kernel.groups.get(&gid).is_some_and(|g| g.container.is_some()) {
        return Err(Errno::EINVAL);
    }
    let FdObj::Container(cid) = target else { return Err(Errno::EBADFD) };
    let viable = noiommu || group_viable(st, gid, false);
    let k = &mut st.kernel;
    let msi_safe = k.config.msi_safe();
    let c = k.containers.get_mut(&cid).ok_or(Errno::EBADF)?;
    // container.c vfio_container_attach_group: real and no-IOMMU groups do not mix.
    if !c.groups.is_empty() && c.noiommu != noiommu {
        return Err(Errno::EPERM);
    }
    // iommu_group_claim_dma_owner: EPERM while a host driver owns DMA in the group.
    if !noiommu && !viable {
        return Err(Errno::EPERM);
    }
    // A container with an IOMMU attaches the group now (type1 attach_group rules).
    if matches!(c.iommu, Some(Iommu::Type1(_))) && !msi_safe {
        return Err(Errno::EPERM);
    }
    c.groups.insert(gid);
    c.noiommu = noiommu;
    if let Some(g) = k.groups.get_mut(&gid) {
        g.container = Some(cid);
    }
    Ok(())
}

pub(super) fn unset_container(k: &mut KernelState, group: &KernelFd) -> KResult<()> {
    let gid = group_fd(k, group)?;
    let g = k.groups.get(&gid).ok_or(Errno::EBADF)?;
    // group.c vfio_group_ioctl_unset_container: EINVAL without a container, EBUSY
    // while device fds use it (container_users != 1).
    if g.container.is_none() {
        return Err(Errno::EINVAL);
    }
    if g.device_fds > 0 {
        return Err(Errno::EBUSY);
    }
    detach_group(k, gid);
    Ok(())
}

pub(super) fn get_device_fd(
    st: &mut HostState,
    group: &KernelFd,
    name: &CStr,
) -> KResult<KernelFd> {
    let gid = group_fd(&st.kernel, group)?;
    let noiommu = st.kernel.groups.get(&gid).is_some_and(|g| g.noiommu);
    // vfio_device_get_from_name: a VFIO member with that name (a PCI address, or an
    // mdev's UUID), else ENODEV.
    // vfio_pci_core_match takes `<address> vf_token=<uuid>` and checks the token; an
    // error from it ends the search.
    let name = name.to_str().map_err(|_| Errno::ENODEV)?;
    let mut found = None;
    for a in group_members(st, gid, noiommu) {
        if st.vfio_device(a).is_some_and(is_vfio) && match_name(st, a, name)? {
            found = Some(a);
            break;
        }
    }
    let addr = found.ok_or(Errno::ENODEV)?;
    // vfio_df_group_open / vfio_group_use_container: the container must have an IOMMU.
    let cid = st.kernel.groups.get(&gid).and_then(|g| g.container).ok_or(Errno::EINVAL)?;
    if st.kernel.containers.get(&cid).is_none_or(|c| c.iommu.is_none()) {
        return Err(Errno::EINVAL);
    }
    let HostState { devices, kernel: k, .. } = st;
    // A device bound through its cdev cannot also be opened through the group.
    if k.devs.get(&addr).is_some_and(|d| d.cdev.is_some()) {
        return Err(Errno::EBUSY);
    }
    open_device(k, devices, addr);
    if let Some(g) = k.groups.get_mut(&gid) {
        g.device_fds += 1;
    }
    Ok(new_fd(k, FdObj::Device(DevFd { addr, group: Some(gid), bound: None })))
}

/// Releases a group file once neither the group fd nor a device fd holds it
/// (`vfio_group_fops_release`: device fds hold a group file reference).
pub(super) fn maybe_release_group(k: &mut KernelState, gid: u32) {
    let release = k.groups.get(&gid).is_some_and(|g| !g.opened && g.device_fds == 0);
    if release {
        detach_group(k, gid);
        k.groups.remove(&gid);
    }
}

/// Drivers whose binding leaves a group viable: vfio-pci, and drivers that set
/// `driver_managed_dma` (pci-stub, pcieport) so they claim no DMA ownership
/// (drivers/iommu/iommu.c `iommu_device_use_default_domain`).
fn dma_owner_free(driver: Option<&str>) -> bool {
    matches!(driver, None | Some("vfio-pci") | Some("pci-stub") | Some("pcieport"))
}

/// Gives no-IOMMU group numbers to vfio-pci devices without an IOMMU group
/// (`vfio_noiommu_group_alloc`: a fake IOMMU group with the lowest free group id), and
/// takes them back when the device leaves vfio-pci, as vfio does when
/// `enable_unsafe_noiommu_mode` is set.
pub(crate) fn refresh_noiommu(st: &mut HostState) {
    let HostState { devices, mdev_devices, kernel, .. } = st;
    if !kernel.config.noiommu {
        kernel.noiommu_ids.clear();
        return;
    }
    kernel
        .noiommu_ids
        .retain(|a, _| devices.get(a).is_some_and(|d| d.spec.iommu_group.is_none() && is_vfio(d)));
    for (a, d) in devices.iter() {
        if d.spec.iommu_group.is_none() && is_vfio(d) && !kernel.noiommu_ids.contains_key(a) {
            let used: BTreeSet<u32> = devices
                .values()
                .chain(mdev_devices.values())
                .filter_map(|d| d.spec.iommu_group)
                .chain(kernel.noiommu_ids.values().copied())
                .collect();
            let id = (0..).find(|i| !used.contains(i)).unwrap_or(0);
            kernel.noiommu_ids.insert(*a, id);
        }
    }
}

/// A VFIO device: bound to vfio-pci, or an mdev instance (bound to its mdev driver).
pub(super) fn is_vfio(d: &SimDevice) -> bool {
    d.driver.as_deref() == Some("vfio-pci") || is_mdev_key(d.spec.address)
}

/// The group of a device: its IOMMU group, else its no-IOMMU group if it has one.
pub(super) fn group_of(st: &HostState, addr: PciAddress) -> Option<u32> {
    let d = st.vfio_device(addr)?;
    d.spec.iommu_group.or_else(|| st.kernel.noiommu_ids.get(&addr).copied())
}

/// The devices in group `id` (a no-IOMMU group when `noiommu`).
pub(super) fn group_members(st: &HostState, id: u32, noiommu: bool) -> Vec<PciAddress> {
    if noiommu {
        st.kernel.noiommu_ids.iter().filter(|(_, g)| **g == id).map(|(a, _)| *a).collect()
    } else {
        st.vfio_devices()
            .filter(|d| d.spec.iommu_group == Some(id))
            .map(|d| d.spec.address)
            .collect()
    }
}

/// Viable: no member is bound to a driver that claims DMA ownership (an mdev's driver
/// claims none: its group is vfio's own).
fn group_viable(st: &HostState, id: u32, noiommu: bool) -> bool {
    group_members(st, id, noiommu).iter().all(|a| {
        st.vfio_device(*a).is_some_and(|d| is_vfio(d) || dma_owner_free(d.driver.as_deref()))
    })
}
