//! KVM integration (feature `kvm`), on rust-vmm's `kvm-ioctls`.
//!
//! - [`KvmVfioDevice`]: the KVM VFIO pseudo-device. A VMM adds every VFIO group (legacy)
//!   or device cdev (iommufd) it uses, so that KVM knows the guest has non-coherent DMA
//!   (and, on some platforms, sets up what device assignment needs);
//! - [`route_msi`]: a device's MSI or MSI-X vectors straight into the guest: one eventfd
//!   per vector, given both to VFIO (the trigger) and to KVM as an irqfd on a GSI routed
//!   to the guest's MSI address and data, so an interrupt never wakes the VMM;
//! - [`route_intx`]: INTx as a level interrupt with a resample eventfd, so KVM unmasks
//!   it in VFIO when the guest acknowledges it.

use std::os::fd::{AsRawFd, BorrowedFd};

use kvm_bindings::{
    kvm_create_device, kvm_device_attr, kvm_device_type_KVM_DEV_TYPE_VFIO, kvm_irq_routing_entry,
    KvmIrqRouting, KVM_DEV_VFIO_FILE, KVM_DEV_VFIO_FILE_ADD, KVM_DEV_VFIO_FILE_DEL,
    KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::{DeviceFd, VmFd};
use vmm_sys_util::eventfd::EventFd;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::irq::IrqIndex;
use crate::kernel::{Errno, KernelOp};

fn kvm_err(op: KernelOp, target: &str, e: vmm_sys_util::errno::Error) -> Error {
    Error::kernel(op, target, Errno::from_raw(e.errno()))
}

/// The KVM VFIO device of one VM.
#[derive(Debug)]
pub struct KvmVfioDevice {
    fd: DeviceFd,
}

impl KvmVfioDevice {
    /// Creates the VM's KVM VFIO device (`KVM_DEV_TYPE_VFIO`).
    pub fn new(vm: &VmFd) -> Result<Self> {
        let mut d = kvm_create_device { type_: kvm_device_type_KVM_DEV_TYPE_VFIO, fd: 0, flags: 0 };
        let fd = vm.create_device(&mut d).map_err(|e| {
            kvm_err(KernelOp::KvmCreateDevice, "KVM VM", e)
                .with_hint("the kernel needs CONFIG_KVM_VFIO (built with KVM and VFIO)")
        })?;
        Ok(KvmVfioDevice { fd })
    }

    fn file(&self, file: BorrowedFd<'_>, attr: u32) -> Result<()> {
        let raw: i32 = file.as_raw_fd();
        let a = kvm_device_attr {
            flags: 0,
            group: KVM_DEV_VFIO_FILE,
            attr: attr as u64,
            addr: &raw as *const i32 as u64,
        };
        self.fd
            .set_device_attr(&a)
            .map_err(|e| kvm_err(KernelOp::KvmSetDeviceAttr, "KVM VFIO device", e))
    }

    /// `KVM_DEV_VFIO_FILE_ADD` of a VFIO group or device cdev descriptor.
    pub fn add_file(&self, file: BorrowedFd<'_>) -> Result<()> {
        self.file(file, KVM_DEV_VFIO_FILE_ADD)
    }

    /// `KVM_DEV_VFIO_FILE_DEL`.
    pub fn remove_file(&self, file: BorrowedFd<'_>) -> Result<()> {
        self.file(file, KVM_DEV_VFIO_FILE_DEL)
    }

    /// Adds the file KVM wants for `device`: its group on the legacy interface, the
    /// device's own cdev descriptor on iommufd.
    pub fn add_device(&self, device: &Device) -> Result<()> {
        self.add_file(device_file(device))
    }

    /// Removes what [`KvmVfioDevice::add_device`] added.
    pub fn remove_device(&self, device: &Device) -> Result<()> {
        self.remove_file(device_file(device))
    }
}

fn device_file(device: &Device) -> BorrowedFd<'_> {
    use std::os::fd::AsFd;
    match device.group() {
        Some(g) => g.as_fd(),
        None => device.as_fd(),
    }
}

/// One MSI or MSI-X vector as the guest programmed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiRoute {
    /// The GSI the VMM assigned to the vector.
    pub gsi: u32,
    /// The guest's message address.
    pub address: u64,
    /// The guest's message data.
    pub data: u32,
}

/// Routes vectors `0..routes.len()` of `index` (MSI or MSI-X) into the guest: replaces
/// the VM's GSI routing with `routes` (`KVM_SET_GSI_ROUTING` sets the whole table: pass
/// every route the VM uses), registers each eventfd as an irqfd on its GSI, and enables
/// the vectors in VFIO on the same eventfds.
pub fn route_msi(
    vm: &VmFd,
    device: &Device,
    index: IrqIndex,
    routes: &[MsiRoute],
    fds: &[EventFd],
) -> Result<()> {
    if routes.len() != fds.len() {
        return Err(Error::Invalid {
            what: "MSI routes",
            input: format!("{} routes, {} eventfds", routes.len(), fds.len()),
            reason: "give one eventfd per route".into(),
        });
    }
    let mut table = KvmIrqRouting::new(routes.len()).map_err(|_| Error::Invalid {
        what: "MSI routes",
        input: routes.len().to_string(),
        reason: "too many routes for one table".into(),
    })?;
    for (e, r) in table.as_mut_slice().iter_mut().zip(routes) {
        let mut entry =
            kvm_irq_routing_entry { gsi: r.gsi, type_: KVM_IRQ_ROUTING_MSI, ..Default::default() };
        entry.u.msi.address_lo = r.address as u32;
        entry.u.msi.address_hi = (r.address >> 32) as u32;
        entry.u.msi.data = r.data;
        *e = entry;
    }
    vm.set_gsi_routing(&table).map_err(|e| kvm_err(KernelOp::KvmSetGsiRouting, "KVM VM", e))?;
    for (fd, r) in fds.iter().zip(routes) {
        vm.register_irqfd(fd, r.gsi)
            .map_err(|e| kvm_err(KernelOp::KvmIrqfd, &format!("GSI {}", r.gsi), e))?;
    }
    device.enable_irqs_all(index, 0, fds)
}

/// Routes INTx into the guest as a level interrupt on `gsi`: VFIO signals `trigger`,
/// KVM injects it and signals `resample` when the guest acknowledges, and VFIO unmasks
/// INTx on `resample`.
pub fn route_intx(
    vm: &VmFd,
    device: &Device,
    gsi: u32,
    trigger: &EventFd,
    resample: &EventFd,
) -> Result<()> {
    vm.register_irqfd_with_resample(trigger, resample, gsi)
        .map_err(|e| kvm_err(KernelOp::KvmIrqfd, &format!("GSI {gsi}"), e))?;
    device.enable_irqs_all(IrqIndex::Intx, 0, std::slice::from_ref(trigger))?;
    device.set_intx_unmask_eventfd(resample)
}
