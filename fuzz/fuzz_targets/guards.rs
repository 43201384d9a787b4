//! Fuzzes the `/proc` readers of the guards (routes, IPv6 routes and addresses, mounts,
//! swaps, the partition matcher) and the snapshot's redaction of those files, which must
//! leave every answer of the guards as it was.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfio_core::host::guards::{
    is_on_disk, parse_if_inet6, parse_mounts, parse_routes_v4, parse_routes_v6, parse_swaps,
};
use vfio_core::host::redact;

fn token_of(text: &str, s: &str) -> bool {
    !s.is_empty() && !s.contains(char::is_whitespace) && text.contains(s)
}

fuzz_target!(|data: &[u8]| {
    let (blk, rest) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"sda"[..], data),
    };
    let blk = String::from_utf8_lossy(blk);
    let text = String::from_utf8_lossy(rest);
    let lines = text.lines().count();

    let v4 = parse_routes_v4(&text);
    let v6 = parse_routes_v6(&text);
    let inet6 = parse_if_inet6(&text);
    let mounts = parse_mounts(&text);
    let swaps = parse_swaps(&text);
    assert!(v4.len() < lines.max(1) && swaps.len() < lines.max(1));
    assert!(v6.len() <= lines && inet6.len() <= lines && mounts.len() <= lines);
    for (i, _) in v4.iter().chain(&v6) {
        assert!(token_of(&text, i));
    }
    for (i, _) in &v6 {
        assert_ne!(i, "lo");
    }
    for i in &inet6 {
        assert!(token_of(&text, i));
    }
    for (s, d) in &mounts {
        assert!(token_of(&text, s) && token_of(&text, d));
    }
    for s in &swaps {
        assert!(token_of(&text, s));
    }
    for (s, _) in &mounts {
        if is_on_disk(s, &blk) {
            assert!(s.starts_with(&format!("/dev/{blk}")));
        }
    }

    // Redaction keeps what the guards read.
    assert_eq!(parse_routes_v4(&redact::routes_v4(&text)), v4);
    assert_eq!(parse_routes_v6(&redact::routes_v6(&text)), v6);
    assert_eq!(parse_if_inet6(&redact::if_inet6(&text)), inet6);
    let rm = parse_mounts(&redact::mounts(&text));
    assert_eq!(rm.len(), mounts.len());
    for ((s, d), (rs, rd)) in mounts.iter().zip(&rm) {
        assert_eq!(is_on_disk(s, &blk), is_on_disk(rs, &blk));
        if s.starts_with("/dev/") {
            assert_eq!(s, rs);
        }
        if redact::KEPT_MOUNT_POINTS.contains(&d.as_str()) {
            assert_eq!(d, rd);
        }
    }
    let rs = parse_swaps(&redact::swaps(&text));
    assert_eq!(rs.len(), swaps.len());
    for (s, r) in swaps.iter().zip(&rs) {
        assert_eq!(is_on_disk(s, &blk), is_on_disk(r, &blk));
    }
});
