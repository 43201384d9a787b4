//! Interrupts (drivers/vfio/pci/vfio_pci_intrs.c): IRQ info, `VFIO_DEVICE_SET_IRQS`
//! for INTx (with masking and the unmask eventfd), MSI, MSI-X (dynamic allocation where
//! the platform has it), and the error and request triggers. Interrupts are delivered on
//! real eventfds: `SET_IRQS` duplicates the caller's eventfd and a trigger writes to it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_INFO_AUTOMASKED, VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_INFO_MASKABLE,
    VFIO_IRQ_INFO_NORESIZE, VFIO_IRQ_SET_ACTION_MASK, VFIO_IRQ_SET_ACTION_TRIGGER,
    VFIO_IRQ_SET_ACTION_TYPE_MASK, VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_DATA_BOOL,
    VFIO_IRQ_SET_DATA_EVENTFD, VFIO_IRQ_SET_DATA_NONE, VFIO_IRQ_SET_DATA_TYPE_MASK,
};

use super::config::find_cap;
use super::device::sim;
use super::fds::device_fd;
use super::info::argsz;
use super::le::{rd16, rd32};
use super::state::IrqState;
use super::{ERR, INTX, MSI, MSIX, NUM_IRQS, REQ};
use crate::kernel::{vfio_irq_info, Errno, KResult, KernelFd};
use crate::mock::{HostState, SimDevice};
use crate::pci::PciAddress;

pub(super) fn get_info(st: &HostState, device: &KernelFd, info: &mut vfio_irq_info) -> KResult<()> {
    let d = device_fd(&st.kernel, device)?;
    let dev = sim(st, d.addr)?;
    // pci_core vfio_pci_ioctl_get_irq_info.
    if info.argsz < 16 || info.index >= NUM_IRQS {
        return Err(Errno::EINVAL);
    }
    if info.index == ERR && !dev.spec.pcie {
        return Err(Errno::EINVAL);
    }
    info.flags = VFIO_IRQ_INFO_EVENTFD;
    info.count = irq_count(dev, info.index);
    if info.index == INTX {
        info.flags |= VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED;
    } else if info.index != MSIX || !(st.kernel.config.dyn_msix && dev.spec.msix.is_some()) {
        // vfio_pci_core_ioctl_get_irq_info: has_dyn_msix needs an MSI-X capability
        // (pci_msix_can_alloc_dyn); without one MSI-X is NORESIZE like MSI.
        info.flags |= VFIO_IRQ_INFO_NORESIZE;
    }
    Ok(())
}

/// One `VFIO_DEVICE_SET_IRQS` request, its header checked and its data sized.
struct SetIrqs<'a> {
    index: u32,
    action: u32,
    dtype: u32,
    start: u32,
    count: u32,
    data: &'a [u8],
}

impl SetIrqs<'_> {
    /// The eventfd number at position `i` of the data.
    fn fd_at(&self, i: usize) -> i32 {
        rd32(self.data, 4 * i) as i32
    }
}

pub(super) fn set_irqs(st: &mut HostState, device: &KernelFd, buf: &[u8]) -> KResult<()> {
    let d = device_fd(&st.kernel, device)?;
    // vfio_set_irqs_validate_and_prepare (drivers/vfio/vfio_main.c).
    let argsz = argsz(buf, 20)?;
    let (flags, index, start, count) = (rd32(buf, 4), rd32(buf, 8), rd32(buf, 12), rd32(buf, 16));
    if index >= NUM_IRQS
        || count >= u32::MAX - start
        || flags & !(VFIO_IRQ_SET_DATA_TYPE_MASK | VFIO_IRQ_SET_ACTION_TYPE_MASK) != 0
    {
        return Err(Errno::EINVAL);
    }
    let max = irq_count(sim(st, d.addr)?, index);
    if start >= max || start + count > max {
        return Err(Errno::EINVAL);
    }
    let size = match flags & VFIO_IRQ_SET_DATA_TYPE_MASK {
        VFIO_IRQ_SET_DATA_NONE => 0,
        VFIO_IRQ_SET_DATA_BOOL => 1,
        VFIO_IRQ_SET_DATA_EVENTFD => 4,
        _ => return Err(Errno::EINVAL),
    };
    let data_len = count as usize * size;
    if size > 0 && (argsz as usize - 20) < data_len {
        return Err(Errno::EINVAL);
    }
    let req = SetIrqs {
        index,
        action: flags & VFIO_IRQ_SET_ACTION_TYPE_MASK,
        dtype: flags & VFIO_IRQ_SET_DATA_TYPE_MASK,
        start,
        count,
        data: buf.get(20..20 + data_len).ok_or(Errno::EFAULT)?,
    };
    let spec = &sim(st, d.addr)?.spec;
    let pcie = spec.pcie;
    let dyn_msix = st.kernel.config.dyn_msix && spec.msix.is_some();
    let irq = &mut st.kernel.devs.entry(d.addr).or_default().irq;
    // pci_intrs vfio_pci_set_irqs_ioctl: the handler for the index and action.
    match (index, req.action) {
        (INTX, VFIO_IRQ_SET_ACTION_MASK) => set_intx_mask(irq, &req),
        (INTX, VFIO_IRQ_SET_ACTION_UNMASK) => set_intx_unmask(irq, &req),
        (INTX, VFIO_IRQ_SET_ACTION_TRIGGER) => set_intx_trigger(irq, &req),
        (MSI | MSIX, VFIO_IRQ_SET_ACTION_TRIGGER) => set_msi_trigger(irq, &req, dyn_msix),
        (ERR, VFIO_IRQ_SET_ACTION_TRIGGER) if !pcie => Err(Errno::ENOTTY),
        (ERR, VFIO_IRQ_SET_ACTION_TRIGGER) => set_trigger_single(&mut irq.err_trigger, &req),
        (REQ, VFIO_IRQ_SET_ACTION_TRIGGER) => set_trigger_single(&mut irq.req_trigger, &req),
        // MSI/MSI-X masking and anything else: no handler (ENOTTY).
        _ => Err(Errno::ENOTTY),
    }
}

/// vfio_pci_set_intx_mask.
fn set_intx_mask(irq: &mut IrqState, req: &SetIrqs<'_>) -> KResult<()> {
    if irq.kind != Some(INTX) || req.start != 0 || req.count != 1 {
        return Err(Errno::EINVAL);
    }
    match req.dtype {
        VFIO_IRQ_SET_DATA_NONE => irq.intx_masked = true,
        VFIO_IRQ_SET_DATA_BOOL => {
            if req.data[0] != 0 {
                irq.intx_masked = true;
            }
        }
        _ => return Err(Errno::ENOTTY),
    }
    Ok(())
}

/// vfio_pci_set_intx_unmask.
fn set_intx_unmask(irq: &mut IrqState, req: &SetIrqs<'_>) -> KResult<()> {
    if irq.kind != Some(INTX) || req.start != 0 || req.count != 1 {
        return Err(Errno::EINVAL);
    }
    match req.dtype {
        VFIO_IRQ_SET_DATA_NONE => intx_unmask(irq),
        VFIO_IRQ_SET_DATA_BOOL => {
            if req.data[0] != 0 {
                intx_unmask(irq);
            }
        }
        _ => {
            let fd = req.fd_at(0);
            irq.intx_unmask_fd = if fd >= 0 { Some(dup_eventfd(fd)?) } else { None };
        }
    }
    Ok(())
}

/// vfio_pci_set_intx_trigger.
fn set_intx_trigger(irq: &mut IrqState, req: &SetIrqs<'_>) -> KResult<()> {
    if irq.kind == Some(INTX) && req.count == 0 && req.dtype == VFIO_IRQ_SET_DATA_NONE {
        irq.kind = None;
        irq.intx_trigger = None;
        irq.intx_unmask_fd = None;
        irq.intx_masked = false;
        irq.intx_pending = false;
        return Ok(());
    }
    if !(irq.kind == Some(INTX) || irq.kind.is_none()) || req.start != 0 || req.count != 1 {
        return Err(Errno::EINVAL);
    }
    if req.dtype == VFIO_IRQ_SET_DATA_EVENTFD {
        let fd = req.fd_at(0);
        let trigger = if fd >= 0 { Some(dup_eventfd(fd)?) } else { None };
        if irq.kind.is_none() {
            irq.kind = Some(INTX);
            irq.intx_masked = false;
            irq.intx_pending = false;
        }
        irq.intx_trigger = trigger;
        return Ok(());
    }
    if irq.kind != Some(INTX) {
        return Err(Errno::EINVAL);
    }
    // Loopback: signal without masking (vfio_send_intx_eventfd).
    if req.dtype == VFIO_IRQ_SET_DATA_NONE || req.data[0] != 0 {
        if let Some(t) = &irq.intx_trigger {
            signal(t);
        }
    }
    Ok(())
}

/// vfio_pci_set_msi_trigger (MSI and MSI-X).
fn set_msi_trigger(irq: &mut IrqState, req: &SetIrqs<'_>, dyn_msix: bool) -> KResult<()> {
    let SetIrqs { index, start, count, dtype, .. } = *req;
    if irq.kind == Some(index) && count == 0 && dtype == VFIO_IRQ_SET_DATA_NONE {
        irq.kind = None;
        irq.vectors.clear();
        irq.nvec = 0;
        return Ok(());
    }
    if !(irq.kind == Some(index) || irq.kind.is_none()) {
        return Err(Errno::EINVAL);
    }
    if dtype == VFIO_IRQ_SET_DATA_EVENTFD {
        return set_msi_vectors(irq, req, dyn_msix);
    }
    if irq.kind != Some(index) {
        return Err(Errno::EINVAL);
    }
    for i in 0..count {
        let fire = dtype == VFIO_IRQ_SET_DATA_NONE || req.data[i as usize] != 0;
        if fire {
            if let Some(t) = irq.vectors.get(&(start + i)) {
                signal(t);
            }
        }
    }
    Ok(())
}

/// Eventfds for MSI/MSI-X vectors `start..start + count`, enabling the interrupt type
/// first if it is off; a failure undoes what this call set.
fn set_msi_vectors(irq: &mut IrqState, req: &SetIrqs<'_>, dyn_msix: bool) -> KResult<()> {
    let SetIrqs { index, start, count, .. } = *req;
    let enabling = irq.kind.is_none();
    // vfio_msi_enable -> pci_alloc_irq_vectors(1, start + count): ERANGE for 0.
    if enabling && start + count == 0 {
        return Err(Errno::ERANGE);
    }
    if enabling {
        irq.kind = Some(index);
        irq.nvec = start + count;
    }
    // vfio_msi_set_block: vectors beyond those allocated need dynamic MSI-X.
    let mut done: Vec<u32> = Vec::new();
    let mut res = Ok(());
    for i in 0..count {
        let v = start + i;
        let fd = req.fd_at(i as usize);
        // vfio_msi_set_vector_signal: fd -1 only tears down; a new vector past
        // those allocated needs dynamic MSI-X (pci_irq_vector: EINVAL).
        if fd >= 0 && v >= irq.nvec {
            if index == MSIX && dyn_msix {
                irq.nvec = v + 1;
            } else {
                res = Err(Errno::EINVAL);
                break;
            }
        }
        irq.vectors.remove(&v);
        if fd >= 0 {
            match dup_eventfd(fd) {
                Ok(o) => {
                    irq.vectors.insert(v, o);
                }
                Err(e) => {
                    res = Err(e);
                    break;
                }
            }
        }
        done.push(v);
    }
    if res.is_err() {
        for v in done {
            irq.vectors.remove(&v);
        }
        if enabling {
            irq.kind = None;
            irq.nvec = 0;
            irq.vectors.clear();
        }
    }
    res
}

/// vfio_pci_set_err_trigger / req_trigger -> vfio_pci_set_ctx_trigger_single: one
/// optional eventfd in `slot`.
fn set_trigger_single(slot: &mut Option<OwnedFd>, req: &SetIrqs<'_>) -> KResult<()> {
    if req.start != 0 || req.count > 1 {
        return Err(Errno::EINVAL);
    }
    match req.dtype {
        VFIO_IRQ_SET_DATA_NONE => {
            if slot.is_none() {
                return Err(Errno::EINVAL);
            }
            if req.count > 0 {
                if let Some(t) = slot {
                    signal(t);
                }
            } else {
                *slot = None;
            }
            Ok(())
        }
        VFIO_IRQ_SET_DATA_BOOL => {
            if req.count == 0 {
                return Err(Errno::EINVAL);
            }
            if req.data[0] != 0 {
                if let Some(t) = slot {
                    signal(t);
                }
            }
            Ok(())
        }
        _ => {
            if req.count == 0 {
                return Err(Errno::EINVAL);
            }
            let fd = req.fd_at(0);
            if fd == -1 {
                *slot = None;
            } else if fd >= 0 {
                *slot = Some(dup_eventfd(fd)?);
            }
            Ok(())
        }
    }
}

/// A new eventfd for the caller (`eventfd(2)`).
pub(super) fn new_eventfd() -> KResult<vmm_sys_util::eventfd::EventFd> {
    vmm_sys_util::eventfd::EventFd::new(libc::EFD_CLOEXEC)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// A device raises interrupt `vector` of IRQ `index` (see `MockHost::raise_irq`).
pub(super) fn raise_irq(st: &mut HostState, address: PciAddress, index: u32, vector: u32) -> bool {
    let Some(dev) = st.kernel.devs.get_mut(&address) else { return false };
    let irq = &mut dev.irq;
    match index {
        INTX => {
            if irq.kind != Some(INTX) || vector != 0 {
                return false;
            }
            poll_unmask_fd(irq);
            if irq.intx_masked {
                irq.intx_pending = true;
                false
            } else {
                irq.intx_masked = true;
                irq.intx_trigger.as_ref().is_some_and(signal)
            }
        }
        MSI | MSIX => irq.kind == Some(index) && irq.vectors.get(&vector).is_some_and(signal),
        ERR => vector == 0 && irq.err_trigger.as_ref().is_some_and(signal),
        REQ => vector == 0 && irq.req_trigger.as_ref().is_some_and(signal),
        _ => false,
    }
}

pub(super) fn signal(fd: &OwnedFd) -> bool {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a local to an eventfd we own a duplicate of.
    let n = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    n == 8
}

/// Reads the unmask eventfd of INTx (a virqfd in the kernel) if it was signalled.
fn poll_unmask_fd(irq: &mut IrqState) {
    let Some(fd) = &irq.intx_unmask_fd else { return };
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, zero timeout.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    if r == 1 && p.revents & libc::POLLIN != 0 {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into a local from a readable eventfd.
        unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
        intx_unmask(irq);
    }
}

/// `vfio_pci_intx_unmask_handler`: unmask; a still-pending interrupt is delivered again
/// and stays masked.
fn intx_unmask(irq: &mut IrqState) {
    if !irq.intx_masked {
        return;
    }
    if irq.intx_pending {
        irq.intx_pending = false;
        if let Some(t) = &irq.intx_trigger {
            signal(t);
        }
    } else {
        irq.intx_masked = false;
    }
}

/// Duplicates a caller's eventfd (`eventfd_ctx_fdget`: EBADF for a bad fd, EINVAL for a
/// descriptor that is not an eventfd).
pub(super) fn dup_eventfd(fd: i32) -> KResult<OwnedFd> {
    if fd < 0 {
        return Err(Errno::EBADF);
    }
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).map_err(|_| Errno::EBADF)?;
    if link.to_string_lossy() != "anon_inode:[eventfd]" {
        return Err(Errno::EINVAL);
    }
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor we just checked is open.
    let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if d < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `d` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(d) })
}

/// How many interrupts of IRQ `index` the device has.
pub(super) fn irq_count(d: &SimDevice, index: u32) -> u32 {
    // vfio_pci_get_irq_count() (pci_core).
    match index {
        INTX => u32::from(d.config[0x3d] != 0),
        MSI => find_cap(&d.config, 0x05).map_or(0, |p| 1 << ((d.config[p + 2] & 0x0e) >> 1)),
        MSIX => {
            find_cap(&d.config, 0x11).map_or(0, |p| u32::from(rd16(&d.config, p + 2) & 0x7ff) + 1)
        }
        ERR => u32::from(d.spec.pcie),
        REQ => 1,
        _ => 0,
    }
}
