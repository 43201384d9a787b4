//! The driver core for PCI (`drivers/base/bus.c`, `drivers/base/dd.c`,
//! `drivers/pci/pci-driver.c`): which drivers are registered and which devices they
//! match (the override wins over the id tables and the dynamic ids), probing
//! (`drivers_probe`, `rescan`, a driver's `uevent`), `bind`, `unbind` (refused while
//! the device is open through VFIO), `new_id` and `remove_id`, and
//! `/sys/bus/pci/drivers`.

use std::collections::BTreeSet;
use std::io;

use super::proc::module_of;
use super::{device_at, device_dir, err, link, names, word, write_only, Lookup, Node};
use crate::mock::{HostState, MockHost};
use crate::pci::PciAddress;

/// What a write to a driver-core attribute does.
pub(super) enum Ctl {
    /// A driver's `unbind`.
    Unbind(String),
    /// A driver's `bind`.
    Bind(String),
    /// A driver's `new_id`: adds a dynamic id, binds the driverless devices it matches.
    NewId(String),
    /// A driver's `remove_id`.
    RemoveId(String),
    /// `drivers_probe`, `rescan`, a driver's `uevent`: probes the device written.
    Probe,
}

impl HostState {
    /// The driver a device binds to when nothing overrides it (built in or a module).
    fn native_driver(&self, a: PciAddress) -> Option<String> {
        if let Some(d) = self.sys.native_drivers.get(&a) {
            return Some(d.clone());
        }
        self.devices.get(&a)?.spec.driver.clone().filter(|d| d != "vfio-pci")
    }

    fn driver_registered(&self, driver: &str) -> bool {
        self.sys.modules.contains(&module_of(driver))
            || self.devices.keys().any(|a| self.native_driver(*a).as_deref() == Some(driver))
            || self.devices.values().any(|d| d.driver.as_deref() == Some(driver))
    }

    /// The registered drivers (`/sys/bus/pci/drivers`).
    fn drivers(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = BTreeSet::new();
        for a in self.devices.keys() {
            out.extend(self.native_driver(*a));
        }
        out.extend(self.devices.values().filter_map(|d| d.driver.clone()));
        if self.sys.modules.contains("vfio_pci") {
            out.insert("vfio-pci".into());
        }
        out
    }

    /// Whether `driver` would match device `a` (pci_match_device: the override wins).
    fn matches(&self, driver: &str, a: PciAddress) -> bool {
        let Some(d) = self.devices.get(&a) else { return false };
        if let Some(o) = &d.driver_override {
            return o == driver;
        }
        if self.native_driver(a).as_deref() == Some(driver) {
            return true;
        }
        self.sys.dynids.get(driver).is_some_and(|ids| ids.contains(&(d.spec.vendor, d.spec.device)))
    }

    fn probe(&mut self, a: PciAddress) {
        let Some(d) = self.devices.get(&a) else { return };
        if d.driver.is_some() {
            return;
        }
        let candidate = match &d.driver_override {
            Some(o) => Some(o.clone()),
            None => self.native_driver(a).or_else(|| {
                self.sys
                    .dynids
                    .iter()
                    .find(|(_, ids)| ids.contains(&(d.spec.vendor, d.spec.device)))
                    .map(|(drv, _)| drv.clone())
            }),
        };
        if let Some(drv) = candidate {
            if self.probe_refused(&drv, a) {
                return;
            }
            if self.driver_registered(&drv) && self.matches(&drv, a) {
                self.set_driver(a, Some(&drv));
            }
        }
    }

    /// vfio-pci's probe refuses anything but a normal (type 0) header.
    fn probe_refused(&self, driver: &str, a: PciAddress) -> bool {
        driver == "vfio-pci" && self.devices.get(&a).is_some_and(|d| d.spec.bridge)
    }

    /// Unbinds a device's driver (its VFs go first).
    fn release(&mut self, a: PciAddress) -> io::Result<()> {
        if self.sys.open_devices.contains(&a) {
            // Linux blocks in vfio_pci_remove until the user closes the device.
            return Err(err(libc::EBUSY));
        }
        if self.numvfs(a) > 0 {
            self.set_numvfs(a, 0)?;
        }
        self.sys.rom_enabled.remove(&a);
        self.set_driver(a, None);
        Ok(())
    }
}

impl MockHost {
    /// Marks a device as held open through VFIO (unbinding it then fails with `EBUSY`).
    pub fn set_device_open(&self, address: PciAddress, open: bool) {
        let mut st = self.state();
        if open {
            st.sys.open_devices.insert(address);
        } else {
            st.sys.open_devices.remove(&address);
        }
    }
}

/// `drivers_probe`, `rescan` and `/sys/bus/pci/drivers`.
pub(super) fn node(st: &HostState, parts: &[&str]) -> Lookup {
    Some(match parts {
        ["sys", "bus", "pci", "drivers_probe"] | ["sys", "bus", "pci", "rescan"] => {
            Some(write_only(Ctl::Probe))
        }
        ["sys", "bus", "pci", "drivers"] => Some(Node::Dir(st.drivers().into_iter().collect())),
        ["sys", "bus", "pci", "drivers", drv, rest @ ..] => driver_node(st, drv, rest),
        _ => return None,
    })
}

/// `/sys/bus/pci/drivers/DRV/rest`.
fn driver_node(st: &HostState, drv: &str, rest: &[&str]) -> Option<Node> {
    if !st.drivers().contains(drv) {
        return None;
    }
    let bound: Vec<PciAddress> = st
        .devices
        .iter()
        .filter(|(_, d)| d.driver.as_deref() == Some(drv))
        .map(|(a, _)| *a)
        .collect();
    let module = module_of(drv);
    let has_module = st.sys.modules.contains(&module);
    let drv = drv.to_string();
    match rest {
        [] => {
            let mut v = names(&["bind", "unbind", "new_id", "remove_id", "uevent"]);
            v.extend(bound.iter().map(|a| a.to_string()));
            if has_module {
                v.push("module".into());
            }
            v.sort();
            Some(Node::Dir(v))
        }
        ["bind"] => Some(write_only(Ctl::Bind(drv))),
        ["unbind"] => Some(write_only(Ctl::Unbind(drv))),
        ["new_id"] => Some(write_only(Ctl::NewId(drv))),
        ["remove_id"] => Some(write_only(Ctl::RemoveId(drv))),
        ["uevent"] => Some(write_only(Ctl::Probe)),
        ["module"] if has_module => Some(link(format!("../../../../module/{module}"))),
        [a] => {
            let a = device_at(st, a).filter(|a| bound.contains(a))?;
            Some(link(format!("../../../../{}", device_dir(a))))
        }
        _ => None,
    }
}

/// The device a driver-core write names (`ENODEV` when there is none).
fn device_arg(st: &HostState, data: &[u8]) -> io::Result<PciAddress> {
    device_at(st, &word(data)).ok_or_else(|| err(libc::ENODEV))
}

/// A `new_id`/`remove_id` line: vendor and device in hexadecimal.
fn id_arg(data: &[u8]) -> io::Result<(u16, u16)> {
    let word = word(data);
    let f: Vec<&str> = word.split_whitespace().collect();
    let (Some(v), Some(d)) = (f.first(), f.get(1)) else {
        return Err(err(libc::EINVAL));
    };
    let (Ok(v), Ok(d)) = (u16::from_str_radix(v, 16), u16::from_str_radix(d, 16)) else {
        return Err(err(libc::EINVAL));
    };
    Ok((v, d))
}

pub(super) fn store(st: &mut HostState, ctl: Ctl, data: &[u8]) -> io::Result<()> {
    match ctl {
        Ctl::Unbind(drv) => {
            let a = device_arg(st, data)?;
            if st.devices[&a].driver.as_deref() != Some(&drv) {
                return Err(err(libc::ENODEV));
            }
            st.release(a)
        }
        Ctl::Bind(drv) => {
            // bind_store: no match is ENODEV; __driver_probe_device refuses a
            // device that already has a driver with EBUSY.
            let a = device_arg(st, data)?;
            if !st.matches(&drv, a) {
                return Err(err(libc::ENODEV));
            }
            if st.devices[&a].driver.is_some() {
                return Err(err(libc::EBUSY));
            }
            if st.probe_refused(&drv, a) {
                return Err(err(libc::EINVAL));
            }
            st.set_driver(a, Some(&drv));
            Ok(())
        }
        Ctl::Probe => {
            let a = device_arg(st, data)?;
            st.probe(a);
            Ok(())
        }
        Ctl::NewId(drv) => {
            let id = id_arg(data)?;
            if !st.sys.dynids.entry(drv.clone()).or_default().insert(id) {
                return Err(err(libc::EEXIST));
            }
            let all: Vec<PciAddress> = st.devices.keys().copied().collect();
            for a in all {
                let dev = &st.devices[&a];
                if dev.driver.is_none()
                    && (dev.spec.vendor, dev.spec.device) == id
                    && st.matches(&drv, a)
                {
                    st.set_driver(a, Some(&drv));
                }
            }
            Ok(())
        }
        Ctl::RemoveId(drv) => {
            let id = id_arg(data)?;
            if !st.sys.dynids.entry(drv).or_default().remove(&id) {
                return Err(err(libc::ENODEV));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::hostfs::HostFs;
    use crate::mock::sysfs::tests::{a, host, p};
    use crate::mock::{DeviceSpec, MockHost};

    #[test]
    fn override_then_probe_binds_and_unbind_needs_the_right_driver() {
        let h = host();
        let fs = h.fs();
        let d = p("/sys/bus/pci/devices/0000:00:04.0");
        fs.modprobe("vfio-pci").unwrap();
        fs.write(&d.join("driver_override"), b"vfio-pci\n").unwrap();
        // Writing the override does not unbind.
        assert_eq!(h.state().devices[&a("0000:00:04.0")].driver.as_deref(), Some("edu"));
        assert!(!fs.exists(p("/dev/vfio/1")));
        // Unbind through the wrong driver: ENODEV.
        let e = fs.write(p("/sys/bus/pci/drivers/vfio-pci/unbind"), b"0000:00:04.0").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODEV));
        fs.write(&d.join("driver/unbind"), b"0000:00:04.0").unwrap();
        assert!(!fs.exists(&d.join("driver")));
        fs.write(p("/sys/bus/pci/drivers_probe"), b"0000:00:04.0").unwrap();
        assert_eq!(
            fs.read_link(&d.join("driver")).unwrap(),
            p("../../../bus/pci/drivers/vfio-pci")
        );
        assert!(fs.exists(p("/dev/vfio/1")));
        assert_eq!(fs.read_dir(&d.join("vfio-dev")).unwrap(), vec!["vfio0"]);
        // Open devices cannot be unbound.
        h.set_device_open(a("0000:00:04.0"), true);
        let e = fs.write(&d.join("driver/unbind"), b"0000:00:04.0").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBUSY));
        h.set_device_open(a("0000:00:04.0"), false);
        fs.write(&d.join("driver/unbind"), b"0000:00:04.0").unwrap();
        // Bind to the native driver is refused while the override names another.
        let e = fs.write(p("/sys/bus/pci/drivers/edu/bind"), b"0000:00:04.0").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODEV));
        fs.write(&d.join("driver_override"), b"\n").unwrap();
        assert_eq!(fs.read_string(&d.join("driver_override")).unwrap(), "(null)");
        fs.write(p("/sys/bus/pci/drivers/edu/bind"), b"0000:00:04.0").unwrap();
        assert_eq!(h.state().devices[&a("0000:00:04.0")].driver.as_deref(), Some("edu"));
        let e = fs.write(p("/sys/bus/pci/drivers/edu/bind"), b"0000:00:04.0").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBUSY));
        let e = fs.write(p("/sys/bus/pci/drivers_probe"), b"0000:09:00.0").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODEV));
        assert_eq!(h.state().devices[&a("0000:00:04.0")].vfio_index, None);
    }

    #[test]
    fn new_id_binds_every_matching_driverless_device() {
        let h = MockHost::new([
            DeviceSpec::edu("0000:00:04.0").group(1),
            DeviceSpec::edu("0000:00:05.0").group(2),
        ])
        .with_sys(|s| s.load_vfio());
        let fs = h.fs();
        fs.write(p("/sys/bus/pci/drivers/vfio-pci/new_id"), b"1234 11e8").unwrap();
        assert!(h.state().devices.values().all(|d| d.driver.as_deref() == Some("vfio-pci")));
        let e = fs.write(p("/sys/bus/pci/drivers/vfio-pci/new_id"), b"1234 11e8").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        fs.write(p("/sys/bus/pci/drivers/vfio-pci/remove_id"), b"1234 11e8").unwrap();
    }

    #[test]
    fn vfio_pci_does_not_take_bridges() {
        let h = MockHost::new([DeviceSpec::bridge("0000:00:1c.0").group(2)])
            .with_sys(|s| s.load_vfio());
        let fs = h.fs();
        let d = p("/sys/bus/pci/devices/0000:00:1c.0");
        fs.write(&d.join("driver_override"), b"vfio-pci").unwrap();
        fs.write(p("/sys/bus/pci/drivers_probe"), b"0000:00:1c.0").unwrap();
        assert!(!fs.exists(&d.join("driver")));
        let e = fs.write(p("/sys/bus/pci/drivers/vfio-pci/bind"), b"0000:00:1c.0").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }
}
