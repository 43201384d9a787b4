//! How sysfs names mediated devices: an instance is a UUID, written to a type's
//! `create` and listed under `/sys/bus/mdev/devices`.
//!
//! Pure, so that both the host layer (which checks a UUID before writing it) and the
//! simulated sysfs (which refuses a malformed one as the kernel does) use the same rule.

/// Whether `s` is a UUID in its 8-4-4-4-12 hexadecimal form (how mdev instances are
/// named).
pub fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_five_groups_of_hex_digits() {
        assert!(is_uuid("83b8f4f2-509f-382f-3c1e-e6bfe0fa1001"));
        assert!(is_uuid("83B8F4F2-509F-382F-3C1E-E6BFE0FA1001"));
        assert!(!is_uuid("83b8f4f2-509f-382f-3c1e"));
        assert!(!is_uuid("83b8f4f2-509f-382f-3c1e-e6bfe0fa100"));
        assert!(!is_uuid("83b8f4f2-509f-382f-3c1e-e6bfe0fa100g"));
        assert!(!is_uuid("nope"));
    }
}
