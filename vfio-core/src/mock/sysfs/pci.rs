//! PCI functions (`drivers/pci/pci-sysfs.c`): `/sys/bus/pci/devices`, the device tree
//! under `/sys/devices/pciDDDD:BB`, and a function's own attributes: ids and class,
//! `config` (the live image, its first 64 bytes for an unprivileged reader), `resource`
//! and the `resourceN` BARs, `rom` (readable once `1` was written to it),
//! `driver_override` (recorded, never unbinding), `enable`, `remove`, `reset_method`,
//! `boot_vga` and the `driver` link.

use std::io;

use super::{
    device_at, device_dir, device_node, dir, err, link, root_name, rw, text, word, write_only,
    Attr, DevicePart, Lookup, Node,
};
use crate::mock::{DeviceSpec, HostState};
use crate::pci::config::BarKind;
use crate::pci::PciAddress;

/// What a write to a function's attribute does.
pub(super) enum Ctl {
    /// `driver_override`: records the name (an empty line clears it).
    Override(PciAddress),
    /// `enable`.
    Enable(PciAddress),
    /// `remove`: refused (the simulated host never loses a function).
    Remove,
}

/// `/sys/bus/pci`, its `devices` links, and `/sys/devices` down to each function.
pub(super) fn node(st: &HostState, parts: &[&str]) -> Lookup {
    Some(match parts {
        ["sys", "bus", "pci"] => Some(dir(&["devices", "drivers", "drivers_probe", "rescan"])),
        ["sys", "bus", "pci", "devices"] => {
            Some(Node::Dir(st.devices.keys().map(|a| a.to_string()).collect()))
        }
        ["sys", "bus", "pci", "devices", a] => {
            device_at(st, a).map(|a| link(format!("../../../{}", device_dir(a))))
        }
        ["sys", "devices"] => {
            let mut v: Vec<String> = st.devices.keys().map(|a| root_name(*a)).collect();
            v.push("virtual".into());
            v.sort();
            v.dedup();
            Some(Node::Dir(v))
        }
        ["sys", "devices", root] => {
            let v: Vec<String> = st
                .devices
                .keys()
                .filter(|a| root_name(**a) == *root)
                .map(|a| a.to_string())
                .collect();
            (!v.is_empty()).then_some(Node::Dir(v))
        }
        ["sys", "devices", root, a, rest @ ..] => device_at(st, a)
            .filter(|a| root_name(*a) == *root)
            .and_then(|a| device_node(st, a, rest)),
        _ => return None,
    })
}

/// A function's attributes in its directory.
pub(super) const DEVICE: DevicePart = DevicePart { entries, node: attr_node };

fn entries(st: &HostState, a: PciAddress) -> Vec<String> {
    let Some(d) = st.devices.get(&a) else { return vec![] };
    let spec = &d.spec;
    let mut v: Vec<String> = [
        "vendor",
        "device",
        "subsystem_vendor",
        "subsystem_device",
        "class",
        "revision",
        "config",
        "resource",
        "driver_override",
        "numa_node",
        "enable",
        "remove",
        "irq",
        "local_cpulist",
    ]
    .map(String::from)
    .into();
    if spec.rom.is_some() {
        v.push("rom".into());
    }
    v.extend((0..6).filter(|i| spec.bars[*i].is_some()).map(|i| format!("resource{i}")));
    if d.driver.is_some() {
        v.push("driver".into());
    }
    if !spec.bridge {
        v.push("reset_method".into());
    }
    if is_vga(spec) {
        v.push("boot_vga".into());
    }
    v
}

fn attr_node(st: &HostState, a: PciAddress, rest: &[&str]) -> Lookup {
    let d = st.devices.get(&a)?;
    let spec = &d.spec;
    Some(match rest {
        ["vendor"] => Some(text(hex16(spec.vendor))),
        ["device"] => Some(text(hex16(spec.device))),
        ["subsystem_vendor"] => Some(text(hex16(spec.subsystem_vendor))),
        ["subsystem_device"] => Some(text(hex16(spec.subsystem_device))),
        ["class"] => Some(text(format!("0x{:06x}", spec.class))),
        ["revision"] => Some(text(format!("0x{:02x}", spec.revision))),
        ["numa_node"] => Some(text("-1")),
        ["irq"] => Some(text("11")),
        ["local_cpulist"] => Some(text("0-1")),
        ["config"] => Some(Node::File(Attr::Config(a), 0o644)),
        ["rom"] if spec.rom.is_some() => Some(Node::File(Attr::Rom(a), 0o600)),
        ["remove"] => Some(write_only(Ctl::Remove)),
        ["resource"] => Some(Node::File(Attr::Text(resources(a, spec)), 0o444)),
        [r] if r.starts_with("resource") => r["resource".len()..]
            .parse::<usize>()
            .ok()
            .and_then(|i| spec.bars.get(i).copied().flatten())
            .map(|_| Node::File(Attr::Resource, 0o600)),
        ["driver"] => d.driver.as_ref().map(|n| link(format!("../../../bus/pci/drivers/{n}"))),
        ["driver_override"] => {
            Some(rw(d.driver_override.as_deref().unwrap_or("(null)"), Ctl::Override(a)))
        }
        ["reset_method"] if !spec.bridge => Some(text(if spec.flr { "flr bus" } else { "bus" })),
        ["boot_vga"] if is_vga(spec) => {
            Some(text(if st.sys.boot_vga == Some(a) { "1" } else { "0" }))
        }
        ["enable"] => Some(rw(u8::from(st.sys.enabled.contains(&a)), Ctl::Enable(a))),
        _ => return None,
    })
}

fn is_vga(spec: &DeviceSpec) -> bool {
    spec.class >> 8 == 0x0300
}

fn hex16(v: u16) -> String {
    format!("0x{v:04x}")
}

/// Where the simulated host placed BAR `i` of function `a`.
fn bar_base(a: PciAddress, i: usize) -> u64 {
    0xf000_0000_u64
        .wrapping_add(
            ((a.bus as u64) << 20 | (a.device as u64) << 15 | (a.function as u64) << 12) << 8,
        )
        .wrapping_add((i as u64) << 24)
}

/// `resource`: start, end and flags of the 13 resources (6 BARs, the ROM, the bridge
/// windows), zero where there is none.
fn resources(a: PciAddress, spec: &DeviceSpec) -> String {
    let mut s = String::new();
    for i in 0..13 {
        let (start, end, flags) = match spec.bars.get(i).copied().flatten() {
            Some(b) => {
                let base = bar_base(a, i);
                let flags: u64 = match b.kind {
                    BarKind::Io => 0x101,
                    BarKind::Memory32 | BarKind::Memory1M => 0x40200,
                    BarKind::Memory64 => 0x140204,
                } | if b.prefetchable { 0x2000 } else { 0 };
                (base, base + b.size - 1, flags)
            }
            None => (0, 0, 0),
        };
        s += &format!("0x{start:016x} 0x{end:016x} 0x{flags:016x}\n");
    }
    s
}

/// `config`: the live image (its first 64 bytes for an unprivileged reader).
pub(super) fn read_config(st: &HostState, a: PciAddress) -> Vec<u8> {
    let c = &st.devices[&a].config;
    if st.sys.unprivileged {
        c[..64.min(c.len())].to_vec()
    } else {
        c.clone()
    }
}

/// `rom`: the image, once enabled by writing 1 (`EINVAL` before).
pub(super) fn read_rom(st: &HostState, a: PciAddress) -> io::Result<Vec<u8>> {
    if !st.sys.rom_enabled.contains(&a) {
        return Err(err(libc::EINVAL));
    }
    Ok(st.devices[&a].spec.rom.clone().unwrap_or_default())
}

/// Writing `rom`: `0` disables reading it, anything else enables it.
pub(super) fn write_rom(st: &mut HostState, a: PciAddress, data: &[u8]) {
    match word(data).as_str() {
        "0" => st.sys.rom_enabled.remove(&a),
        _ => st.sys.rom_enabled.insert(a),
    };
}

pub(super) fn store(st: &mut HostState, ctl: Ctl, data: &[u8]) -> io::Result<()> {
    match ctl {
        Ctl::Override(a) => {
            if data.len() >= 4096 {
                return Err(err(libc::EINVAL));
            }
            let text = String::from_utf8_lossy(data);
            let name = text.split('\n').next().unwrap_or("").to_string();
            st.devices.get_mut(&a).ok_or_else(|| err(libc::ENODEV))?.driver_override =
                (!name.is_empty()).then_some(name);
            Ok(())
        }
        Ctl::Enable(a) => {
            match word(data).parse::<u64>().map_err(|_| err(libc::EINVAL))? {
                0 => st.sys.enabled.remove(&a),
                _ => st.sys.enabled.insert(a),
            };
            Ok(())
        }
        Ctl::Remove => Err(err(libc::EPERM)),
    }
}

#[cfg(test)]
mod tests {
    use crate::hostfs::{HostFs, NodeKind};
    use crate::mock::sysfs::tests::{host, p};

    #[test]
    fn serves_device_attributes_through_the_bus_symlink() {
        let h = host();
        let fs = h.fs();
        let d = "/sys/bus/pci/devices/0000:00:04.0";
        assert_eq!(fs.read_string(&p(d).join("vendor")).unwrap(), "0x1234");
        assert_eq!(fs.read_string(&p(d).join("device")).unwrap(), "0x11e8");
        assert_eq!(fs.read_string(&p(d).join("class")).unwrap(), "0x00ff00");
        assert_eq!(fs.read_string(&p(d).join("driver_override")).unwrap(), "(null)");
        assert_eq!(fs.metadata(p(d)).unwrap().kind, NodeKind::Symlink);
        assert_eq!(fs.read_link(&p(d).join("driver")).unwrap(), p("../../../bus/pci/drivers/edu"));
        assert_eq!(
            fs.read_link(&p(d).join("iommu_group")).unwrap(),
            p("../../../kernel/iommu_groups/1")
        );
        assert_eq!(fs.read(&p(d).join("config")).unwrap().len(), 4096);
        h.state().sys.unprivileged = true;
        assert_eq!(fs.read(&p(d).join("config")).unwrap().len(), 64);
        assert_eq!(
            fs.read_dir(p("/sys/kernel/iommu_groups/1/devices")).unwrap(),
            vec!["0000:00:04.0"]
        );
        assert_eq!(
            fs.read_string(p("/sys/kernel/iommu_groups/1/devices/0000:00:04.0/vendor")).unwrap(),
            "0x1234"
        );
        let res = fs.read_string(&p(d).join("resource")).unwrap();
        assert_eq!(res.lines().count(), 13);
        assert!(fs.exists(&p(d).join("resource0")));
        assert!(!fs.exists(&p(d).join("resource1")));
    }
}
