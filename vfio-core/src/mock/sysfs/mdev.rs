//! Mediated devices (`drivers/vfio/mdev/`): the `mdev_supported_types` a parent offers
//! while it has a driver (name, description, device_api, available_instances, the
//! instances in `devices`), `create` (a UUID: `EINVAL` for anything else, `EEXIST` when
//! used, `EUSERS` when the type is full), the instances below their parent (`remove`
//! takes `1`, `mdev_type`), and `/sys/bus/mdev/devices`.

use std::io;

use super::{device_dir, dir, err, link, text, word, write_only, DevicePart, Lookup, Node};
use crate::hostfs::is_uuid;
use crate::mock::{HostState, MdevTypeSpec};
use crate::pci::PciAddress;

/// What a write to an mdev attribute does.
pub(super) enum Ctl {
    /// `mdev_supported_types/T/create` of a parent.
    Create(PciAddress, String),
    /// An instance's `remove`.
    Remove(String),
}

/// `/sys/bus/mdev`.
pub(super) fn node(st: &HostState, parts: &[&str]) -> Lookup {
    Some(match parts {
        ["sys", "bus", "mdev"] => Some(dir(&["devices"])),
        ["sys", "bus", "mdev", "devices"] => {
            Some(Node::Dir(st.sys.mdevs.keys().cloned().collect()))
        }
        ["sys", "bus", "mdev", "devices", u] => {
            st.sys.mdevs.get(*u).map(|(p, _)| link(format!("../../../{}/{u}", device_dir(*p))))
        }
        _ => return None,
    })
}

/// The types a parent offers: none while it has no driver.
fn offered(st: &HostState, a: PciAddress) -> &[MdevTypeSpec] {
    match st.devices.get(&a) {
        Some(d) if d.driver.is_some() => &d.spec.mdev_types,
        _ => &[],
    }
}

/// The instances of parent `a`, of type `t` when given.
fn instances(st: &HostState, a: PciAddress, t: Option<&str>) -> Vec<String> {
    st.sys
        .mdevs
        .iter()
        .filter(|(_, (p, tid))| *p == a && t.is_none_or(|t| tid == t))
        .map(|(u, _)| u.clone())
        .collect()
}

/// A parent's `mdev_supported_types` and its instances.
pub(super) const DEVICE: DevicePart = DevicePart { entries, node: device_node };

fn entries(st: &HostState, a: PciAddress) -> Vec<String> {
    let mut v = instances(st, a, None);
    if !offered(st, a).is_empty() {
        v.push("mdev_supported_types".into());
    }
    v
}

fn device_node(st: &HostState, a: PciAddress, rest: &[&str]) -> Lookup {
    let types = offered(st, a);
    Some(match rest {
        ["mdev_supported_types"] if !types.is_empty() => {
            Some(Node::Dir(types.iter().map(|t| t.id.clone()).collect()))
        }
        ["mdev_supported_types", t, rest @ ..] => type_node(st, a, t, rest),
        [u, rest @ ..] if st.sys.mdevs.get(*u).is_some_and(|(p, _)| *p == a) => {
            instance_node(st, u, rest)
        }
        _ => return None,
    })
}

/// `mdev_supported_types/T/rest` of parent `a`.
fn type_node(st: &HostState, a: PciAddress, t: &str, rest: &[&str]) -> Option<Node> {
    let ty = offered(st, a).iter().find(|x| x.id == t)?;
    let used = instances(st, a, Some(t));
    match rest {
        [] => Some(dir(&[
            "name",
            "description",
            "device_api",
            "available_instances",
            "create",
            "devices",
        ])),
        ["name"] => Some(text(&ty.name)),
        ["description"] => Some(text(&ty.description)),
        ["device_api"] => Some(text(&ty.device_api)),
        ["available_instances"] => Some(text(ty.max_instances.saturating_sub(used.len() as u32))),
        ["create"] => Some(write_only(Ctl::Create(a, t.to_string()))),
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
            let max = st.devices[&parent]
                .spec
                .mdev_types
                .iter()
                .find(|t| t.id == ty)
                .map_or(0, |t| t.max_instances);
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
