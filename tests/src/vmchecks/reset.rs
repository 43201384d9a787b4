//! Check 7: function reset of nvme, hot-reset information and bus reset of the devices
//! behind the root port.

use vfio_core::kernel::Errno;
use vfio_core::{Interface, PciAddress, Vfio};

use super::driver::Edu;
use super::report::{ensure, Ctx, Outcome, Report};
use super::Mode;

/// nvme on vfio-pci: `can_reset`, `reset`, the same ids afterwards.
pub fn function_reset(rep: &mut Report, vfio: &Vfio, nvme: PciAddress, interface: Interface) {
    let r = (|| -> Outcome {
        let d = vfio.open(nvme, interface).ctx("open nvme")?;
        ensure(d.can_reset(), || "nvme reports no VFIO_DEVICE_RESET (QEMU's nvme has FLR)".into())?;
        let ids = |d: &vfio_core::Device| -> Result<(u16, u16), String> {
            Ok((d.config_read_u16(0).ctx("config")?, d.config_read_u16(2).ctx("config")?))
        };
        let before = ids(&d)?;
        ensure(before == (0x1b36, 0x0010), || format!("nvme ids {before:04x?}"))?;
        d.reset().ctx("reset")?;
        let after = ids(&d)?;
        ensure(after == before, || format!("ids after reset {after:04x?}, before {before:04x?}"))
    })();
    rep.check("reset: nvme can_reset() and reset(), same ids afterwards", r);
}

/// Hot-reset info of edu2 (behind the root port) and of edu (root bus), then a bus reset
/// of edu2 with its group (legacy) or through iommufd.
pub fn hot_reset(
    rep: &mut Report,
    vfio: &Vfio,
    edu: PciAddress,
    edu2: PciAddress,
    testdev: PciAddress,
    mode: &Mode,
) {
    let label = format!("hot reset [{}]", mode.name);
    let d2 = match vfio.open(edu2, mode.interface) {
        Ok(d) => d,
        Err(e) => return rep.check(format!("{label}: open edu2"), Err(e.to_string())),
    };
    let r = (|| -> Outcome {
        let info = d2.hot_reset_info().ctx("hot_reset_info")?;
        rep.note(format!("hot_reset_info of edu2: {info:?}"));
        for want in [edu2, testdev] {
            let e = info
                .iter()
                .find(|a| a.address == want)
                .ok_or_else(|| format!("{want} is not listed"))?;
            match (d2.group(), d2.iommufd_devid()) {
                (Some(_), _) => {
                    let g = vfio.locate(want).ctx("locate")?.group.map(|g| g.id());
                    ensure(Some(e.group_or_devid) == g, || {
                        format!("{want} listed with group {}, its group is {g:?}", e.group_or_devid)
                    })?
                }
                (None, Some(id)) if want == edu2 => ensure(e.group_or_devid == id, || {
                    format!("edu2 listed with device id {}, expected {id}", e.group_or_devid)
                })?,
                // Not opened, but its group is owned through edu2: VFIO_PCI_DEVID_OWNED.
                (None, Some(_)) => ensure(e.group_or_devid == 0, || {
                    format!("{want} listed with device id {}, expected 0 (owned)", e.group_or_devid)
                })?,
                (None, None) => return Err("edu2 has neither a group nor a device id".into()),
            }
        }
        ensure(info.len() == 2, || format!("{} devices listed, expected 2", info.len()))
    })();
    rep.check(
        format!(
            "{label}: hot_reset_info of edu2 lists edu2 and testdev with their group or device id"
        ),
        r,
    );
    let r = (|| -> Outcome {
        let d = vfio.open(edu, mode.interface).ctx("open edu")?;
        match d.hot_reset_info() {
            Ok(v) => Err(format!("edu on the root bus lists {v:?}, expected ENODEV")),
            Err(e) => ensure(e.errno() == Some(Errno::ENODEV), || format!("{e}, expected ENODEV")),
        }
    })();
    rep.check(format!("{label}: hot_reset_info of edu (root bus) is ENODEV"), r);
    let r = (|| -> Outcome {
        // Legacy: every affected group must be passed; testdev joins edu2's container
        // (reusing the group when it is the same one).
        let dt = match d2.group() {
            Some(_) => Some(vfio.open_in(testdev, &d2.address_space()).ctx("open testdev")?),
            None => None,
        };
        let mut groups: Vec<_> = d2.group().into_iter().collect();
        if let Some(g) = dt.as_ref().and_then(|d| d.group()) {
            if !groups.iter().any(|x| std::sync::Arc::ptr_eq(x, g)) {
                groups.push(g);
            }
        }
        d2.hot_reset(&groups).ctx("hot reset")?;
        let drv = Edu::new(&d2).ctx("edu2 after the reset")?;
        ensure(drv.liveness(0x600d_f00d).ctx("liveness")?, || {
            "edu2 does not answer after the reset".into()
        })
    })();
    let how = if d2.group().is_some() { "with its group" } else { "through iommufd" };
    rep.check(format!("{label}: bus reset of edu2 {how}, edu2 answers afterwards"), r);
}
