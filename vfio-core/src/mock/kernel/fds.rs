//! The descriptor table and the calls' gate: every mock descriptor is a real descriptor
//! of the process (an empty memfd) mapped to the kernel object it opens, recognised by
//! its inode when it comes back through fd passing. Every call goes through
//! `MockKernel::enter`, which counts it and fires an injected fault when one is due
//! (`mock/fault.rs`);
//! the counters and leak checks tests read are here too.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::MutexGuard;

use super::device::close_device;
use super::group::{maybe_release_group, refresh_noiommu};
use super::iommufd::gc_ictx;
use super::state::{DevFd, FdObj, IoObj, Iommu, KernelState};
use super::type1::gc_container;
use super::{MockKernel, PAGE};
use crate::kernel::{Errno, KResult, KernelFd, KernelOp};
use crate::mock::fault::kernel_fault;
use crate::mock::HostState;

/// A descriptor number far above any the process has open: a bad descriptor for tests.
pub const MOCK_FD_BASE: RawFd = 0x4000_0000;

impl MockKernel {
    /// How many times `op` was called on this kernel (failed calls included).
    pub fn calls(&self, op: KernelOp) -> u64 {
        self.host.state().kernel.calls.get(&op).copied().unwrap_or(0)
    }

    /// Mock descriptors open now (for leak checks).
    pub fn open_fds(&self) -> usize {
        self.host.state().kernel.fds.len()
    }

    /// DMA mappings alive in all containers and IOASes.
    pub fn dma_mappings(&self) -> usize {
        let st = self.host.state();
        let k = &st.kernel;
        let t1: usize = k
            .containers
            .values()
            .map(|c| match &c.iommu {
                Some(Iommu::Type1(t)) => t.dmas.len(),
                _ => 0,
            })
            .sum();
        let io: usize = k
            .ictxs
            .values()
            .flat_map(|c| c.objs.values())
            .map(|o| match o {
                IoObj::Ioas(i) => i.areas.len(),
                _ => 0,
            })
            .sum();
        t1 + io
    }

    /// Region mappings (`mmap`) alive.
    pub fn mmaps(&self) -> usize {
        self.host.state().kernel.mmaps.len()
    }

    /// Bytes pinned against `RLIMIT_MEMLOCK` now (type1 and iommufd together).
    pub fn locked_bytes(&self) -> u64 {
        let st = self.host.state();
        (st.kernel.locked_mm + st.kernel.locked_user) * PAGE
    }

    /// Locks the state, counts the call and fires an injected fault if one is due (see
    /// [`MockHost::inject`](crate::mock::MockHost::inject)).
    pub(super) fn enter(&self, op: KernelOp) -> KResult<MutexGuard<'_, HostState>> {
        let mut st = self.host.state();
        *st.kernel.calls.entry(op).or_insert(0) += 1;
        if let Some(e) = kernel_fault(&mut st, op) {
            return Err(e);
        }
        refresh_noiommu(&mut st);
        Ok(st)
    }
}

/// The (device, inode) of an open descriptor's file.
fn inode_of(fd: RawFd) -> Option<(u64, u64)> {
    // SAFETY: `st` is plain data that fstat fills.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes at most size_of::<stat>() bytes into `st`.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some((st.st_dev, st.st_ino))
}

/// A new mock descriptor for `obj`.
pub(super) fn new_fd(k: &mut KernelState, obj: FdObj) -> KernelFd {
    // SAFETY: the name is a NUL-terminated literal; memfd_create has no other inputs.
    let raw = unsafe { libc::memfd_create(c"vfio-mock".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(raw >= 0, "memfd_create for a mock descriptor: {}", std::io::Error::last_os_error());
    // SAFETY: `raw` was just returned by memfd_create and is owned by no one else.
    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
    if let Some(ino) = inode_of(raw) {
        k.inodes.insert(raw, ino);
    }
    k.backing.insert(raw, owned);
    k.fds.insert(raw, obj);
    KernelFd::from_raw(raw)
}

/// The object behind a mock descriptor (EBADF for any other descriptor).
pub(super) fn lookup(k: &KernelState, fd: &KernelFd) -> KResult<FdObj> {
    k.fds.get(&fd.raw()).copied().ok_or(Errno::EBADF)
}

/// The container of a container fd; the ioctls of one kind of file on another kind
/// fail with ENOTTY (here and in `group_fd`, `ictx_of`).
pub(super) fn container_of(k: &KernelState, fd: &KernelFd) -> KResult<u32> {
    match lookup(k, fd)? {
        FdObj::Container(c) => Ok(c),
        _ => Err(Errno::ENOTTY),
    }
}

/// The group of a group fd.
pub(super) fn group_fd(k: &KernelState, fd: &KernelFd) -> KResult<u32> {
    match lookup(k, fd)? {
        FdObj::Group(g) => Ok(g),
        _ => Err(Errno::ENOTTY),
    }
}

/// The iommufd context of an iommufd fd.
pub(super) fn ictx_of(k: &KernelState, fd: &KernelFd) -> KResult<u32> {
    match lookup(k, fd)? {
        FdObj::Iommufd(c) => Ok(c),
        _ => Err(Errno::ENOTTY),
    }
}

/// A device fd with access granted (`vfio_device_fops_unl_ioctl`: EINVAL before a cdev
/// is bound).
pub(super) fn device_fd(k: &KernelState, fd: &KernelFd) -> KResult<DevFd> {
    match lookup(k, fd)? {
        FdObj::Device(d) if d.access_granted() => Ok(d),
        FdObj::Device(_) => Err(Errno::EINVAL),
        _ => Err(Errno::ENOTTY),
    }
}

/// Whether `fd` is open in the process (a descriptor the mock did not hand out).
pub(super) fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only queries the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// `VfioKernel::export`: hands over the real descriptor behind a mock one.
pub(super) fn export(k: &mut KernelState, fd: KernelFd) -> OwnedFd {
    let raw = fd.raw();
    match k.backing.remove(&raw) {
        Some(owned) => owned,
        // Not one of ours: the caller handed over a descriptor it owns.
        // SAFETY: the KernelFd owns the descriptor and is consumed here.
        None => unsafe { OwnedFd::from_raw_fd(raw) },
    }
}

/// `VfioKernel::adopt`: the object of the mock descriptor with the same inode moves to
/// `fd`.
pub(super) fn adopt(k: &mut KernelState, fd: OwnedFd) -> KResult<KernelFd> {
    let ino = inode_of(fd.as_raw_fd()).ok_or(Errno::EBADF)?;
    let old = k.inodes.iter().find(|(_, i)| **i == ino).map(|(r, _)| *r).ok_or(Errno::EBADF)?;
    let obj = k.fds.remove(&old).ok_or(Errno::EBADF)?;
    k.inodes.remove(&old);
    k.backing.remove(&old);
    let raw = fd.as_raw_fd();
    k.fds.insert(raw, obj);
    k.inodes.insert(raw, ino);
    k.backing.insert(raw, fd);
    Ok(KernelFd::from_raw(raw))
}

/// `close(2)` of a mock descriptor: the object it opened lets go of it (a container or
/// iommufd context goes once nothing holds it, a group file once no device fd holds it,
/// a device file closes the device).
pub(super) fn close(st: &mut HostState, fd: KernelFd) {
    let HostState { devices, kernel: k, .. } = st;
    k.backing.remove(&fd.raw());
    k.inodes.remove(&fd.raw());
    let Some(obj) = k.fds.remove(&fd.raw()) else { return };
    match obj {
        FdObj::Container(cid) => {
            if let Some(c) = k.containers.get_mut(&cid) {
                c.fd_open = false;
            }
            gc_container(k, cid);
        }
        FdObj::Group(gid) => {
            if let Some(g) = k.groups.get_mut(&gid) {
                g.opened = false;
            }
            maybe_release_group(k, gid);
        }
        FdObj::Iommufd(id) => {
            if let Some(c) = k.ictxs.get_mut(&id) {
                c.fd_open = false;
            }
            gc_ictx(k, id);
        }
        FdObj::Device(d) => {
            if d.access_granted() {
                close_device(k, devices, d);
            }
        }
    }
}
