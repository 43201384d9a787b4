//! sysfs `resource`: the BAR, ROM and window ranges the kernel assigned, one line each.

use super::error::DecodeError;

/// One line of sysfs `resource`: start, end and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ResourceLine {
    /// First address.
    pub start: u64,
    /// Last address.
    pub end: u64,
    /// Kernel resource flags.
    pub flags: u64,
}

impl ResourceLine {
    /// Size in bytes; 0 when the resource is unused.
    pub fn size(&self) -> u64 {
        if self.start == 0 && self.end == 0 {
            0
        } else {
            self.end.wrapping_sub(self.start).wrapping_add(1)
        }
    }
}

/// Parses sysfs `resource` (one `0x%016llx 0x%016llx 0x%016llx` line per resource:
/// BARs 0-5, the ROM, then bridge windows).
pub fn parse_sysfs_resource(text: &str) -> Result<Vec<ResourceLine>, DecodeError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: &str| DecodeError {
            what: "sysfs resource line",
            input: line.to_string(),
            reason: format!("line {}: {reason}; expected three hex numbers", n + 1),
        };
        let nums: Vec<u64> = line
            .split_whitespace()
            .map(|f| {
                let h = f.strip_prefix("0x").unwrap_or(f);
                u64::from_str_radix(h, 16).map_err(|_| bad(&format!("{f:?} is not hex")))
            })
            .collect::<Result<_, _>>()?;
        if nums.len() != 3 {
            return Err(bad(&format!("{} fields", nums.len())));
        }
        out.push(ResourceLine { start: nums[0], end: nums[1], flags: nums[2] });
    }
    Ok(out)
}
