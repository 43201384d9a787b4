//! Vital Product Data: the resource list a device returns through its VPD capability
//! (sysfs `vpd`): the identifier string (product name), the read-only fields (part
//! number, serial number, ...; `RV` holds the checksum) and the read-write fields.
//!
//! A pure decoder over the bytes: it stops at the end tag, at the end of the buffer, or
//! at the first resource that does not fit, and says which.

use crate::bytes::le_u16;

/// Which section a field is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum VpdSection {
    /// VPD-R (tag 0x90).
    ReadOnly,
    /// VPD-W (tag 0x91).
    ReadWrite,
}

/// One keyword field.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct VpdField {
    /// The two-character keyword ("PN", "SN", "V0", ...).
    pub keyword: String,
    /// What the keyword means, when the specification names it.
    pub name: Option<&'static str>,
    /// The section.
    pub section: VpdSection,
    /// The value as text (non-printable bytes as `.`); `RV` and `RW` hold no text.
    pub value: String,
    /// The value's length in bytes.
    pub length: u8,
}

/// A decoded VPD resource list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Vpd {
    /// The identifier string (tag 0x82): the product name.
    pub product_name: Option<String>,
    /// Keyword fields in order.
    pub fields: Vec<VpdField>,
    /// Whether the `RV` checksum makes the bytes up to it sum to zero (`None`: no `RV`).
    pub checksum_ok: Option<bool>,
    /// Whether the end tag (0x78) was reached.
    pub complete: bool,
    /// Why decoding stopped early, if it did.
    pub problem: Option<String>,
}

impl Vpd {
    /// The value of the first field with `keyword`.
    pub fn field(&self, keyword: &str) -> Option<&str> {
        self.fields.iter().find(|f| f.keyword == keyword).map(|f| f.value.as_str())
    }
}

/// The meaning of a keyword (PCI Local Bus 3.0 / PCIe 6.2.3).
pub fn keyword_name(k: &str) -> Option<&'static str> {
    Some(match k {
        "PN" => "Part number",
        "EC" => "Engineering changes",
        "FG" => "Fabric geography",
        "LC" => "Location",
        "MN" => "Manufacture ID",
        "PG" => "PCI geography",
        "SN" => "Serial number",
        "CP" => "Extended capability",
        "RV" => "Reserved",
        "YA" => "Asset tag",
        "RW" => "Read-write area",
        _ if k.starts_with('V') => "Vendor specific",
        _ if k.starts_with('Y') => "System specific",
        _ => return None,
    })
}

fn text(b: &[u8]) -> String {
    b.iter().map(|&c| if (0x20..0x7f).contains(&c) { c as char } else { '.' }).collect()
}

/// Decodes a VPD resource list (at most 32 KiB are looked at). Never fails: damage ends
/// the decode with [`Vpd::problem`] set.
pub fn decode(bytes: &[u8]) -> Vpd {
    let bytes = &bytes[..bytes.len().min(0x8000)];
    let mut vpd = Vpd::default();
    let mut pos = 0usize;
    while let Some(&tag) = bytes.get(pos) {
        if tag & 0x80 == 0 {
            // Small resource: name in bits 3-6, length in bits 0-2.
            if (tag >> 3) & 0xf == 0xf {
                vpd.complete = true;
                return vpd;
            }
            pos += 1 + usize::from(tag & 7);
            continue;
        }
        let Some(len) = le_u16(bytes, pos + 1).map(usize::from) else {
            vpd.problem = Some(format!("resource at {pos:#x} has no length"));
            return vpd;
        };
        let start = pos + 3;
        let Some(body) = bytes.get(start..start + len) else {
            vpd.problem = Some(format!(
                "resource {tag:#04x} at {pos:#x} claims {len} bytes, {} remain",
                bytes.len().saturating_sub(start)
            ));
            return vpd;
        };
        match tag {
            0x82 => vpd.product_name = Some(text(body)),
            0x90 | 0x91 => {
                let section =
                    if tag == 0x90 { VpdSection::ReadOnly } else { VpdSection::ReadWrite };
                if let Err(p) = fields(bytes, start, len, section, &mut vpd) {
                    vpd.problem = Some(p);
                    return vpd;
                }
            }
            _ => {}
        }
        pos = start + len;
    }
    vpd.problem = Some("no end tag".into());
    vpd
}

/// The keyword fields of a VPD-R or VPD-W resource at `start` (`len` bytes) of `all`.
fn fields(
    all: &[u8],
    start: usize,
    len: usize,
    section: VpdSection,
    vpd: &mut Vpd,
) -> Result<(), String> {
    let mut p = start;
    while p + 3 <= start + len {
        let kw = text(&all[p..p + 2]);
        let flen = all[p + 2];
        let Some(value) = all.get(p + 3..p + 3 + usize::from(flen)) else {
            return Err(format!("field {kw} at {p:#x} runs past the resource"));
        };
        if p + 3 + usize::from(flen) > start + len {
            return Err(format!("field {kw} at {p:#x} runs past the resource"));
        }
        if kw == "RV" && section == VpdSection::ReadOnly {
            // The checksum byte (the value's first) makes everything from offset 0
            // through it sum to zero; an empty RV has no checksum byte.
            let sum = |upto: &[u8]| upto.iter().fold(0u8, |s, b| s.wrapping_add(*b));
            vpd.checksum_ok = Some(flen > 0 && sum(&all[..p + 4]) == 0);
        }
        let raw = matches!(kw.as_str(), "RV" | "RW");
        vpd.fields.push(VpdField {
            name: keyword_name(&kw),
            keyword: kw,
            section,
            value: if raw { String::new() } else { text(value) },
            length: flen,
        });
        p += 3 + usize::from(flen);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VPD image: identifier, VPD-R with PN, SN, V1 and a correct RV, VPD-W, end.
    fn sample() -> Vec<u8> {
        let mut v = vec![0x82, 11, 0];
        v.extend_from_slice(b"Example NIC");
        let mut r = Vec::new();
        for (k, val) in [("PN", &b"ABC-123"[..]), ("SN", b"SN0001"), ("V1", b"x\x01y")] {
            r.extend_from_slice(k.as_bytes());
            r.push(val.len() as u8);
            r.extend_from_slice(val);
        }
        r.extend_from_slice(b"RV");
        r.push(1);
        let rlen = (r.len() + 1) as u16;
        v.push(0x90);
        v.extend_from_slice(&rlen.to_le_bytes());
        v.extend_from_slice(&r);
        let sum = v.iter().fold(0u8, |s, b| s.wrapping_add(*b));
        v.push(0u8.wrapping_sub(sum));
        v.extend_from_slice(&[0x91, 5, 0, b'R', b'W', 2, 0, 0, 0x78]);
        v
    }

    #[test]
    fn decodes_product_name_fields_and_checksum() {
        let v = decode(&sample());
        assert_eq!(v.product_name.as_deref(), Some("Example NIC"));
        assert_eq!(v.field("PN"), Some("ABC-123"));
        assert_eq!(v.field("SN"), Some("SN0001"));
        assert_eq!(v.field("V1"), Some("x.y"));
        assert_eq!(v.fields[0].name, Some("Part number"));
        assert_eq!(v.checksum_ok, Some(true));
        assert!(v.complete && v.problem.is_none(), "{v:?}");
        let rw = v.fields.iter().find(|f| f.keyword == "RW").unwrap();
        assert_eq!((rw.section, rw.length), (VpdSection::ReadWrite, 2));
    }

    #[test]
    fn damage_ends_the_decode_without_panicking() {
        let mut bad = sample();
        bad[20] ^= 0xff; // inside PN: the checksum no longer holds
        assert_eq!(decode(&bad).checksum_ok, Some(false));
        let s = sample();
        for n in 0..s.len() {
            let v = decode(&s[..n]);
            assert!(!v.complete && v.problem.is_some(), "{n}: {v:?}");
        }
        let mut long = s.clone();
        long[1] = 0xff; // identifier claims 255 bytes
        assert!(decode(&long).problem.unwrap().contains("claims"));
        assert!(decode(&[]).problem.is_some());
    }
}
