//! Interrupts: INTx, MSI and MSI-X delivered on eventfds (`VFIO_DEVICE_SET_IRQS`).
//!
//! The calls build the `vfio_irq_set` payload on the stack: setting up, triggering,
//! masking and unmasking allocate nothing.

use std::os::fd::AsRawFd;

use bitflags::bitflags;
use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_SET_ACTION_MASK, VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_ACTION_UNMASK,
    VFIO_IRQ_SET_DATA_BOOL, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_IRQ_SET_DATA_NONE,
};
use vmm_sys_util::eventfd::EventFd;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::kernel::{vfio_irq_info, KernelOp};

/// The IRQ indexes of a vfio-pci device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum IrqIndex {
    /// Legacy INTx (one line, level-triggered, masked automatically when it fires).
    Intx,
    /// MSI.
    Msi,
    /// MSI-X.
    Msix,
    /// AER error notification.
    Err,
    /// Device request (the host wants the device back).
    Req,
}

impl IrqIndex {
    /// The kernel's index number.
    pub fn raw(self) -> u32 {
        match self {
            IrqIndex::Intx => 0,
            IrqIndex::Msi => 1,
            IrqIndex::Msix => 2,
            IrqIndex::Err => 3,
            IrqIndex::Req => 4,
        }
    }

    /// Every index, in kernel order.
    pub const ALL: [IrqIndex; 5] =
        [IrqIndex::Intx, IrqIndex::Msi, IrqIndex::Msix, IrqIndex::Err, IrqIndex::Req];
}

bitflags! {
    /// `vfio_irq_info.flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct IrqFlags: u32 {
        /// Can signal an eventfd.
        const EVENTFD = 1;
        /// Can be masked and unmasked.
        const MASKABLE = 2;
        /// Masked by the kernel when it fires (INTx): unmask after handling.
        const AUTOMASKED = 4;
        /// The vector count cannot change while enabled (enable all at once).
        const NORESIZE = 8;
    }
}

/// `VFIO_DEVICE_GET_IRQ_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrqInfo {
    /// The index.
    pub index: IrqIndex,
    /// How many vectors the device offers there.
    pub count: u32,
    /// Capabilities.
    pub flags: IrqFlags,
}

/// The largest vector count one call handles (MSI-X allows 2048).
pub const MAX_VECTORS: usize = 2048;
const HDR: usize = 20; // sizeof(struct vfio_irq_set) without data

impl Device {
    /// How many vectors, and what they can do, at one IRQ index.
    pub fn irq_info(&self, index: IrqIndex) -> Result<IrqInfo> {
        let mut info = vfio_irq_info {
            argsz: std::mem::size_of::<vfio_irq_info>() as u32,
            flags: 0,
            index: index.raw(),
            count: 0,
        };
        self.kernel()
            .device_get_irq_info(self.fd(), &mut info)
            .map_err(|e| self.kerr(KernelOp::DeviceGetIrqInfo, e))?;
        Ok(IrqInfo { index, count: info.count, flags: IrqFlags::from_bits_retain(info.flags) })
    }

    /// Issues `VFIO_DEVICE_SET_IRQS` with a payload of `data_len` bytes written by
    /// `fill`. The buffer lives on the stack and is only as large as the call needs:
    /// calls without data (trigger, mask, unmask, disable) touch 20 bytes.
    fn set_irqs(
        &self,
        flags: u32,
        index: IrqIndex,
        start: u32,
        count: u32,
        data_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<()> {
        const SMALL: usize = 64;
        let hdr = [flags, index.raw(), start, count];
        if data_len <= SMALL {
            let mut buf = [0u8; HDR + SMALL];
            self.issue_set_irqs(&mut buf, hdr, data_len, fill)
        } else {
            let mut buf = [0u8; HDR + 4 * MAX_VECTORS];
            self.issue_set_irqs(&mut buf, hdr, data_len, fill)
        }
    }

    /// Writes the header `[flags, index, start, count]` and the payload into `buf` and
    /// makes the call.
    #[inline]
    fn issue_set_irqs(
        &self,
        buf: &mut [u8],
        hdr: [u32; 4],
        data_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<()> {
        let len = HDR + data_len;
        buf[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
        for (i, v) in hdr.iter().enumerate() {
            buf[4 + 4 * i..8 + 4 * i].copy_from_slice(&v.to_ne_bytes());
        }
        fill(&mut buf[HDR..len]);
        self.kernel()
            .device_set_irqs(self.fd(), &buf[..len])
            .map_err(|e| self.kerr(KernelOp::DeviceSetIrqs, e))
    }

    fn too_many(&self, n: usize) -> Error {
        Error::Invalid {
            what: "vector count",
            input: n.to_string(),
            reason: format!("at most {MAX_VECTORS} vectors per call"),
        }
    }

    /// Routes vectors `start..start + fds.len()` of `index` to eventfds (`None` leaves that
    /// vector disabled, `-1` to the kernel). Enabling MSI or MSI-X this way turns it on.
    pub fn enable_irqs(&self, index: IrqIndex, start: u32, fds: &[Option<&EventFd>]) -> Result<()> {
        self.route(index, start, fds.len(), |data| {
            for (slot, fd) in data.chunks_exact_mut(4).zip(fds) {
                slot.copy_from_slice(&fd.map_or(-1, |f| f.as_raw_fd()).to_ne_bytes());
            }
        })
    }

    /// Routes every vector `start..start + fds.len()` to the given eventfds.
    pub fn enable_irqs_all(&self, index: IrqIndex, start: u32, fds: &[EventFd]) -> Result<()> {
        self.route(index, start, fds.len(), |data| {
            for (slot, fd) in data.chunks_exact_mut(4).zip(fds) {
                slot.copy_from_slice(&fd.as_raw_fd().to_ne_bytes());
            }
        })
    }

    /// Disables vectors `start..start + count` of `index`, leaving the others as they are.
    pub fn disable_vectors(&self, index: IrqIndex, start: u32, count: u32) -> Result<()> {
        // -1 (all bits set) is "no eventfd" for a vector.
        self.route(index, start, count as usize, |data| data.fill(0xff))
    }

    /// `DATA_EVENTFD | ACTION_TRIGGER` for `n` vectors, payload written by `fill`.
    fn route(
        &self,
        index: IrqIndex,
        start: u32,
        n: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<()> {
        if n > MAX_VECTORS {
            return Err(self.too_many(n));
        }
        let flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
        self.set_irqs(flags, index, start, n as u32, 4 * n, fill)
    }

    /// A call without payload (`DATA_NONE`) with the given action.
    fn no_data(&self, action: u32, index: IrqIndex, start: u32, count: u32) -> Result<()> {
        self.set_irqs(VFIO_IRQ_SET_DATA_NONE | action, index, start, count, 0, |_| {})
    }

    /// Disables every vector of `index` (MSI/MSI-X are turned off, INTx released).
    pub fn disable_irqs(&self, index: IrqIndex) -> Result<()> {
        self.no_data(VFIO_IRQ_SET_ACTION_TRIGGER, index, 0, 0)
    }

    /// Fires vectors `start..start + count` from software (their eventfds are signalled as
    /// if the device had raised them). No heap allocation.
    pub fn trigger_irqs(&self, index: IrqIndex, start: u32, count: u32) -> Result<()> {
        self.no_data(VFIO_IRQ_SET_ACTION_TRIGGER, index, start, count)
    }

    /// Fires only the vectors whose entry in `which` is true (`DATA_BOOL`).
    pub fn trigger_irqs_where(&self, index: IrqIndex, start: u32, which: &[bool]) -> Result<()> {
        if which.len() > MAX_VECTORS {
            return Err(self.too_many(which.len()));
        }
        let flags = VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER;
        self.set_irqs(flags, index, start, which.len() as u32, which.len(), |data| {
            for (d, w) in data.iter_mut().zip(which) {
                *d = u8::from(*w);
            }
        })
    }

    /// Masks vectors `start..start + count`.
    pub fn mask_irqs(&self, index: IrqIndex, start: u32, count: u32) -> Result<()> {
        self.no_data(VFIO_IRQ_SET_ACTION_MASK, index, start, count)
    }

    /// Unmasks vectors `start..start + count` (for INTx: after handling an interrupt).
    pub fn unmask_irqs(&self, index: IrqIndex, start: u32, count: u32) -> Result<()> {
        self.no_data(VFIO_IRQ_SET_ACTION_UNMASK, index, start, count)
    }

    /// INTx: an eventfd that, when signalled, unmasks the line (the "resample" fd a VMM
    /// wires to KVM's irqfd resampler).
    pub fn set_intx_unmask_eventfd(&self, fd: &EventFd) -> Result<()> {
        let flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_UNMASK;
        self.set_irqs(flags, IrqIndex::Intx, 0, 1, 4, |data| {
            data.copy_from_slice(&fd.as_raw_fd().to_ne_bytes())
        })
    }

    /// Creates `n` eventfds through the kernel seam (convenience for enabling vectors).
    pub fn new_eventfds(&self, n: usize) -> Result<Vec<EventFd>> {
        (0..n)
            .map(|_| self.kernel().eventfd().map_err(|e| self.kerr(KernelOp::EventFd, e)))
            .collect()
    }
}
