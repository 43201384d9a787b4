//! Network interfaces and disks ([`SimNet`](super::SimNet), [`SimBlock`](super::SimBlock)):
//! `/sys/class/net/NAME` and `/sys/block/NAME`, each a link to the member's directory
//! below the PCI function behind it (`net/NAME`, `block/NAME`), which holds `device`
//! (back to the function) and `operstate` or `dev`.

use super::{device_dir, dir, link, text, DevicePart, Lookup, Node, SysState};
use crate::mock::HostState;
use crate::pci::PciAddress;

/// A class of devices that hang below PCI functions.
struct Class {
    /// Where the class lists its members, below `/sys`.
    at: &'static [&'static str],
    /// The directory holding the members in their function's directory.
    dir: &'static str,
    /// The members: name and function.
    members: fn(&SysState) -> Vec<(&str, PciAddress)>,
    /// The attribute beside `device` in a member's directory, and its value.
    attr: (&'static str, &'static str),
}

const CLASSES: [Class; 2] = [
    Class {
        at: &["class", "net"],
        dir: "net",
        members: |s| s.nets.iter().map(|n| (n.name.as_str(), n.device)).collect(),
        attr: ("operstate", "up"),
    },
    Class {
        at: &["block"],
        dir: "block",
        members: |s| s.blocks.iter().map(|b| (b.name.as_str(), b.device)).collect(),
        attr: ("dev", "259:0"),
    },
];

/// `/sys/class/net` and `/sys/block`.
pub(super) fn node(st: &HostState, parts: &[&str]) -> Lookup {
    let ["sys", rest @ ..] = parts else { return None };
    CLASSES.iter().find_map(|c| c.node(st, rest))
}

/// The members' directories below a function.
pub(super) const DEVICE: DevicePart = DevicePart { entries, node: device_node };

fn entries(st: &HostState, a: PciAddress) -> Vec<String> {
    CLASSES.iter().filter(|c| !c.below(st, a).is_empty()).map(|c| c.dir.to_string()).collect()
}

fn device_node(st: &HostState, a: PciAddress, rest: &[&str]) -> Lookup {
    CLASSES.iter().find_map(|c| c.device_node(st, a, rest))
}

impl Class {
    /// `/sys/AT/rest`.
    fn node(&self, st: &HostState, rest: &[&str]) -> Lookup {
        let members = (self.members)(&st.sys);
        let name = match rest.strip_prefix(self.at)? {
            [] => return Some(Some(Node::Dir(members.iter().map(|m| m.0.to_string()).collect()))),
            [name] => *name,
            _ => return None,
        };
        let up = vec![".."; self.at.len()].join("/");
        Some(
            members
                .iter()
                .find(|m| m.0 == name)
                .map(|(_, a)| link(format!("{up}/{}/{}/{name}", device_dir(*a), self.dir))),
        )
    }

    /// The members below function `a`.
    fn below(&self, st: &HostState, a: PciAddress) -> Vec<String> {
        (self.members)(&st.sys).into_iter().filter(|m| m.1 == a).map(|m| m.0.to_string()).collect()
    }

    /// `DIR/rest` in the directory of function `a`.
    fn device_node(&self, st: &HostState, a: PciAddress, rest: &[&str]) -> Lookup {
        let [d, rest @ ..] = rest else { return None };
        if *d != self.dir {
            return None;
        }
        let below = self.below(st, a);
        Some(match rest {
            [] => Some(Node::Dir(below)),
            [name, rest @ ..] if below.iter().any(|m| m == name) => match rest {
                [] => Some(dir(&["device", self.attr.0])),
                [x] if *x == self.attr.0 => Some(text(self.attr.1)),
                ["device"] => Some(link("../..")),
                _ => None,
            },
            _ => None,
        })
    }
}
