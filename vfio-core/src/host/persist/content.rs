//! What the blocks hold: the devices claimed by id or by address and the VF counts
//! ([`Persisted`]), parsed from the blocks and rendered into them. Pure functions over
//! text.

use std::collections::BTreeSet;

use super::{
    MODPROBE_CONF, MODPROBE_HEADER, MODULES, MODULES_CONF, MODULES_HEADER, RULES_HEADER, UDEV_RULES,
};
use crate::pci::PciAddress;

// ---------------------------------------------------------------------------------------
// Pure text: what the blocks hold
// ---------------------------------------------------------------------------------------

/// A device claimed by id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct IdDevice {
    /// The device.
    pub address: PciAddress,
    /// Its vendor id.
    pub vendor: u16,
    /// Its device id.
    pub device: u16,
    /// Its native driver module (for `softdep`), when known.
    pub native: Option<String>,
    /// A display controller (class 0300): `disable_vga=1`.
    pub display: bool,
}

impl IdDevice {
    /// `vvvv:dddd`.
    pub fn id(&self) -> String {
        format!("{:04x}:{:04x}", self.vendor, self.device)
    }

    fn line(&self) -> String {
        format!(
            "# device {} {} {}{}",
            self.address,
            self.id(),
            self.native.as_deref().unwrap_or("-"),
            if self.display { " display" } else { "" }
        )
    }
}

/// Whether a driver name can stand in a `softdep` line: a module name.
pub fn is_module_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s != "-"
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Everything vfiotool persisted: the content of its blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Persisted {
    /// Devices vfio-pci claims by id (`options vfio-pci ids=`).
    pub by_id: Vec<IdDevice>,
    /// Devices vfio-pci takes by address (udev, `driver_override`).
    pub by_address: Vec<PciAddress>,
    /// VF counts set at boot (udev, `sriov_numvfs`), per PF.
    pub numvfs: Vec<(PciAddress, u16)>,
}

/// The udev rule putting one device on vfio-pci.
pub fn override_rule(a: PciAddress) -> String {
    format!(
        "ACTION==\"add\", SUBSYSTEM==\"pci\", KERNEL==\"{a}\", ATTR{{driver_override}}=\"vfio-pci\", RUN+=\"/bin/sh -c 'echo $kernel > /sys/bus/pci/drivers_probe'\""
    )
}

/// The udev rule setting a PF's VF count.
pub fn numvfs_rule(a: PciAddress, n: u16) -> String {
    format!(
        "ACTION==\"add|bind\", SUBSYSTEM==\"pci\", KERNEL==\"{a}\", ATTR{{sriov_numvfs}}=\"{n}\""
    )
}

/// The value of `KEY=="..."` or `KEY="..."` in a udev rule line (the first one).
fn rule_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    let rest = line[start..].strip_prefix("==").or_else(|| line[start..].strip_prefix('='))?;
    let rest = rest.strip_prefix('"')?;
    Some(&rest[..rest.find('"')?])
}

impl Persisted {
    /// Whether nothing is persisted.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty() && self.by_address.is_empty() && self.numvfs.is_empty()
    }

    /// Sorts every list by address and keeps one entry per address (the last given).
    pub fn normalize(&mut self) {
        let mut seen = BTreeSet::new();
        self.by_id.reverse();
        self.by_id.retain(|d| seen.insert(d.address));
        self.by_id.sort();
        self.by_address.sort();
        self.by_address.dedup();
        let mut seen = BTreeSet::new();
        self.numvfs.reverse();
        self.numvfs.retain(|(a, _)| seen.insert(*a));
        self.numvfs.sort();
    }

    /// Every address named anywhere.
    pub fn addresses(&self) -> BTreeSet<PciAddress> {
        let mut s: BTreeSet<PciAddress> = self.by_id.iter().map(|d| d.address).collect();
        s.extend(self.by_address.iter().copied());
        s.extend(self.numvfs.iter().map(|(a, _)| *a));
        s
    }

    /// The ids claimed, sorted, once each.
    pub fn ids(&self) -> Vec<String> {
        let s: BTreeSet<String> = self.by_id.iter().map(IdDevice::id).collect();
        s.into_iter().collect()
    }

    /// The native drivers loaded after vfio-pci (`softdep`), as module names.
    pub fn softdeps(&self) -> Vec<String> {
        let s: BTreeSet<String> = self
            .by_id
            .iter()
            .filter_map(|d| d.native.as_deref())
            .filter(|n| is_module_name(n))
            .map(|n| n.replace('-', "_"))
            .collect();
        s.into_iter().collect()
    }

    /// The lines of the modprobe block that follow from the devices.
    fn derived_modprobe_lines(&self) -> Vec<String> {
        let mut v = vec![format!(
            "options vfio-pci ids={}{}",
            self.ids().join(","),
            if self.by_id.iter().any(|d| d.display) { " disable_vga=1" } else { "" }
        )];
        v.extend(self.softdeps().iter().map(|s| format!("softdep {s} pre: vfio-pci")));
        v
    }

    /// The modprobe block's lines (`None` when no device is claimed by id).
    pub fn render_modprobe(&self) -> Option<String> {
        if self.by_id.is_empty() {
            return None;
        }
        let mut s = format!("{MODPROBE_HEADER}\n");
        for d in &self.by_id {
            s += &d.line();
            s.push('\n');
        }
        for l in self.derived_modprobe_lines() {
            s += &l;
            s.push('\n');
        }
        Some(s)
    }

    /// The modules-load block's lines (`None` when no device is put on vfio-pci).
    pub fn render_modules(&self) -> Option<String> {
        if self.by_id.is_empty() && self.by_address.is_empty() {
            return None;
        }
        Some(format!("{MODULES_HEADER}\n{}\n", MODULES.join("\n")))
    }

    /// The udev block's lines (`None` when there is no rule).
    pub fn render_rules(&self) -> Option<String> {
        if self.by_address.is_empty() && self.numvfs.is_empty() {
            return None;
        }
        let mut s = format!("{RULES_HEADER}\n");
        for a in &self.by_address {
            s += &override_rule(*a);
            s.push('\n');
        }
        for (a, n) in &self.numvfs {
            s += &numvfs_rule(*a, *n);
            s.push('\n');
        }
        Some(s)
    }

    /// The block of one managed file (by path: [`MODPROBE_CONF`], [`MODULES_CONF`],
    /// [`UDEV_RULES`]).
    pub fn render(&self, file: &str) -> Option<String> {
        match file {
            MODPROBE_CONF => self.render_modprobe(),
            MODULES_CONF => self.render_modules(),
            UDEV_RULES => self.render_rules(),
            _ => None,
        }
    }

    /// Reads what the blocks hold: the modprobe block, the modules-load block and the udev
    /// block (each `None` when its file has none). Returns the lines vfiotool would not
    /// have written there, with the file they are in; blank lines are ignored.
    pub fn parse(
        modprobe: Option<&str>,
        modules: Option<&str>,
        rules: Option<&str>,
    ) -> (Persisted, Vec<(&'static str, String)>) {
        let mut p = Persisted::default();
        let mut unknown = vec![];
        let mut rest = vec![];
        for l in modprobe.unwrap_or("").lines().map(str::trim).filter(|l| !l.is_empty()) {
            match parse_device_line(l) {
                Some(d) => p.by_id.push(d),
                None => rest.push(l),
            }
        }
        // The ids= and softdep lines follow from the devices: one that does not was
        // edited by hand.
        let derived = if p.by_id.is_empty() { vec![] } else { p.derived_modprobe_lines() };
        for l in rest {
            if l != MODPROBE_HEADER && !derived.iter().any(|d| d == l) {
                unknown.push((MODPROBE_CONF, l.to_string()));
            }
        }
        for l in modules.unwrap_or("").lines().map(str::trim).filter(|l| !l.is_empty()) {
            if l != MODULES_HEADER && !MODULES.contains(&l) {
                unknown.push((MODULES_CONF, l.to_string()));
            }
        }
        for l in rules.unwrap_or("").lines().map(str::trim).filter(|l| !l.is_empty()) {
            if l == RULES_HEADER {
                continue;
            }
            let a = rule_value(l, "KERNEL").and_then(|k| PciAddress::parse(k).ok());
            let known = match a {
                Some(a) if l == override_rule(a) => {
                    p.by_address.push(a);
                    true
                }
                Some(a) => match rule_value(l, "ATTR{sriov_numvfs}").and_then(|n| n.parse().ok()) {
                    Some(n) if n > 0 && l == numvfs_rule(a, n) => {
                        p.numvfs.push((a, n));
                        true
                    }
                    _ => false,
                },
                None => false,
            };
            if !known {
                unknown.push((UDEV_RULES, l.to_string()));
            }
        }
        (p, unknown)
    }
}

/// A `# device ADDRESS VVVV:DDDD DRIVER|- [display]` line, exactly as written.
fn parse_device_line(l: &str) -> Option<IdDevice> {
    let f: Vec<&str> = l.strip_prefix("# device ")?.split(' ').collect();
    let (addr, id, native, display) = match f.as_slice() {
        [a, i, n] => (*a, *i, *n, false),
        [a, i, n, "display"] => (*a, *i, *n, true),
        _ => return None,
    };
    let (v, d) = id.split_once(':')?;
    let hex4 = |s: &str| {
        (s.len() == 4 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u16::from_str_radix(s, 16).ok())
            .flatten()
    };
    let dev = IdDevice {
        address: PciAddress::parse(addr).ok()?,
        vendor: hex4(v)?,
        device: hex4(d)?,
        native: (native != "-").then(|| native.to_string()),
        display,
    };
    if dev.native.as_deref().is_some_and(|n| !is_module_name(n)) || dev.line() != l {
        return None;
    }
    Some(dev)
}
