//! Device cdevs (drivers/vfio/device_cdev.c): opening `/dev/vfio/devices/vfioN`,
//! binding it to an iommufd context (which grants access to the device), and attaching
//! it to or detaching it from an IOAS or page table.

use super::device::open_device;
use super::fds::{device_fd, fd_is_open, lookup, new_fd};
use super::feature::match_token;
use super::group::{group_of, is_vfio};
use super::iommufd::{alloc_id, auto_domain, detach_device};
use super::state::{DevFd, FdObj, IoObj, KernelState};
use crate::kernel::{
    vfio_device_attach_iommufd_pt, vfio_device_bind_iommufd, vfio_device_detach_iommufd_pt, Errno,
    KResult, KernelFd,
};
use crate::mock::HostState;

pub(super) fn open(st: &mut HostState, index: u32) -> KResult<KernelFd> {
    if !st.kernel.config.iommufd {
        return Err(Errno::ENOENT);
    }
    // The cdev exists while the device is bound to vfio-pci behind an IOMMU, or is an
    // mdev instance (no-IOMMU cdevs are not modelled).
    let addr = st
        .vfio_devices()
        .find(|d| d.vfio_index == Some(index) && is_vfio(d) && d.spec.iommu_group.is_some())
        .map(|d| d.spec.address)
        .ok_or(Errno::ENOENT)?;
    Ok(new_fd(&mut st.kernel, FdObj::Device(DevFd { addr, group: None, bound: None })))
}

pub(super) fn bind_iommufd(
    st: &mut HostState,
    device: &KernelFd,
    bind: &mut vfio_device_bind_iommufd,
) -> KResult<()> {
    bind_iommufd_token(st, device, bind, None)
}

/// `BIND_IOMMUFD`, with the token `VFIO_DEVICE_BIND_FLAG_TOKEN` points at (the mock
/// cannot read a raw `token_uuid_ptr`: the flag without `token` is EFAULT).
pub(super) fn bind_iommufd_token(
    st: &mut HostState,
    device: &KernelFd,
    bind: &mut vfio_device_bind_iommufd,
    token: Option<&[u8; 16]>,
) -> KResult<()> {
    let with_token = bind.flags & 1 != 0 || token.is_some();
    if token.is_some() {
        bind.flags |= 1;
    }
    let k = &st.kernel;
    let FdObj::Device(d) = lookup(k, device)? else { return Err(Errno::ENOTTY) };
    // device_cdev.c vfio_df_ioctl_bind_iommufd (flags had to be 0 before the token flag).
    let valid = if k.config.bind_token { 1 } else { 0 };
    if bind.argsz < 16 || bind.flags & !valid != 0 || bind.iommufd < 0 {
        return Err(Errno::EINVAL);
    }
    // Only for cdev fds, and once.
    if d.group.is_some() || d.bound.is_some() {
        return Err(Errno::EINVAL);
    }
    // vfio_device_block_group: EBUSY while the group is open.
    let g = group_of(st, d.addr);
    if g.is_some_and(|g| k.groups.get(&g).is_some_and(|g| g.opened || g.device_fds > 0)) {
        return Err(Errno::EBUSY);
    }
    // vfio_df_check_token (kernels before the token flag checked no token here).
    match (with_token, token) {
        (true, None) => return Err(Errno::EFAULT),
        (_, t) if st.kernel.config.bind_token => match_token(st, d.addr, t)?,
        _ => {}
    }
    let k = &st.kernel;
    // iommufd_ctx_from_fd: EBADF for a bad fd, EBADFD for a non-iommufd file.
    let ictx = match k.fds.get(&bind.iommufd) {
        Some(FdObj::Iommufd(c)) => *c,
        Some(_) => return Err(Errno::EBADFD),
        None if bind.iommufd >= 0 && fd_is_open(bind.iommufd) => return Err(Errno::EBADFD),
        None => return Err(Errno::EBADF),
    };
    // vfio_df_open: a cdev device opens once (EINVAL if already open).
    if k.devs.get(&d.addr).is_some_and(|s| s.open_count > 0) {
        return Err(Errno::EINVAL);
    }
    // iommufd_device_bind: EPERM without isolated MSI unless allow_unsafe_interrupts.
    if !k.config.msi_safe() {
        return Err(Errno::EPERM);
    }
    let HostState { devices, kernel: k, .. } = st;
    let c = k.ictxs.get_mut(&ictx).ok_or(Errno::EBADF)?;
    let devid = alloc_id(&c.objs);
    c.objs.insert(devid, IoObj::Device);
    c.bound_devices += 1;
    open_device(k, devices, d.addr);
    k.devs.entry(d.addr).or_default().cdev = Some((ictx, devid));
    if let Some(FdObj::Device(df)) = k.fds.get_mut(&device.raw()) {
        df.bound = Some((ictx, devid));
    }
    bind.out_devid = devid;
    Ok(())
}

pub(super) fn attach_pt(
    k: &mut KernelState,
    device: &KernelFd,
    attach: &mut vfio_device_attach_iommufd_pt,
) -> KResult<()> {
    let d = device_fd(k, device)?;
    // vfio_device_fops_unl_ioctl: cdev-only ioctls; a group-opened device passes them
    // to vfio-pci, which does not know them (ENOTTY).
    let Some((ictx, _)) = d.bound else { return Err(Errno::ENOTTY) };
    // device_cdev.c vfio_df_ioctl_attach_pt.
    if attach.argsz < 12 || attach.flags & !1 != 0 {
        return Err(Errno::EINVAL);
    }
    if attach.flags != 0 {
        // PASID attach needs a PASID-capable device.
        return Err(Errno::EOPNOTSUPP);
    }
    let prev = k.devs.entry(d.addr).or_default().attached;
    let c = k.ictxs.get_mut(&ictx).ok_or(Errno::EBADF)?;
    // iommufd device.c: the pt_id names an IOAS (auto domain) or a HWPT.
    let ioas_id = match c.objs.get(&attach.pt_id) {
        Some(IoObj::Ioas(_)) => attach.pt_id,
        Some(IoObj::Hwpt { ioas, .. }) => *ioas,
        Some(IoObj::Device) => return Err(Errno::EINVAL),
        None => return Err(Errno::ENOENT),
    };
    if prev.is_some_and(|p| p.1 == ioas_id) {
        attach.pt_id = prev.map_or(0, |p| p.2);
        return Ok(());
    }
    // Reuse the IOAS's auto domain, or make one.
    let hwpt = auto_domain(k, ictx, ioas_id)?;
    // Replace: leave the previous attachment.
    if prev.is_some() {
        detach_device(k, d.addr);
    }
    if let Some(IoObj::Hwpt { devices, .. }) =
        k.ictxs.get_mut(&ictx).and_then(|c| c.objs.get_mut(&hwpt))
    {
        *devices += 1;
    }
    k.devs.entry(d.addr).or_default().attached = Some((ictx, ioas_id, hwpt));
    attach.pt_id = hwpt;
    Ok(())
}

pub(super) fn detach_pt(
    k: &mut KernelState,
    device: &KernelFd,
    detach: &mut vfio_device_detach_iommufd_pt,
) -> KResult<()> {
    let d = device_fd(k, device)?;
    if d.bound.is_none() {
        return Err(Errno::ENOTTY);
    }
    // device_cdev.c vfio_df_ioctl_detach_pt; detaching when not attached is a no-op.
    if detach.argsz < 8 || detach.flags != 0 {
        return Err(Errno::EINVAL);
    }
    detach_device(k, d.addr);
    Ok(())
}
