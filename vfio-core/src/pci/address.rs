//! PCI addresses (`DDDD:BB:DD.F`).

use std::fmt;
use std::str::FromStr;

use super::error::DecodeError;

/// A PCI function address: domain, bus, device (slot) and function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(into = "String"))]
pub struct PciAddress {
    /// PCI domain (segment). Up to 32 bits (VMD domains are above 0xffff).
    pub domain: u32,
    /// Bus number.
    pub bus: u8,
    /// Device (slot) number, 0..=31.
    pub device: u8,
    /// Function number, 0..=7.
    pub function: u8,
}

impl PciAddress {
    /// An address from its parts; `None` when device > 31 or function > 7.
    pub fn new(domain: u32, bus: u8, device: u8, function: u8) -> Option<Self> {
        (device < 32 && function < 8).then_some(PciAddress { domain, bus, device, function })
    }

    /// Parses `DDDD:BB:DD.F` or the short `BB:DD.F` (domain 0), hexadecimal, any case.
    pub fn parse(s: &str) -> Result<Self, DecodeError> {
        let err = |reason: &str| DecodeError {
            what: "PCI address",
            input: s.to_string(),
            reason: format!("{reason}; expected DDDD:BB:DD.F such as 0000:01:00.0, or BB:DD.F"),
        };
        let (head, func) = s.rsplit_once('.').ok_or_else(|| err("no '.' before the function"))?;
        let parts: Vec<&str> = head.split(':').collect();
        let (dom, bus, dev) = match parts.as_slice() {
            [d, b, v] => (*d, *b, *v),
            [b, v] => ("0", *b, *v),
            _ => return Err(err("wrong number of ':'-separated fields")),
        };
        let hex = |field: &str, max: u64, name: &str, width: usize| -> Result<u64, DecodeError> {
            if field.is_empty()
                || field.len() > width
                || !field.chars().all(|c| c.is_ascii_hexdigit())
            {
                return Err(err(&format!(
                    "{name} {field:?} is not a hex number of at most {width} digits"
                )));
            }
            let v = u64::from_str_radix(field, 16).map_err(|_| err(name))?;
            if v > max {
                return Err(err(&format!("{name} {v:#x} is above {max:#x}")));
            }
            Ok(v)
        };
        Ok(PciAddress {
            domain: hex(dom, u32::MAX as u64, "domain", 8)? as u32,
            bus: hex(bus, 0xff, "bus", 2)? as u8,
            device: hex(dev, 0x1f, "device", 2)? as u8,
            function: hex(func, 7, "function", 1)? as u8,
        })
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}.{:x}", self.domain, self.bus, self.device, self.function)
    }
}

impl From<PciAddress> for String {
    fn from(a: PciAddress) -> String {
        a.to_string()
    }
}

impl FromStr for PciAddress {
    type Err = DecodeError;
    fn from_str(s: &str) -> Result<Self, DecodeError> {
        PciAddress::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_and_short_forms() {
        let a = PciAddress::parse("0000:01:00.0").unwrap();
        assert_eq!((a.domain, a.bus, a.device, a.function), (0, 1, 0, 0));
        assert_eq!(PciAddress::parse("01:1f.7").unwrap().to_string(), "0000:01:1f.7");
        assert_eq!(PciAddress::parse("10000:E3:00.1").unwrap().to_string(), "10000:e3:00.1");
    }

    #[test]
    fn refuses_malformed_addresses_with_a_reason() {
        for bad in [
            "",
            "0000:01:00",
            "0000:01:20.0",
            "0000:01:00.8",
            "zz:00.0",
            "0:0:0:0.0",
            "0000:100:00.0",
            "01:00.0 ",
        ] {
            let e = PciAddress::parse(bad).unwrap_err().to_string();
            assert!(e.contains("invalid PCI address"), "{bad}: {e}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["0000:00:04.0", "abcd:ff:1f.7"] {
            assert_eq!(PciAddress::parse(s).unwrap().to_string(), s);
        }
    }
}
