//! Device models: the public [`DeviceModel`] trait for a simulated device's behaviour
//! behind one BAR, and the [`ModelCtx`] through which a model raises interrupts and does
//! DMA while it handles an access.

use super::dma::{dma_read, dma_write};
use super::irq::raise_irq;
use super::state::KernelState;
use super::{INTX, MSI};
use crate::kernel::KResult;
use crate::mock::HostState;
use crate::pci::PciAddress;

/// A simulated device's behaviour behind one BAR. Accesses arrive as the user issued
/// them (offset in the BAR and the bytes), with a context to raise interrupts and do
/// DMA through the mock IOMMU.
///
/// Callbacks run with the host state locked: use the [`ModelCtx`], never a
/// [`MockHost`](crate::mock::MockHost) handle, from inside them.
pub trait DeviceModel: Send + std::fmt::Debug {
    /// A read of `data.len()` bytes at `offset`; fill `data`.
    fn read(&mut self, ctx: &mut ModelCtx<'_>, offset: u64, data: &mut [u8]);
    /// A write of `data` at `offset`.
    fn write(&mut self, ctx: &mut ModelCtx<'_>, offset: u64, data: &[u8]);
    /// The device was reset (FLR or bus reset).
    fn reset(&mut self) {}
}

/// What a [`DeviceModel`] may do while handling an access.
pub struct ModelCtx<'a> {
    st: &'a mut HostState,
    address: PciAddress,
}

impl ModelCtx<'_> {
    /// The device's address.
    pub fn address(&self) -> PciAddress {
        self.address
    }

    /// Raises interrupt `vector` of IRQ `index`
    /// (see [`MockHost::raise_irq`](crate::mock::MockHost::raise_irq)).
    pub fn raise_irq(&mut self, index: u32, vector: u32) -> bool {
        raise_irq(self.st, self.address, index, vector)
    }

    /// Raises the device's interrupt the way a conventional device does: MSI vector 0
    /// when MSI is enabled, else INTx.
    pub fn raise_interrupt(&mut self) -> bool {
        let msi = self.st.kernel.devs.get(&self.address).is_some_and(|d| d.irq.kind == Some(MSI));
        raise_irq(self.st, self.address, if msi { MSI } else { INTX }, 0)
    }

    /// DMA from guest memory (see [`MockHost::dma_read`](crate::mock::MockHost::dma_read)).
    pub fn dma_read(&mut self, iova: u64, buf: &mut [u8]) -> KResult<()> {
        dma_read(self.st, self.address, iova, buf)
    }

    /// DMA to guest memory (see [`MockHost::dma_write`](crate::mock::MockHost::dma_write)).
    pub fn dma_write(&mut self, iova: u64, buf: &[u8]) -> KResult<()> {
        dma_write(self.st, self.address, iova, buf)
    }
}

/// Calls the model behind `addr` (taken out of the state for the call).
pub(super) fn with_model<R>(
    st: &mut HostState,
    addr: PciAddress,
    f: impl FnOnce(&mut dyn DeviceModel, &mut ModelCtx<'_>) -> R,
) -> Option<R> {
    let (bar, mut model) = st.kernel.models.remove(&addr)?;
    let r = {
        let mut ctx = ModelCtx { st: &mut *st, address: addr };
        f(model.as_mut(), &mut ctx)
    };
    st.kernel.models.insert(addr, (bar, model));
    Some(r)
}

/// The BAR of the device at `addr` that a model backs, if any.
pub(super) fn model_bar(k: &KernelState, addr: PciAddress) -> Option<u32> {
    k.models.get(&addr).map(|m| m.0)
}
