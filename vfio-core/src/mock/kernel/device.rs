//! A vfio-pci device file (drivers/vfio/pci/vfio_pci_core.c): the first open, which
//! enables the device and saves its config, the last close, which resets it and restores
//! that config, and `VFIO_DEVICE_GET_INFO` with its capabilities.

use std::collections::BTreeMap;

use vfio_bindings::bindings::vfio::{
    VFIO_DEVICE_FLAGS_CAPS, VFIO_DEVICE_FLAGS_PCI, VFIO_DEVICE_FLAGS_RESET,
    VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP,
};

use super::config::find_cap;
use super::fds::device_fd;
use super::group::maybe_release_group;
use super::info::{argsz, finish_info, Caps};
use super::iommufd::{detach_device, gc_ictx};
use super::le::{rd32, wr32};
use super::reset::reset_function;
use super::state::{DevFd, IrqState, KernelState};
use super::{NUM_IRQS, NUM_REGIONS};
use crate::kernel::{Errno, KResult, KernelFd};
use crate::mock::{HostState, SimDevice};
use crate::pci::config::BarKind;
use crate::pci::PciAddress;

/// The simulated device at `addr`, a PCI function or an mdev instance's key (ENODEV
/// once it is gone).
pub(super) fn sim(st: &HostState, addr: PciAddress) -> KResult<&SimDevice> {
    st.vfio_device(addr).ok_or(Errno::ENODEV)
}

/// First open of a device (`vfio_pci_core_enable`): pci_enable_device turns on memory
/// and I/O decoding for the BARs present, and the config is saved.
pub(super) fn open_device(
    k: &mut KernelState,
    devices: &mut BTreeMap<PciAddress, SimDevice>,
    addr: PciAddress,
) {
    let ds = k.devs.entry(addr).or_default();
    ds.open_count += 1;
    if ds.open_count == 1 {
        if let Some(dev) = devices.get_mut(&addr) {
            let mut cmd = 0u8;
            for b in dev.spec.bars.iter().flatten() {
                cmd |= if b.kind == BarKind::Io { 1 } else { 2 };
            }
            if dev.spec.rom.is_some() {
                cmd |= 2;
            }
            dev.config[4] |= cmd;
            ds.saved_config = Some(dev.config.clone());
        }
        ds.irq = IrqState::default();
    }
}

/// Closes a device file; the last close disables interrupts, unbinds from iommufd and
/// restores the saved config (`vfio_pci_core_disable`).
pub(super) fn close_device(
    k: &mut KernelState,
    devices: &mut BTreeMap<PciAddress, SimDevice>,
    d: DevFd,
) {
    if let Some(gid) = d.group {
        if let Some(g) = k.groups.get_mut(&gid) {
            g.device_fds = g.device_fds.saturating_sub(1);
        }
    }
    if let Some((ictx, devid)) = d.bound {
        detach_device(k, d.addr);
        if let Some(c) = k.ictxs.get_mut(&ictx) {
            c.objs.remove(&devid);
            c.bound_devices = c.bound_devices.saturating_sub(1);
        }
        if let Some(ds) = k.devs.get_mut(&d.addr) {
            ds.cdev = None;
        }
        gc_ictx(k, ictx);
    }
    if let Some(ds) = k.devs.get_mut(&d.addr) {
        ds.open_count = ds.open_count.saturating_sub(1);
        if ds.open_count == 0 {
            ds.irq = IrqState::default();
            // vfio_pci_core_close_device: low power is disallowed again.
            ds.pm_engaged = false;
            ds.pm_wake = None;
            let saved = ds.saved_config.take();
            // vfio_pci_core_disable: a device whose reset works is reset on the way out,
            // then the config saved at open is restored.
            if devices.get(&d.addr).is_some_and(|dev| dev.spec.flr) {
                reset_function(k, d.addr);
            }
            if let (Some(saved), Some(dev)) = (saved, devices.get_mut(&d.addr)) {
                dev.config = saved;
            }
        }
    }
    if let Some(gid) = d.group {
        maybe_release_group(k, gid);
    }
}

pub(super) fn get_info(st: &HostState, device: &KernelFd, buf: &mut [u8]) -> KResult<()> {
    let d = device_fd(&st.kernel, device)?;
    let dev = sim(st, d.addr)?;
    // pci_core vfio_pci_ioctl_get_info: minsz = offsetofend(num_irqs).
    let argsz = argsz(buf, 16)?;
    let mut flags = VFIO_DEVICE_FLAGS_PCI;
    if dev.spec.flr {
        flags |= VFIO_DEVICE_FLAGS_RESET;
    }
    let mut caps = Caps::default();
    // vfio_pci_info_atomic_cap: PCIe AtomicOp completer bits of DEVCAP2.
    if let Some(p) = find_cap(&dev.config, 0x10).filter(|_| dev.spec.pcie) {
        let devcap2 = rd32(&dev.config, p + 0x24);
        let mut f = 0u32;
        for (bit, v) in [(7, 1u32), (8, 2), (9, 4)] {
            if devcap2 & (1 << bit) != 0 {
                f |= v;
            }
        }
        if f != 0 {
            caps.add(
                VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP as u16,
                1,
                &[f.to_le_bytes(), [0; 4]].concat(),
            );
        }
    }
    if !caps.is_empty() {
        flags |= VFIO_DEVICE_FLAGS_CAPS;
    }
    let mut info = [0u8; 24];
    wr32(&mut info, 0, argsz);
    wr32(&mut info, 4, flags);
    wr32(&mut info, 8, NUM_REGIONS + dev.spec.extra_regions.len() as u32);
    wr32(&mut info, 12, NUM_IRQS);
    finish_info(buf, &mut info, argsz, &caps, 16)
}
