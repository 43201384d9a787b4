//! The KVM hook on the real kernel (where the guest has KVM: the stock kernel loads
//! kvm-amd under QEMU's SVM): a VM, its KVM VFIO device with edu's group added, edu's MSI
//! routed to a GSI with an irqfd, and the device's own interrupt (a factorial) taken by
//! KVM, never reaching the VMM's eventfd. No vCPU runs.

use std::os::fd::AsRawFd;
use std::time::Duration;

use vfio_core::kvm::{route_msi, KvmVfioDevice, MsiRoute};
use vfio_core::{IrqIndex, PciAddress, Vfio};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::driver::{reg, Edu};
use crate::report::{ensure, Ctx, Outcome, Report};
use crate::Mode;

/// The check in one mode (a legacy container or iommufd).
pub fn run(rep: &mut Report, vfio: &Vfio, edu: PciAddress, mode: &Mode) {
    let name = format!("KVM [{}]: the KVM VFIO device takes edu, and edu's MSI goes to a KVM irqfd, not to the VMM", mode.name);
    if !std::path::Path::new("/dev/kvm").exists() {
        let why = "no /dev/kvm in this guest (the custom kernel is built without KVM; the stock kernel loads kvm-amd)";
        return rep.skip(name, why);
    }
    let r = (|| -> Outcome {
        let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("open /dev/kvm: {e}"))?;
        let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
        vm.create_irq_chip().map_err(|e| format!("KVM_CREATE_IRQCHIP: {e}"))?;
        let device = vfio.open(edu, mode.interface).ctx("open edu")?;
        let kv = KvmVfioDevice::new(&vm).ctx("KVM VFIO device")?;
        kv.add_device(&device).ctx("KVM_DEV_VFIO_FILE_ADD")?;
        let fd = EventFd::new(EFD_NONBLOCK).ctx("eventfd")?;
        let route = MsiRoute { gsi: 24, address: 0xfee0_0000, data: 0x30 };
        route_msi(&vm, &device, IrqIndex::Msi, &[route], std::slice::from_ref(&fd))
            .ctx("route MSI")?;
        let mut drv = Edu::new(&device).ctx("edu")?;
        drv.irq = None;
        drv.bar.write(reg::STATUS, 0x80u32).ctx("status")?;
        drv.bar.write(reg::FACTORIAL, 5u32).ctx("factorial")?;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while drv.bar.read::<u32>(reg::IRQ_STATUS).ctx("irq status")? == 0 {
            ensure(std::time::Instant::now() < deadline, || "edu raised no interrupt".into())?;
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(50));
        ensure(fd.read().is_err(), || "the MSI reached the VMM's eventfd, not KVM".into())?;
        let status: u32 = drv.bar.read(reg::IRQ_STATUS).ctx("irq status")?;
        drv.bar.write(reg::IRQ_ACK, status).ctx("ack")?;
        device.disable_irqs(IrqIndex::Msi).ctx("disable MSI")?;
        kv.remove_device(&device).ctx("KVM_DEV_VFIO_FILE_DEL")?;
        let _ = fd.as_raw_fd();
        Ok(())
    })();
    rep.check(name, r);
}
