//! The kernel's side of [`MockHost`]: a handle on the mock kernel, its knobs, and what
//! a test or a device model does to the host from outside (raise interrupts, DMA,
//! attach a model, count resets).

use std::sync::Arc;

use super::dma::{dma_read, dma_write};
use super::group::refresh_noiommu;
use super::irq::raise_irq;
use super::model::DeviceModel;
use super::region::bar_len;
use super::{MockKernel, MockKernelConfig};
use crate::kernel::KResult;
use crate::mock::MockHost;
use crate::pci::PciAddress;

impl MockHost {
    /// The mock kernel of this host (every call gives a handle on the same kernel).
    pub fn kernel(&self) -> Arc<MockKernel> {
        Arc::new(MockKernel { host: self.clone() })
    }

    /// Replaces the kernel-level knobs (see [`MockKernelConfig`]).
    pub fn set_kernel_config(&self, config: MockKernelConfig) {
        let mut st = self.state();
        st.kernel.config = config;
        refresh_noiommu(&mut st);
    }

    /// The kernel-level knobs in force.
    pub fn kernel_config(&self) -> MockKernelConfig {
        self.state().kernel.config.clone()
    }

    /// The no-IOMMU group number given to a device without an IOMMU group while it is
    /// bound to vfio-pci in no-IOMMU mode (`/dev/vfio/noiommu-N`).
    pub fn noiommu_group(&self, address: PciAddress) -> Option<u32> {
        let mut st = self.state();
        refresh_noiommu(&mut st);
        st.kernel.noiommu_ids.get(&address).copied()
    }

    /// How many times the device was reset (FLR through `VFIO_DEVICE_RESET`, or a bus
    /// reset through `VFIO_DEVICE_PCI_HOT_RESET`).
    pub fn reset_count(&self, address: PciAddress) -> u64 {
        self.state().kernel.devs.get(&address).map_or(0, |d| d.resets)
    }

    /// A device model raises interrupt `vector` of IRQ index `index`
    /// (`VFIO_PCI_INTX_IRQ_INDEX` = 0, MSI = 1, MSI-X = 2, ERR = 3, REQ = 4). Returns
    /// whether an eventfd was signalled. INTx is masked automatically when delivered
    /// (`vfio_intx_handler`) and held pending while masked.
    pub fn raise_irq(&self, address: PciAddress, index: u32, vector: u32) -> bool {
        raise_irq(&mut self.state(), address, index, vector)
    }

    /// A device reads guest memory by DMA at `iova` through the mock IOMMU. Fails with
    /// EFAULT (an IOMMU fault) when any byte is not mapped readable for the device.
    pub fn dma_read(&self, address: PciAddress, iova: u64, buf: &mut [u8]) -> KResult<()> {
        dma_read(&self.state(), address, iova, buf)
    }

    /// A device writes guest memory by DMA at `iova` through the mock IOMMU. Fails with
    /// EFAULT (an IOMMU fault) when any byte is not mapped writable for the device.
    pub fn dma_write(&self, address: PciAddress, iova: u64, buf: &[u8]) -> KResult<()> {
        dma_write(&self.state(), address, iova, buf)
    }

    /// Backs BAR `bar` of a device with a device model: the BAR is then offered without
    /// the MMAP flag (as vfio-pci does for BARs it must trap), so every access reaches
    /// the model. Returns `false` when no device has that address or the BAR is absent.
    pub fn attach_model(&self, address: PciAddress, bar: u32, model: Box<dyn DeviceModel>) -> bool {
        let mut st = self.state();
        let Some(dev) = st.devices.get(&address) else { return false };
        if bar_len(dev, bar) == 0 {
            return false;
        }
        st.kernel.models.insert(address, (bar, model));
        true
    }
}
