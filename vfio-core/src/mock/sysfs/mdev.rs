//! Mediated devices (`drivers/vfio/mdev/`): the parents, PCI functions with
//! [`mdev_types`](crate::mock::DeviceSpec::mdev_types) while they have a driver and the
//! virtual [`SimMdevParent`](super::SimMdevParent)s (`/sys/devices/virtual/CLASS/NAME`),
//! each listed as a link in `/sys/class/mdev_bus`; a parent's `mdev_supported_types`
//! (name, description, device_api, available_instances, the instances in `devices`),
//! `create` (a UUID: `EINVAL` for anything else, `EEXIST` when used, `EUSERS` when the
//! type is full), the instances below their parent (`remove` takes `1`, `mdev_type`),
//! and `/sys/bus/mdev/devices`.

use std::io;

use super::{
    device_dir, dir, err, link, text, word, write_only, DevicePart, Lookup, Node, SimParent,
};
use crate::hostfs::is_uuid;
use crate::mock::{HostState, MdevTypeSpec};
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

/// The classes of the virtual parents (directories of `/sys/devices/virtual`).
pub(super) fn virtual_classes(st: &HostState) -> Vec<String> {
    st.sys.mdev_parents.iter().map(|p| p.class.clone()).collect()
}

/// `/sys/bus/mdev`, `/sys/class/mdev_bus` and the virtual parents' directories.
pub(super) fn node(st: &HostState, parts: &[&str]) -> Lookup {
    Some(match parts {
        ["sys", "bus", "mdev"] => Some(dir(&["devices"])),
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
    let (_, t) = &st.sys.mdevs[u];
    match rest {
        [] => Some(dir(&["remove", "mdev_type"])),
        ["remove"] => Some(write_only(Ctl::Remove(u.to_string()))),
        ["mdev_type"] => Some(link(format!("../mdev_supported_types/{t}"))),
        _ => None,
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
            st.sys.mdevs.insert(u, (parent, ty));
            Ok(())
        }
        Ctl::Remove(u) => {
            if word != "1" {
                return Err(err(libc::EINVAL));
            }
            st.sys.mdevs.remove(&u);
            Ok(())
        }
    }
}
