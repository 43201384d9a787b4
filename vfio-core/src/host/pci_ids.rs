//! The `pci.ids` database: vendor, device, subsystem and class names.
//!
//! [`PciIds::parse`] is a pure parser over the file's text; [`PciIds::load`] reads the
//! first of the usual locations through a [`HostFs`]. Lookups that find nothing return
//! `None`, and callers show the numeric ids instead.

use std::collections::HashMap;
use std::path::Path;

use crate::hostfs::HostFs;

/// Where distributions install `pci.ids`, in the order tried.
pub const PCI_IDS_PATHS: [&str; 3] =
    ["/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids", "/usr/share/pci.ids"];

/// Parsed `pci.ids`.
#[derive(Debug, Default, Clone)]
pub struct PciIds {
    vendors: HashMap<u16, String>,
    devices: HashMap<(u16, u16), String>,
    subsystems: HashMap<(u16, u16, u16, u16), String>,
    classes: HashMap<u8, String>,
    subclasses: HashMap<(u8, u8), String>,
    prog_ifs: HashMap<(u8, u8, u8), String>,
}

fn split_id(line: &str, digits: usize) -> Option<(u32, &str)> {
    let id = line.get(..digits)?;
    let v = u32::from_str_radix(id, 16).ok()?;
    let rest = line.get(digits..)?;
    if !rest.starts_with(' ') {
        return None;
    }
    Some((v, rest.trim()))
}

/// The largest `pci.ids` read (today's file is under 2 MiB); a larger one is ignored.
pub const PCI_IDS_CAP: usize = 32 << 20;

impl PciIds {
    /// Parses the text of a `pci.ids` file. Malformed lines are skipped.
    pub fn parse(text: &str) -> Self {
        let mut ids = PciIds::default();
        let mut vendor: Option<u16> = None;
        let mut device: Option<u16> = None;
        let mut class: Option<u8> = None;
        let mut subclass: Option<u8> = None;
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("C ") {
                vendor = None;
                device = None;
                subclass = None;
                class = split_id(rest, 2).map(|(c, name)| {
                    ids.classes.insert(c as u8, name.to_string());
                    c as u8
                });
            } else if let Some(rest) = line.strip_prefix("\t\t") {
                if let (Some(c), Some(s)) = (class, subclass) {
                    if let Some((p, name)) = split_id(rest, 2) {
                        ids.prog_ifs.insert((c, s, p as u8), name.to_string());
                    }
                } else if let (Some(v), Some(d)) = (vendor, device) {
                    let mut it = rest.splitn(3, ' ');
                    let sv = it.next().and_then(|x| u16::from_str_radix(x, 16).ok());
                    let sd = it.next().and_then(|x| u16::from_str_radix(x, 16).ok());
                    if let (Some(sv), Some(sd), Some(name)) = (sv, sd, it.next()) {
                        ids.subsystems.insert((v, d, sv, sd), name.trim().to_string());
                    }
                }
            } else if let Some(rest) = line.strip_prefix('\t') {
                if let Some(c) = class {
                    subclass = split_id(rest, 2).map(|(s, name)| {
                        ids.subclasses.insert((c, s as u8), name.to_string());
                        s as u8
                    });
                } else if let Some(v) = vendor {
                    device = split_id(rest, 4).map(|(d, name)| {
                        ids.devices.insert((v, d as u16), name.to_string());
                        d as u16
                    });
                }
            } else {
                class = None;
                subclass = None;
                device = None;
                vendor = split_id(line, 4).map(|(v, name)| {
                    ids.vendors.insert(v as u16, name.to_string());
                    v as u16
                });
            }
        }
        ids
    }

    /// Loads the first `pci.ids` found in [`PCI_IDS_PATHS`]; an empty database when none.
    pub fn load(fs: &dyn HostFs) -> Self {
        for p in PCI_IDS_PATHS {
            if let Ok(bytes) = fs.read_limited(Path::new(p), PCI_IDS_CAP) {
                return PciIds::parse(&String::from_utf8_lossy(&bytes));
            }
        }
        PciIds::default()
    }

    /// Whether nothing was loaded.
    pub fn is_empty(&self) -> bool {
        self.vendors.is_empty() && self.classes.is_empty()
    }

    /// A vendor's name.
    pub fn vendor(&self, vendor: u16) -> Option<&str> {
        self.vendors.get(&vendor).map(String::as_str)
    }

    /// A device's name.
    pub fn device(&self, vendor: u16, device: u16) -> Option<&str> {
        self.devices.get(&(vendor, device)).map(String::as_str)
    }

    /// A subsystem's name.
    pub fn subsystem(&self, vendor: u16, device: u16, sv: u16, sd: u16) -> Option<&str> {
        self.subsystems.get(&(vendor, device, sv, sd)).map(String::as_str)
    }

    /// The name of a 24-bit class code as lspci shows it: the subclass's name, else the
    /// base class's. The programming interface has its own name: [`PciIds::prog_if`].
    pub fn class(&self, class: u32) -> Option<&str> {
        let (c, s) = ((class >> 16) as u8, (class >> 8) as u8);
        self.subclasses.get(&(c, s)).or_else(|| self.classes.get(&c)).map(String::as_str)
    }

    /// The prog-if name of a class code.
    pub fn prog_if(&self, class: u32) -> Option<&str> {
        self.prog_ifs
            .get(&((class >> 16) as u8, (class >> 8) as u8, class as u8))
            .map(String::as_str)
    }
}

#[cfg(all(test, feature = "mock"))]
mod tests {
    use super::*;

    const SAMPLE: &str = "# comment\n\
8086  Intel Corporation\n\
\t10c9  82576 Gigabit Network Connection\n\
\t\t8086 a03c  Ethernet Server Adapter I340-T4\n\
1234  Technical Corp.\n\
\t11e8  QEMU edu\n\
C 01  Mass storage controller\n\
\t08  Non-Volatile memory controller\n\
\t\t02  NVM Express\n\
C 02  Network controller\n";

    #[test]
    fn parses_vendors_devices_subsystems_and_classes() {
        let ids = PciIds::parse(SAMPLE);
        assert_eq!(ids.vendor(0x8086), Some("Intel Corporation"));
        assert_eq!(ids.device(0x8086, 0x10c9), Some("82576 Gigabit Network Connection"));
        assert_eq!(
            ids.subsystem(0x8086, 0x10c9, 0x8086, 0xa03c),
            Some("Ethernet Server Adapter I340-T4")
        );
        assert_eq!(ids.device(0x1234, 0x11e8), Some("QEMU edu"));
        assert_eq!(ids.class(0x010802), Some("Non-Volatile memory controller"));
        assert_eq!(ids.prog_if(0x010802), Some("NVM Express"));
        assert_eq!(ids.class(0x020000), Some("Network controller"));
        assert_eq!(ids.class(0x030000), None);
        assert_eq!(ids.vendor(0x10de), None);
    }

    #[test]
    fn malformed_lines_are_skipped_and_load_falls_back() {
        let ids = PciIds::parse("zzzz  bad\n\tqq bad\n8086x\n");
        assert!(ids.is_empty());
        let h = crate::mock::MockHost::new([]).with_sys(|s| {
            s.files.insert("/usr/share/hwdata/pci.ids".into(), SAMPLE.as_bytes().to_vec());
        });
        assert_eq!(PciIds::load(&*h.fs()).vendor(0x1234), Some("Technical Corp."));
        assert!(PciIds::load(&*crate::mock::MockHost::new([]).fs()).is_empty());
    }
}
