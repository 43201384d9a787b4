//! The mdev check: a real mediated device. Where the kernel has the `mtty` sample driver
//! (`/sys/class/mdev_bus/mtty`, the custom newest kernel), an instance of `mtty-2` (two
//! 16550 ports) is created with `vfio_core::host::mdev::create`, opened through VFIO in
//! each mode the boot offers (its virtual group in a container; its cdev through
//! iommufd), and its device, region and IRQ info are printed and checked against what
//! mtty offers: vfio-pci's layout with config space and two I/O BARs of 8 bytes, one
//! INTx and one MSI vector. The instance is removed at the end, also when a check fails.

use std::path::Path;

use vfio_core::container::IommuType;
use vfio_core::host::mdev::{self, MdevParent};
use vfio_core::hostfs::{HostFs, RealFs};
use vfio_core::info::RegionFlags;
use vfio_core::irq::IrqFlags;
use vfio_core::kernel::{Errno, GroupNode};
use vfio_core::RegionIndex;
use vfio_core::{Device, Interface, IrqIndex, Vfio};

use super::report::{ensure, Ctx, Outcome, Report};

/// The parent and type the check uses.
const PARENT: &str = "mtty";
const TYPE: &str = "mtty-2";
/// mtty's config space size (`MTTY_CONFIG_SPACE_SIZE`) and I/O BAR size.
const CONFIG_SIZE: u64 = 0xff;
const BAR_SIZE: u64 = 8;

/// Runs the mdev checks, or skips them where the kernel has no mtty.
pub fn run(rep: &mut Report, vfio: &Vfio) {
    if !Path::new("/sys/class/mdev_bus").join(PARENT).exists() {
        rep.skip(
            "mdev (mtty)",
            "no /sys/class/mdev_bus/mtty: this kernel has no mtty sample driver \
             (the custom newest kernel has it built in)",
        );
        return;
    }
    let fs = RealFs::new("/");
    let r = (|| -> Outcome {
        let parents = mdev::parents(&fs).ctx("parents")?;
        rep.note(format!("mdev parents: {}", join(parents.iter().map(|p| p.to_string()))));
        let p = MdevParent::parse(PARENT).ctx("parse")?;
        ensure(parents.contains(&p), || format!("mtty is not among {parents:?}"))?;
        ensure(p.pci().is_none(), || "mtty taken for a PCI device".into())?;
        let types = mdev::parent_types(&fs, &p);
        for t in &types {
            rep.note(format!(
                "type {} name {:?} device_api {:?} available {} description {:?}",
                t.id, t.name, t.device_api, t.available, t.description
            ));
        }
        let ids: Vec<&str> = types.iter().map(|t| t.id.as_str()).collect();
        ensure(ids == ["mtty-1", "mtty-2"], || format!("mtty's types are {ids:?}"))?;
        ensure(types.iter().all(|t| t.device_api.as_deref() == Some("vfio-pci")), || {
            "a type's device_api is not vfio-pci".into()
        })
    })();
    rep.check("mdev: /sys/class/mdev_bus lists mtty with types mtty-1 and mtty-2", r);

    let uuid = match mdev::create(&fs, PARENT, TYPE, None) {
        Ok(u) => u,
        Err(e) => return rep.check(format!("mdev: create {TYPE} on {PARENT}"), Err(e.to_string())),
    };
    rep.check(format!("mdev: create {TYPE} on {PARENT} (vfio_core::host::mdev::create)"), Ok(()));
    let r = (|| -> Outcome {
        let inst = mdev::list_instances(&fs);
        let me = inst.iter().find(|i| i.uuid == uuid).ok_or("not listed")?;
        rep.note(format!("instance: {me:?}"));
        ensure(me.parent.as_ref().map(MdevParent::name) == Some(PARENT), || {
            format!("parent {:?}", me.parent)
        })?;
        ensure(me.type_id.as_deref() == Some(TYPE), || format!("type {:?}", me.type_id))?;
        ensure(me.iommu_group.is_some(), || "no IOMMU group".into())
    })();
    rep.check("mdev: the instance is listed with its parent, type and IOMMU group", r);
    match vfio.locate_mdev(&uuid) {
        Ok(loc) => {
            let name = loc.group.and_then(|g| {
                fs.read_string(Path::new(&format!("/sys/kernel/iommu_groups/{}/name", g.id()))).ok()
            });
            rep.note(format!("location: {loc:?}, group name {name:?}"));
            rep.check(
                "mdev: its group is a /dev/vfio/N group (not no-IOMMU)",
                ensure(matches!(loc.group, Some(GroupNode::Iommu(_))), || {
                    format!("group {:?}", loc.group)
                }),
            );
            let modes = modes(rep, loc.cdev);
            for (label, interface) in modes {
                let r = vfio.open_mdev(&uuid, interface).ctx("open_mdev").and_then(|d| {
                    let how = match (d.group(), d.iommufd_devid()) {
                        (Some(g), _) => format!("group {}", g.id()),
                        (None, Some(id)) => format!("iommufd device id {id}"),
                        (None, None) => "?".into(),
                    };
                    rep.note(format!("[{label}] opened {} through {how}", d.name()));
                    print_and_check(rep, &d, label)
                });
                rep.check(
                    format!("mdev [{label}]: open_mdev, device/region/IRQ info as mtty offers"),
                    r,
                );
            }
        }
        Err(e) => rep.check("mdev: locate_mdev", Err(e.to_string())),
    }
    let r = mdev::remove(&fs, &uuid).ctx("remove").and_then(|_| {
        ensure(!Path::new("/sys/bus/mdev/devices").join(&uuid).exists(), || {
            "still in /sys/bus/mdev/devices".into()
        })
    });
    rep.check("mdev: remove the instance (vfio_core::host::mdev::remove)", r);
}

/// The ways this boot offers to open the instance.
fn modes(rep: &mut Report, cdev: Option<u32>) -> Vec<(&'static str, Interface)> {
    let mut v = vec![
        ("type1v2", Interface::Container),
        ("type1", Interface::ContainerWith(IommuType::Type1)),
    ];
    if !Path::new("/dev/iommu").exists() {
        rep.skip("mdev [iommufd]", "no /dev/iommu: this kernel has no IOMMUFD");
    } else if cdev.is_none() {
        rep.skip("mdev [iommufd]", "the instance has no vfio device cdev (no VFIO_DEVICE_CDEV)");
    } else {
        v.push(("iommufd", Interface::Iommufd));
    }
    v
}

fn join(it: impl Iterator<Item = String>) -> String {
    it.collect::<Vec<_>>().join(", ")
}

/// Prints what the device offers and checks it is mtty's: the vfio-pci layout, config
/// space of 0xff bytes with mtty's ids, BAR0 and BAR1 of 8 bytes, INTx and MSI with one
/// vector each; and that the first port's scratch register keeps a byte.
fn print_and_check(rep: &Report, d: &Device, label: &str) -> Outcome {
    let info = d.info();
    rep.note(format!(
        "[{label}] device info: flags {:#x} (pci {}, reset {}), {} regions, {} irqs",
        info.flags,
        info.is_pci(),
        info.can_reset(),
        info.num_regions,
        info.num_irqs
    ));
    for r in d.regions() {
        rep.note(format!(
            "[{label}] region {}: size {:#x}, offset {:#x}, flags {:?}",
            r.index, r.size, r.offset, r.flags
        ));
    }
    let mut irqs = Vec::new();
    for i in IrqIndex::ALL {
        match d.irq_info(i) {
            Ok(x) => {
                rep.note(format!("[{label}] irq {i:?}: count {}, flags {:?}", x.count, x.flags));
                irqs.push((i, Some(x)));
            }
            Err(e) => {
                rep.note(format!("[{label}] irq {i:?}: {e}"));
                irqs.push((i, None));
                ensure(e.errno() == Some(Errno::EINVAL), || format!("irq {i:?}: {e}"))?;
            }
        }
    }
    ensure(info.is_pci(), || format!("flags {:#x} lack VFIO_DEVICE_FLAGS_PCI", info.flags))?;
    ensure(info.num_regions >= 9 && info.num_irqs >= 2, || {
        format!("{} regions, {} irqs", info.num_regions, info.num_irqs)
    })?;
    let rw = RegionFlags::READ | RegionFlags::WRITE;
    let size = |i: RegionIndex| d.region(i).map(|r| (r.size, r.flags.contains(rw)));
    ensure(size(RegionIndex::CONFIG).ok() == Some((CONFIG_SIZE, true)), || {
        format!("config region {:?}", d.region(RegionIndex::CONFIG))
    })?;
    for bar in [0, 1] {
        ensure(
            size(RegionIndex::new(RegionIndex::BAR0.raw() + bar)).ok() == Some((BAR_SIZE, true)),
            || format!("BAR{bar} {:?}", d.region(RegionIndex::new(RegionIndex::BAR0.raw() + bar))),
        )?;
    }
    let at = |i: IrqIndex| irqs.iter().find(|x| x.0 == i).and_then(|x| x.1);
    let intx = at(IrqIndex::Intx).ok_or("no INTx")?;
    ensure(
        intx.count == 1
            && intx.flags.contains(IrqFlags::EVENTFD | IrqFlags::MASKABLE | IrqFlags::AUTOMASKED),
        || format!("INTx {intx:?}"),
    )?;
    let msi = at(IrqIndex::Msi).ok_or("no MSI")?;
    ensure(msi.count == 1 && msi.flags.contains(IrqFlags::EVENTFD), || format!("MSI {msi:?}"))?;
    let ids = d.config_read_u32(0).ctx("config read")?;
    rep.note(format!("[{label}] config vendor:device {:04x}:{:04x}", ids & 0xffff, ids >> 16));
    ensure(ids == 0x3253_4348, || format!("config ids {ids:#010x}, mtty's are 0x32534348"))?;
    // UART_SCR (offset 7) of the first port: a byte written reads back.
    d.write_region(RegionIndex::BAR0, 7, &[0x5a]).ctx("BAR0 write")?;
    let mut b = [0u8];
    d.read_region(RegionIndex::BAR0, 7, &mut b).ctx("BAR0 read")?;
    ensure(b[0] == 0x5a, || format!("the scratch register reads {:#x} after 0x5a", b[0]))
}
