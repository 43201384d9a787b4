//! Low power on e1000e (it has a PCI power management capability): bound to vfio-pci with
//! runtime PM allowed (`power/control` = `auto`), `low_power_entry`, the power state read
//! from sysfs `power_state` (which does not wake the device), a config read through VFIO
//! (which does), `low_power_exit`; then `low_power_entry_with_wakeup` and the eventfd,
//! which fires when an access wakes a device that had suspended. Where the kernel has no
//! runtime PM (the custom kernels: no CONFIG_PM) the device stays in D0 and nothing fires.

use std::os::fd::AsRawFd;
use std::time::Duration;

use vfio_core::host::bind::{bind, BindRequest};
use vfio_core::hostfs::RealFs;
use vfio_core::{PciAddress, Vfio};

use super::report::{ensure, Ctx, Outcome, Report};
use super::Mode;

fn power_state(dev: PciAddress) -> String {
    std::fs::read_to_string(format!("/sys/bus/pci/devices/{dev}/power_state"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unreadable ({e})"))
}

fn fired(fd: &vmm_sys_util::eventfd::EventFd) -> bool {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: a valid pollfd for the call.
    unsafe { libc::poll(&mut p, 1, 500) == 1 }
}

/// Runs the check in the boot's first mode.
pub fn run(rep: &mut Report, vfio: &Vfio, e1000e: PciAddress, mode: &Mode) {
    let fs = RealFs::new("/");
    let label = format!("low power [{}]: e1000e", mode.name);
    let r = (|| -> Outcome {
        bind(&fs, &BindRequest::vfio(&e1000e.to_string())).ctx("bind")?;
        let control = format!("/sys/bus/pci/devices/{e1000e}/power/control");
        let before = std::fs::read_to_string(&control).unwrap_or_default();
        let _ = std::fs::write(&control, "auto");
        let d = vfio.open(e1000e, mode.interface).ctx("open")?;
        let pm = d.supported_features().ctx("supported_features")?;
        rep.note(format!("e1000e features: {pm:?}"));
        let settle = || std::thread::sleep(Duration::from_millis(300));
        rep.note(format!("power_state open: {}", power_state(e1000e)));
        d.low_power_entry().ctx("low_power_entry")?;
        settle();
        let low = power_state(e1000e);
        let vendor = d.config_read_u16(0).ctx("config read in low power")?;
        let woken = power_state(e1000e);
        d.low_power_exit().ctx("low_power_exit")?;
        rep.note(format!(
            "power_state after low_power_entry: {low}; after a config read (vendor \
             {vendor:#06x}): {woken}; after exit: {}",
            power_state(e1000e)
        ));
        ensure(vendor == 0x8086, || format!("vendor {vendor:#06x}"))?;
        let ev = d.new_eventfds(1).ctx("eventfd")?;
        d.low_power_entry_with_wakeup(&ev[0]).ctx("low_power_entry_with_wakeup")?;
        settle();
        let low2 = power_state(e1000e);
        let _ = d.config_read_u16(0).ctx("config read")?;
        let woke = fired(&ev[0]);
        d.low_power_exit().ctx("low_power_exit")?;
        rep.note(format!(
            "with wake-up: power_state {low2}, wake-up eventfd fired on access: {woke}"
        ));
        ensure(low2 != "D3hot" || woke, || "suspended to D3hot but no wake-up".into())?;
        drop(d);
        let _ = std::fs::write(&control, before.trim());
        Ok(())
    })();
    rep.check(label, r);
}
