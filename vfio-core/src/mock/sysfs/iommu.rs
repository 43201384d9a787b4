//! IOMMU groups and the VFIO device nodes: `/sys/kernel/iommu_groups` (members, type,
//! reserved regions, the `name` of a no-IOMMU group), the IOMMU units
//! (`/sys/class/iommu`, `/sys/devices/virtual/iommu` with their Intel or AMD
//! capabilities), a device's `iommu_group` link and `vfio-dev` cdev, the group vfio makes
//! for each mdev instance, and `/dev`:
//! `/dev/vfio/vfio`, one node per group with a device on vfio-pci (`noiommu-N` for a
//! no-IOMMU group), the `/dev/vfio/devices` cdevs and `/dev/iommu` (iommufd).

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::{device_at, device_dir, dir, link, node_at, text, DevicePart, Lookup, Node};
use crate::mock::{HostState, SimDevice};
use crate::pci::PciAddress;

impl HostState {
    fn group_has_vfio(&self, g: u32) -> bool {
        self.devices.values().any(|d| {
            self.group_of(d.spec.address).map(|x| x.0) == Some(g)
                && d.driver.as_deref() == Some("vfio-pci")
        }) || mdev_in(self, g).is_some()
    }
}

/// The mdev instance in group `g` (vfio makes a group for each): its UUID.
fn mdev_in(st: &HostState, g: u32) -> Option<&str> {
    st.mdev_devices.iter().find(|(_, d)| d.spec.iommu_group == Some(g)).map(|(u, _)| u.as_str())
}

/// The groups with a device in them now.
fn groups(st: &HostState) -> BTreeSet<u32> {
    let mdevs = st.mdev_devices.values().filter_map(|d| d.spec.iommu_group);
    st.devices.keys().filter_map(|a| st.group_of(*a)).map(|(g, _)| g).chain(mdevs).collect()
}

/// Whether vfio made group `g` for a device without an IOMMU.
fn is_noiommu(st: &HostState, g: u32) -> bool {
    st.kernel.noiommu_ids.values().any(|n| *n == g)
}

/// The name of a device's cdev (`vfioN`) while it is on vfio-pci.
fn cdev(d: &SimDevice) -> Option<String> {
    d.vfio_index.map(|i| format!("vfio{i}"))
}

/// The groups, the IOMMU units and `/dev`.
pub(super) fn node(st: &HostState, parts: &[&str]) -> Lookup {
    match parts {
        ["sys", "kernel", rest @ ..] => groups_node(st, rest),
        ["sys", "devices", "virtual", rest @ ..] => units_node(st, rest),
        ["sys", "class", "iommu", rest @ ..] => class_node(st, rest),
        ["dev", rest @ ..] => dev_node(st, rest),
        _ => None,
    }
}

/// `/sys/kernel/rest`.
fn groups_node(st: &HostState, rest: &[&str]) -> Lookup {
    Some(match rest {
        [] => Some(dir(&["iommu_groups"])),
        ["iommu_groups"] => Some(Node::Dir(groups(st).iter().map(|g| g.to_string()).collect())),
        ["iommu_groups", g, rest @ ..] => group_node(st, g, rest),
        _ => return None,
    })
}

/// `/sys/kernel/iommu_groups/G/rest`.
fn group_node(st: &HostState, g: &str, rest: &[&str]) -> Option<Node> {
    let g: u32 = g.parse().ok().filter(|g| groups(st).contains(g))?;
    if let Some(u) = mdev_in(st, g) {
        return mdev_group_node(st, u, rest);
    }
    let members: Vec<PciAddress> =
        st.devices.keys().filter(|a| st.group_of(**a).map(|x| x.0) == Some(g)).copied().collect();
    let noiommu = is_noiommu(st, g);
    match rest {
        [] if noiommu => Some(dir(&["devices", "name", "reserved_regions", "type"])),
        [] => Some(dir(&["devices", "reserved_regions", "type"])),
        ["name"] if noiommu => Some(text("vfio-noiommu")),
        ["type"] => Some(text("DMA")),
        ["reserved_regions"] => Some(text("0x00000000fee00000 0x00000000feefffff msi")),
        ["devices"] => Some(Node::Dir(members.iter().map(|a| a.to_string()).collect())),
        ["devices", a] => {
            let a = device_at(st, a).filter(|a| members.contains(a))?;
            Some(link(format!("../../../../{}", device_dir(a))))
        }
        _ => None,
    }
}

/// The group vfio makes for an mdev instance (`vfio_noiommu_group_alloc` with
/// `VFIO_EMULATED_IOMMU`): named `vfio-noiommu` like a no-IOMMU group, though its node is
/// `/dev/vfio/N`; no default domain (`type` reads `unknown`), no reserved regions.
fn mdev_group_node(st: &HostState, u: &str, rest: &[&str]) -> Option<Node> {
    match rest {
        [] => Some(dir(&["devices", "name", "reserved_regions", "type"])),
        ["name"] => Some(text("vfio-noiommu")),
        ["type"] => Some(text("unknown")),
        ["reserved_regions"] => Some(Node::File(super::Attr::Text(String::new()), 0o444)),
        ["devices"] => Some(Node::Dir(vec![u.to_string()])),
        ["devices", x] if *x == u => {
            Some(link(format!("../../../../{}", super::mdev::instance_dir(st, u)?)))
        }
        _ => None,
    }
}

/// The IOMMU units' names.
fn units(st: &HostState) -> Node {
    Node::Dir(st.sys.iommus.iter().map(|i| i.name.clone()).collect())
}

/// `/sys/devices/virtual/rest`.
fn units_node(st: &HostState, rest: &[&str]) -> Lookup {
    Some(match rest {
        [] => {
            let mut v = super::mdev::virtual_classes(st);
            v.push("iommu".into());
            Some(Node::Dir(v))
        }
        ["iommu"] => Some(units(st)),
        ["iommu", name, rest @ ..] => unit_node(st, name, rest),
        _ => return None,
    })
}

/// `/sys/devices/virtual/iommu/NAME/rest`.
fn unit_node(st: &HostState, name: &str, rest: &[&str]) -> Option<Node> {
    let u = st.sys.iommus.iter().find(|i| i.name == name)?;
    match (rest, u.intel_ecap, u.amd_features) {
        ([], Some(_), _) => Some(dir(&["intel-iommu", "devices"])),
        ([], None, Some(_)) => Some(dir(&["amd-iommu", "devices"])),
        ([], None, None) => Some(dir(&["devices"])),
        (["devices"], _, _) => Some(Node::Dir(vec![])),
        (["intel-iommu"], Some(_), _) => Some(dir(&["cap", "ecap", "version"])),
        (["intel-iommu", "ecap"], Some(e), _) => Some(text(format!("{e:x}"))),
        (["intel-iommu", "cap"], Some(_), _) => Some(text("d2008c40660462")),
        (["intel-iommu", "version"], Some(_), _) => Some(text("1:0")),
        (["amd-iommu"], _, Some(_)) => Some(dir(&["cap", "features"])),
        (["amd-iommu", "features"], _, Some(f)) => Some(text(format!("{f:x}"))),
        (["amd-iommu", "cap"], _, Some(_)) => Some(text("0x90000")),
        _ => None,
    }
}

/// `/sys/class/iommu/rest`.
fn class_node(st: &HostState, rest: &[&str]) -> Lookup {
    Some(match rest {
        [] => Some(units(st)),
        [name] => st
            .sys
            .iommus
            .iter()
            .find(|i| i.name == *name)
            .map(|_| link(format!("../../devices/virtual/iommu/{name}"))),
        _ => return None,
    })
}

/// `/dev/rest`: the VFIO and iommufd nodes, while their modules are loaded.
fn dev_node(st: &HostState, rest: &[&str]) -> Lookup {
    let iommufd = st.kernel.config.iommufd;
    let vfio_loaded = st.module_loaded("vfio");
    Some(match rest {
        [] => {
            let mut v = vec![];
            if vfio_loaded {
                v.push("vfio");
            }
            if st.module_loaded("iommufd") {
                v.push("iommu");
            }
            Some(dir(&v))
        }
        ["iommu"] if iommufd && st.module_loaded("iommufd") => Some(Node::Char(0o600)),
        ["vfio"] if vfio_loaded => {
            let mut v: Vec<String> = vec!["vfio".into()];
            v.extend(groups(st).into_iter().filter(|g| st.group_has_vfio(*g)).map(|g| {
                if is_noiommu(st, g) {
                    format!("noiommu-{g}")
                } else {
                    g.to_string()
                }
            }));
            if iommufd && st.vfio_devices().any(|d| d.vfio_index.is_some()) {
                v.push("devices".into());
            }
            v.sort();
            Some(Node::Dir(v))
        }
        ["vfio", "vfio"] if vfio_loaded => Some(Node::Char(0o666)),
        ["vfio", "devices"] if vfio_loaded && iommufd => {
            Some(Node::Dir(st.vfio_devices().filter_map(cdev).collect()))
        }
        ["vfio", "devices", n] if vfio_loaded && iommufd => {
            st.vfio_devices().any(|d| cdev(d).as_deref() == Some(n)).then_some(Node::Char(0o600))
        }
        ["vfio", g] if vfio_loaded => group_dev_node(st, g),
        _ => return None,
    })
}

/// `/dev/vfio/G` (`/dev/vfio/noiommu-G` for a no-IOMMU group).
fn group_dev_node(st: &HostState, name: &str) -> Option<Node> {
    let (g, want_noiommu) = match name.strip_prefix("noiommu-") {
        Some(n) => (n.parse().ok()?, true),
        None => (name.parse().ok()?, false),
    };
    (st.group_has_vfio(g) && is_noiommu(st, g) == want_noiommu).then_some(Node::Char(0o600))
}

/// A group node a write removed (its last device left vfio-pci) takes its owner and
/// mode with it: the kernel makes a new node root's, 0600.
pub(super) fn forget_removed_nodes(st: &mut HostState) {
    let gone: Vec<PathBuf> = st
        .sys
        .owners
        .keys()
        .chain(st.sys.modes.keys())
        .filter(|n| n.starts_with("/dev/vfio") && node_at(st, n).is_none())
        .cloned()
        .collect();
    for n in gone {
        st.sys.owners.remove(&n);
        st.sys.modes.remove(&n);
    }
}

/// A device's `iommu_group` link and `vfio-dev` cdev directory.
pub(super) const DEVICE: DevicePart = DevicePart { entries, node: device_node };

fn entries(st: &HostState, a: PciAddress) -> Vec<String> {
    let Some(d) = st.devices.get(&a) else { return vec![] };
    let mut v = vec![];
    if d.spec.iommu_group.is_some() {
        v.push("iommu_group".into());
    }
    if d.vfio_index.is_some() {
        v.push("vfio-dev".into());
    }
    v
}

fn device_node(st: &HostState, a: PciAddress, rest: &[&str]) -> Lookup {
    let d = st.devices.get(&a)?;
    Some(match rest {
        ["iommu_group"] => {
            st.group_of(a).map(|(g, _)| link(format!("../../../kernel/iommu_groups/{g}")))
        }
        ["vfio-dev"] => cdev(d).map(|c| Node::Dir(vec![c])),
        ["vfio-dev", n] if cdev(d).as_deref() == Some(n) => Some(Node::Dir(vec!["dev".into()])),
        ["vfio-dev", _, "dev"] => d.vfio_index.map(|i| text(format!("236:{i}"))),
        _ => return None,
    })
}
