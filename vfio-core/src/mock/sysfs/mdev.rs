//! Mediated devices (`drivers/vfio/mdev/`): the parents, PCI functions with
//! [`mdev_types`](crate::mock::DeviceSpec::mdev_types) while they have a driver and the
//! virtual [`SimMdevParent`](super::SimMdevParent)s (`/sys/devices/virtual/CLASS/NAME`),
//! each listed as a link in `/sys/class/mdev_bus`; a parent's `mdev_supported_types`
//! (name, description, device_api, available_instances, the instances in `devices`),
//! `create` (a UUID: `EINVAL` for anything else, `EEXIST` when used, `EUSERS` when the
//! type is full), the instances below their parent (`remove` takes `1`, `mdev_type`,
//! `driver`, `iommu_group`, `vfio-dev`), and `/sys/bus/mdev/devices`.
//!
//! Each instance is also a VFIO device ([`HostState::mdev_devices`]): bound to its mdev
//! driver (the virtual parent's class, or the PCI parent's driver), in an IOMMU group of
//! its own with the lowest free number (served by `iommu`, whose `name` reads
//! `vfio-noiommu` as Linux's does, with a `/dev/vfio/N` node) and with a cdev.

use std::io;

use super::{
    device_dir, dir, err, link, text, word, write_only, DevicePart, Lookup, Node, SimParent,
};
use crate::hostfs::is_uuid;
use crate::mock::{DeviceSpec, HostState, MdevTypeSpec, SimDevice, MDEV_KEY_DOMAIN};
use crate::pci::PciAddress;

/// What a write to an mdev attribute does.
pub(super) enum Ctl {
    /// `mdev_supported_types/T/create` of a parent.
    Create(SimParent, String),
    /// An instance's `remove`.
    Remove(String),
}

/// Every parent offering types now, PCI functions first.
fn parents(st: &HostState) -> Vec<SimParent> {
    let pci = st.devices.keys().map(|a| SimParent::Pci(*a));
    let virt = st.sys.mdev_parents.iter().map(|p| SimParent::Virtual(p.name.clone()));
    pci.chain(virt).filter(|p| !offered(st, p).is_empty()).collect()
}

/// The parent's name: its `/sys/class/mdev_bus` link name.
fn name(p: &SimParent) -> String {
    match p {
        SimParent::Pci(a) => a.to_string(),
        SimParent::Virtual(n) => n.clone(),
    }
}

/// The parent's directory relative to `/sys`.
fn parent_dir(st: &HostState, p: &SimParent) -> String {
    match p {
        SimParent::Pci(a) => device_dir(*a),
        SimParent::Virtual(n) => {
            let class = st.sys.mdev_parents.iter().find(|v| v.name == *n).map_or("", |v| &v.class);
            format!("devices/virtual/{class}/{n}")
        }
    }
}

/// The mdev driver of a parent's instances: a virtual parent's class (`mtty`), a PCI
/// parent's driver.
fn mdev_driver(st: &HostState, p: &SimParent) -> String {
    match p {
        SimParent::Pci(a) => st.devices.get(a).and_then(|d| d.driver.clone()).unwrap_or_default(),
        SimParent::Virtual(n) => {
            st.sys.mdev_parents.iter().find(|v| v.name == *n).map_or(n.clone(), |v| v.class.clone())
        }
    }
}

/// Where an instance's directory is, relative to `/sys`.
pub(super) fn instance_dir(st: &HostState, u: &str) -> Option<String> {
    let (p, _) = st.sys.mdevs.get(u)?;
    Some(format!("{}/{u}", parent_dir(st, p)))
}

/// The classes of the virtual parents (directories of `/sys/devices/virtual`).
pub(super) fn virtual_classes(st: &HostState) -> Vec<String> {
    st.sys.mdev_parents.iter().map(|p| p.class.clone()).collect()
}

/// `/sys/bus/mdev`, `/sys/class/mdev_bus` and the virtual parents' directories.
pub(super) fn node(st: &HostState, parts: &[&str]) -> Lookup {
    Some(match parts {
        ["sys", "bus", "mdev"] => Some(dir(&["devices", "drivers"])),
        ["sys", "bus", "mdev", "drivers"] => Some(Node::Dir(drivers(st))),
        ["sys", "bus", "mdev", "drivers", d] => {
            drivers(st).iter().any(|x| x == d).then(|| Node::Dir(vec![]))
        }
        ["sys", "bus", "mdev", "devices"] => {
            Some(Node::Dir(st.sys.mdevs.keys().cloned().collect()))
        }
        ["sys", "bus", "mdev", "devices", u] => {
            st.sys.mdevs.get(*u).map(|(p, _)| link(format!("../../../{}/{u}", parent_dir(st, p))))
        }
        ["sys", "class", "mdev_bus"] => Some(Node::Dir(parents(st).iter().map(name).collect())),
        ["sys", "class", "mdev_bus", n] => parents(st)
            .into_iter()
            .find(|p| name(p) == *n)
            .map(|p| link(format!("../../{}", parent_dir(st, &p)))),
        ["sys", "devices", "virtual", class, rest @ ..] => {
            let of_class = st.sys.mdev_parents.iter().filter(|p| p.class == *class);
            let here: Vec<String> = of_class.map(|p| p.name.clone()).collect();
            if here.is_empty() {
                return None;
            }
            match rest {
                [] => Some(Node::Dir(here)),
                [n, rest @ ..] if here.iter().any(|h| h == n) => {
                    parent_node(st, &SimParent::Virtual(n.to_string()), rest)
                }
                _ => None,
            }
        }
        _ => return None,
    })
}

/// The mdev drivers of the parents there are.
fn drivers(st: &HostState) -> Vec<String> {
    parents(st).iter().map(|p| mdev_driver(st, p)).collect()
}

/// The types a parent offers: none while a PCI parent has no driver.
fn offered<'a>(st: &'a HostState, p: &SimParent) -> &'a [MdevTypeSpec] {
    match p {
        SimParent::Pci(a) => match st.devices.get(a) {
            Some(d) if d.driver.is_some() => &d.spec.mdev_types,
            _ => &[],
        },
        SimParent::Virtual(n) => {
            st.sys.mdev_parents.iter().find(|v| v.name == *n).map_or(&[], |v| &v.types)
        }
    }
}

/// The instances of parent `p`, of type `t` when given.
fn instances(st: &HostState, p: &SimParent, t: Option<&str>) -> Vec<String> {
    st.sys
        .mdevs
        .iter()
        .filter(|(_, (q, tid))| q == p && t.is_none_or(|t| tid == t))
        .map(|(u, _)| u.clone())
        .collect()
}

/// A PCI parent's `mdev_supported_types` and its instances.
pub(super) const DEVICE: DevicePart = DevicePart { entries, node: device_node };

fn entries(st: &HostState, a: PciAddress) -> Vec<String> {
    parent_entries(st, &SimParent::Pci(a))
}

fn device_node(st: &HostState, a: PciAddress, rest: &[&str]) -> Lookup {
    let p = SimParent::Pci(a);
    let own = match rest {
        ["mdev_supported_types", ..] => !offered(st, &p).is_empty(),
        [u, ..] => st.sys.mdevs.get(*u).is_some_and(|(q, _)| *q == p),
        [] => false,
    };
    own.then(|| parent_node(st, &p, rest))
}

/// What a parent's directory adds: its instances and `mdev_supported_types`.
fn parent_entries(st: &HostState, p: &SimParent) -> Vec<String> {
    let mut v = instances(st, p, None);
    if !offered(st, p).is_empty() {
        v.push("mdev_supported_types".into());
    }
    v
}

/// `rest` below a parent's directory (the directory itself for a virtual parent).
fn parent_node(st: &HostState, p: &SimParent, rest: &[&str]) -> Option<Node> {
    let types = offered(st, p);
    match rest {
        [] => Some(Node::Dir(parent_entries(st, p))),
        ["mdev_supported_types"] if !types.is_empty() => {
            Some(Node::Dir(types.iter().map(|t| t.id.clone()).collect()))
        }
        ["mdev_supported_types", t, rest @ ..] => type_node(st, p, t, rest),
        [u, rest @ ..] if st.sys.mdevs.get(*u).is_some_and(|(q, _)| q == p) => {
            instance_node(st, u, rest)
        }
        _ => None,
    }
}

/// `mdev_supported_types/T/rest` of parent `p`.
fn type_node(st: &HostState, p: &SimParent, t: &str, rest: &[&str]) -> Option<Node> {
    let ty = offered(st, p).iter().find(|x| x.id == t)?;
    let used = instances(st, p, Some(t));
    let described = !ty.description.is_empty();
    match rest {
        [] => {
            let mut v = vec!["name", "device_api", "available_instances", "create", "devices"];
            if described {
                v.push("description");
            }
            Some(dir(&v))
        }
        ["name"] => Some(text(&ty.name)),
        ["description"] if described => Some(text(&ty.description)),
        ["device_api"] => Some(text(&ty.device_api)),
        ["available_instances"] => Some(text(ty.max_instances.saturating_sub(used.len() as u32))),
        ["create"] => Some(write_only(Ctl::Create(p.clone(), t.to_string()))),
        ["devices"] => Some(Node::Dir(used)),
        ["devices", u] if used.iter().any(|x| x == u) => Some(link(format!("../../../{u}"))),
        _ => None,
    }
}

/// `U/rest` below its parent.
fn instance_node(st: &HostState, u: &str, rest: &[&str]) -> Option<Node> {
    let (p, t) = &st.sys.mdevs[u];
    let dev = st.mdev_devices.get(u);
    // From the instance's directory up to /sys.
    let up = "../".repeat(parent_dir(st, p).split('/').count() + 1);
    let cdev = dev.and_then(|d| d.vfio_index);
    match rest {
        [] => {
            let mut v = vec!["remove", "mdev_type", "driver", "iommu_group"];
            if cdev.is_some() {
                v.push("vfio-dev");
            }
            Some(dir(&v))
        }
        ["remove"] => Some(write_only(Ctl::Remove(u.to_string()))),
        ["mdev_type"] => Some(link(format!("../mdev_supported_types/{t}"))),
        ["driver"] => Some(link(format!("{up}bus/mdev/drivers/{}", mdev_driver(st, p)))),
        ["iommu_group"] => dev
            .and_then(|d| d.spec.iommu_group)
            .map(|g| link(format!("{up}kernel/iommu_groups/{g}"))),
        ["vfio-dev"] => cdev.map(|i| Node::Dir(vec![format!("vfio{i}")])),
        ["vfio-dev", n] if cdev.is_some_and(|i| *n == format!("vfio{i}")) => Some(dir(&["dev"])),
        ["vfio-dev", _, "dev"] => cdev.map(|i| text(format!("236:{i}"))),
        _ => None,
    }
}

/// The VFIO device a new instance of type `ty` on `parent` is: the type's device (a bare
/// one without), bound to the parent's mdev driver, in a new group with the lowest free
/// number, with the lowest free cdev number.
fn new_vfio_device(st: &HostState, parent: &SimParent, ty: &str) -> SimDevice {
    let key_free = |n: &u32| !st.mdev_devices.values().any(|d| d.spec.address.domain == *n);
    let domain = (MDEV_KEY_DOMAIN..).find(key_free).unwrap_or(MDEV_KEY_DOMAIN);
    let key = PciAddress::new(domain, 0, 0, 0).expect("function 0 of device 0");
    let used: Vec<u32> = st
        .vfio_devices()
        .filter_map(|d| d.spec.iommu_group)
        .chain(st.kernel.noiommu_ids.values().copied())
        .collect();
    let group = (0..).find(|g| !used.contains(g)).unwrap_or(0);
    let ty = offered(st, parent).iter().find(|t| t.id == ty);
    let mut spec = ty.and_then(|t| t.device.as_deref().cloned()).unwrap_or(DeviceSpec::at(key));
    let driver = mdev_driver(st, parent);
    (spec.address, spec.iommu_group, spec.group_at_probe) = (key, Some(group), false);
    spec.driver = Some(driver.clone());
    SimDevice {
        config: spec.config_image(),
        driver: Some(driver),
        driver_override: None,
        vfio_index: Some(st.next_vfio_index()),
        spec,
    }
}

pub(super) fn store(st: &mut HostState, ctl: Ctl, data: &[u8]) -> io::Result<()> {
    let word = word(data);
    match ctl {
        Ctl::Create(parent, ty) => {
            if !is_uuid(&word) {
                return Err(err(libc::EINVAL));
            }
            let u = word.to_ascii_lowercase();
            if st.sys.mdevs.contains_key(&u) {
                return Err(err(libc::EEXIST));
            }
            let max =
                offered(st, &parent).iter().find(|t| t.id == ty).map_or(0, |t| t.max_instances);
            let used = st.sys.mdevs.values().filter(|(p, t)| *p == parent && *t == ty).count();
            if used as u32 >= max {
                return Err(err(libc::EUSERS));
            }
            let dev = new_vfio_device(st, &parent, &ty);
            st.mdev_devices.insert(u.clone(), dev);
            st.sys.mdevs.insert(u, (parent, ty));
            Ok(())
        }
        Ctl::Remove(u) => {
            if word != "1" {
                return Err(err(libc::EINVAL));
            }
            st.sys.mdevs.remove(&u);
            st.mdev_devices.remove(&u);
            Ok(())
        }
    }
}
