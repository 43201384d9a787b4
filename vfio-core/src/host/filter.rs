//! Device selection as `lspci` and OpenNebula's PCI filters express it.
//!
//! - `-d vendor:device[:class[:prog-if]]`, hexadecimal, each field empty or `*` for any;
//!   the class is 2 (class), 4 (class and subclass) or 6 (with prog-if) digits;
//! - an address: full `0000:01:00.0`, short `01:00.0`, or a slot `01:00` (all functions);
//! - a case-insensitive regular expression over the vendor and device names.

use crate::error::{Error, Result};
use crate::host::devices::PciDevice;
use crate::pci::PciAddress;

/// A `-d vendor:device[:class]` filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdFilter {
    /// Vendor id, or any.
    pub vendor: Option<u16>,
    /// Device id, or any.
    pub device: Option<u16>,
    /// Class bits and how many high bits of the 24-bit code they cover (8, 16 or 24).
    pub class: Option<(u32, u8)>,
}

impl IdFilter {
    /// Parses `vendor:device[:class[:prog-if]]`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |reason: String| {
            Error::Invalid {
            what: "device filter",
            input: s.to_string(),
            reason: format!("{reason}; expected vendor:device[:class] in hex, '*' or empty for any, e.g. 10de:*:0300"),
        }
        };
        let f: Vec<&str> = s.split(':').collect();
        if f.len() < 2 || f.len() > 4 {
            return Err(bad("wrong number of ':'-separated fields".into()));
        }
        let field = |x: &str, max_digits: usize, name: &str| -> Result<Option<u32>> {
            if x.is_empty() || x == "*" {
                return Ok(None);
            }
            if x.len() > max_digits || !x.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad(format!(
                    "{name} {x:?} is not a hex number of at most {max_digits} digits"
                )));
            }
            Ok(Some(u32::from_str_radix(x, 16).map_err(|_| bad(name.into()))?))
        };
        let vendor = field(f[0], 4, "vendor")?.map(|v| v as u16);
        let device = field(f[1], 4, "device")?.map(|v| v as u16);
        let mut class = match f.get(2) {
            None => None,
            Some(c) => match field(c, 6, "class")? {
                None => None,
                Some(v) => match c.len() {
                    2 => Some((v << 16, 8)),
                    4 => Some((v << 8, 16)),
                    6 => Some((v, 24)),
                    _ => return Err(bad(format!("class {c:?} must have 2, 4 or 6 digits"))),
                },
            },
        };
        if let Some(p) = f.get(3) {
            if let Some(pv) = field(p, 2, "prog-if")? {
                let (c, bits) = class.ok_or_else(|| bad("a prog-if needs a class".into()))?;
                if bits != 16 {
                    return Err(bad("a prog-if needs a 4-digit class".into()));
                }
                class = Some((c | pv, 24));
            }
        }
        Ok(IdFilter { vendor, device, class })
    }

    /// Whether a device matches.
    pub fn matches(&self, d: &PciDevice) -> bool {
        self.vendor.is_none_or(|v| v == d.vendor)
            && self.device.is_none_or(|v| v == d.device)
            && self.class.is_none_or(|(c, bits)| {
                let mask = (0xffffffu32 << (24 - bits)) & 0xffffff;
                d.class & mask == c & mask
            })
    }
}

/// An address or a whole slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressFilter {
    /// One function.
    Function(PciAddress),
    /// Every function of a slot (domain, bus, device).
    Slot(u32, u8, u8),
}

impl AddressFilter {
    /// Parses `0000:01:00.0`, `01:00.0`, `0000:01:00` or `01:00`.
    pub fn parse(s: &str) -> Result<Self> {
        if s.contains('.') {
            return Ok(AddressFilter::Function(PciAddress::parse(s)?));
        }
        let a = PciAddress::parse(&format!("{s}.0")).map_err(|_| Error::Invalid {
            what: "PCI address",
            input: s.to_string(),
            reason: "expected DDDD:BB:DD.F, BB:DD.F, or a slot BB:DD for all its functions".into(),
        })?;
        Ok(AddressFilter::Slot(a.domain, a.bus, a.device))
    }

    /// Whether an address matches.
    pub fn matches(&self, a: PciAddress) -> bool {
        match *self {
            AddressFilter::Function(f) => f == a,
            AddressFilter::Slot(d, b, s) => (a.domain, a.bus, a.device) == (d, b, s),
        }
    }
}

/// A case-insensitive regular expression over "vendor device" names (and numeric ids).
#[derive(Debug, Clone)]
pub struct NameFilter(regex::Regex);

impl NameFilter {
    /// Compiles the expression, case-insensitively.
    pub fn parse(s: &str) -> Result<Self> {
        regex::RegexBuilder::new(s).case_insensitive(true).build().map(NameFilter).map_err(|e| {
            Error::Invalid {
                what: "name regular expression",
                input: s.to_string(),
                reason: e
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or("does not compile")
                    .trim()
                    .to_string(),
            }
        })
    }

    /// Whether a device's names (or ids) match.
    pub fn matches(&self, d: &PciDevice) -> bool {
        self.0.is_match(&d.name())
            || d.class_name.as_deref().is_some_and(|c| self.0.is_match(c))
            || self.0.is_match(&d.ids())
    }
}

/// A conjunction of filters: every given kind must match (addresses: any of them).
#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    /// `-d` filters (any of them).
    pub ids: Vec<IdFilter>,
    /// Addresses (any of them).
    pub addresses: Vec<AddressFilter>,
    /// Name expressions (any of them).
    pub names: Vec<NameFilter>,
}

impl DeviceFilter {
    /// Whether a device passes.
    pub fn matches(&self, d: &PciDevice) -> bool {
        (self.ids.is_empty() || self.ids.iter().any(|f| f.matches(d)))
            && (self.addresses.is_empty() || self.addresses.iter().any(|f| f.matches(d.address)))
            && (self.names.is_empty() || self.names.iter().any(|f| f.matches(d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(addr: &str, v: u16, d: u16, class: u32, name: Option<&str>) -> PciDevice {
        PciDevice {
            address: PciAddress::parse(addr).unwrap(),
            vendor: v,
            device: d,
            subsystem_vendor: 0,
            subsystem_device: 0,
            class,
            vendor_name: name.map(|_| "NVIDIA Corporation".into()),
            device_name: name.map(str::to_string),
            class_name: None,
            driver: None,
            driver_override: None,
            iommu_group: None,
            pci_bridge: false,
            isolated: None,
            group_peers: vec![],
        }
    }

    #[test]
    fn id_filters_with_wildcards_and_class() {
        let gpu = dev("01:00.0", 0x10de, 0x1b80, 0x030000, Some("GP104 [GeForce GTX 1080]"));
        let audio = dev("01:00.1", 0x10de, 0x10f0, 0x040300, None);
        let f = IdFilter::parse("10de:*:0300").unwrap();
        assert!(f.matches(&gpu) && !f.matches(&audio));
        let f = IdFilter::parse("10de::").unwrap();
        assert!(f.matches(&gpu) && f.matches(&audio));
        assert!(IdFilter::parse(":10f0").unwrap().matches(&audio));
        assert!(IdFilter::parse("*:*:04").unwrap().matches(&audio));
        assert!(IdFilter::parse("*:*:0403:00").unwrap().matches(&audio));
        assert!(!IdFilter::parse("*:*:0403:01").unwrap().matches(&audio));
        for bad in ["10de", "10dex:1", "1:2:3:4:5", "1:2:123", "1:2::5"] {
            assert!(
                IdFilter::parse(bad).unwrap_err().to_string().contains("device filter"),
                "{bad}"
            );
        }
    }

    #[test]
    fn addresses_slots_and_names() {
        let gpu = dev("0000:01:00.0", 0x10de, 0x1b80, 0x030000, Some("GP104 [GeForce GTX 1080]"));
        let audio = dev("0000:01:00.1", 0x10de, 0x10f0, 0x040300, None);
        let slot = AddressFilter::parse("01:00").unwrap();
        assert!(slot.matches(gpu.address) && slot.matches(audio.address));
        let one = AddressFilter::parse("01:00.1").unwrap();
        assert!(!one.matches(gpu.address) && one.matches(audio.address));
        assert!(AddressFilter::parse("01").is_err());
        let n = NameFilter::parse("geforce").unwrap();
        assert!(n.matches(&gpu) && !n.matches(&audio));
        assert!(NameFilter::parse("(").is_err());
        let f = DeviceFilter { addresses: vec![slot], names: vec![n], ..Default::default() };
        assert!(f.matches(&gpu) && !f.matches(&audio));
    }
}
