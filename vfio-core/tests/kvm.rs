//! The KVM hook against this machine's real KVM (no vCPU runs: creating a VM, its KVM
//! VFIO device, routes and irqfds needs none) and the mock VFIO kernel. Skips with the
//! reason when `/dev/kvm` cannot be used. The lab checks the same with a real VFIO group.

use std::os::fd::AsFd;

use vfio_core::kvm::{route_msi, KvmVfioDevice, MsiRoute};
use vfio_core::mock::{DeviceSpec, MockHost, MockKernelConfig};
use vfio_core::{Interface, IrqIndex, PciAddress, Vfio};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

fn vm() -> Option<kvm_ioctls::VmFd> {
    let kvm = match kvm_ioctls::Kvm::new() {
        Ok(k) => k,
        Err(e) => {
            println!("skipped: /dev/kvm: {e}");
            return None;
        }
    };
    match kvm.create_vm() {
        Ok(vm) => Some(vm),
        Err(e) => {
            println!("skipped: KVM_CREATE_VM: {e}");
            None
        }
    }
}

#[test]
fn the_kvm_vfio_device_refuses_a_file_that_is_not_vfio() {
    let Some(vm) = vm() else { return };
    let dev = match KvmVfioDevice::new(&vm) {
        Ok(d) => d,
        Err(e) => {
            println!("skipped: {e}");
            return;
        }
    };
    let not_vfio = std::fs::File::open("/proc/self/status").unwrap();
    let e = dev.add_file(not_vfio.as_fd()).unwrap_err();
    assert!(e.to_string().contains("KVM_SET_DEVICE_ATTR"), "{e}");
    assert!(e.errno().is_some(), "{e}");
}

#[test]
fn msix_vectors_go_to_kvm_irqfds_and_never_to_the_vmm() {
    let Some(vm) = vm() else { return };
    if let Err(e) = vm.create_irq_chip() {
        println!("skipped: KVM_CREATE_IRQCHIP: {e}");
        return;
    }
    let host = MockHost::new([DeviceSpec::nvme("0000:01:00.0").group(2).driver("vfio-pci")]);
    host.set_kernel_config(MockKernelConfig {
        allow_unsafe_interrupts: true,
        ..MockKernelConfig::default()
    });
    let device = Vfio::new(host.kernel(), host.fs())
        .open(PciAddress::parse("0000:01:00.0").unwrap(), Interface::Container)
        .unwrap();
    let fds: Vec<EventFd> = (0..2).map(|_| EventFd::new(EFD_NONBLOCK).unwrap()).collect();
    let routes = [
        MsiRoute { gsi: 24, address: 0xfee0_0000, data: 0x41 },
        MsiRoute { gsi: 25, address: 0xfee0_0000, data: 0x42 },
    ];
    route_msi(&vm, &device, IrqIndex::Msix, &routes, &fds).unwrap();
    device.trigger_irqs(IrqIndex::Msix, 0, 2).unwrap();
    // KVM's irqfd took each signal (and injected it): nothing is left for the VMM.
    for f in &fds {
        assert!(f.read().is_err(), "the eventfd was consumed by KVM");
    }
    let bad = route_msi(&vm, &device, IrqIndex::Msix, &routes[..1], &fds).unwrap_err();
    assert!(bad.to_string().contains("one eventfd per route"), "{bad}");
}
