//! Inputs found by the fuzz targets (fuzz/), kept as regression tests. Each case names
//! the target that found it and what went wrong.

use vfio_core::host::pci_ids::PciIds;

/// Found by `pci_ids`: class lines directly followed by other class text ("C 1C 0"),
/// CR line ends and bytes that are not UTF-8. The check that failed compared two
/// parses by their debug text, which depends on hash order; the invariant kept is that
/// every name a lookup returns comes from the input.
#[test]
fn pci_ids_class_lines_run_together() {
    let data: &[u8] = b"]\n\n\n\n\n]\n\n\n\n\n\nC 1C 0\nC 0C p\n\n\n\n\n\n\n\x99\n\n\n\n\nC 0C0\n\n\n\n\n\n\r\n\n\n\n\nC 0C0\n\n\n\n\n\n\x99\n(\xef\x0b\n\n\n";
    let text = String::from_utf8_lossy(data);
    let ids = PciIds::parse(&text);
    for c in 0..=0xffu32 {
        if let Some(n) = ids.class(c << 16) {
            assert!(text.contains(n), "{n:?}");
        }
    }
    // "C 1C 0" is class 0x1c named "0"; "C 0C p" is class 0x0c named "p".
    assert_eq!(ids.class(0x1c0000), Some("0"));
    assert_eq!(ids.class(0x0c0000), Some("p"));
    // A parse is the same every time.
    let again = PciIds::parse(&text);
    for c in 0..=0xffu32 {
        assert_eq!(ids.class(c << 16), again.class(c << 16));
    }
}

/// Found by `iova`: kernel ranges that touch (one ends at 0x1ff..ff, the next starts at
/// 0x200..00) were merged into one free interval, so an allocation could straddle them,
/// which the kernel refuses (a mapping must lie inside one range).
#[test]
fn iova_allocations_stay_inside_one_range() {
    use vfio_core::info::IovaRange;
    use vfio_core::iova::IovaAllocator;
    let ranges = [
        IovaRange { start: 0xf_ffff_ffff, last: 0xc0c0_c0c0_c0df },
        IovaRange { start: 0x00ff_ffff_fff0_0007, last: 0x01ff_ffff_ffff_ffff },
        IovaRange { start: 0x0200_0000_0000_0000, last: u64::MAX },
    ];
    let mut a = IovaAllocator::new(&ranges, 0x8000);
    let size = 0x7e00_0000_0000_0900;
    if let Some(iova) = a.alloc(size, 0) {
        let last = iova + (size.div_ceil(0x8000) * 0x8000 - 1);
        assert!(ranges.iter().any(|r| r.start <= iova && last <= r.last), "{iova:#x}");
    }
}

/// Found by `cmdline`: a vertical tab (white space to `split_whitespace`, not to
/// `u8::is_ascii_whitespace`) after a `by-label/` name. The redaction took it and the
/// next parameter as part of the name, so two parameters became one; values now end at
/// white space as the readers split on it.
#[test]
fn cmdline_redaction_ends_values_at_unicode_white_space() {
    use vfio_core::host::doctor::parse_cmdline;
    use vfio_core::host::redact;
    let data: &[u8] = &[
        61, 48, 61, 46, 1, 0, 0, 14, 109, 109, 116, 0, 0, 98, 121, 45, 108, 97, 98, 101, 108, 47,
        117, 61, 11, 116, 0, 0, 98, 121, 45, 108, 97, 98, 101, 108, 47, 0,
    ];
    let text = String::from_utf8_lossy(data);
    let r = redact::cmdline(&text);
    assert_eq!(r.split_whitespace().count(), text.split_whitespace().count(), "{r:?}");
    assert_eq!(parse_cmdline(&r), parse_cmdline(&text));
    for ws in ["\u{b}", "\u{85}", "\u{a0}", "\u{3000}"] {
        let c = format!("root=UUID=abc{ws}iommu=pt");
        let r = redact::cmdline(&c);
        assert_eq!(r, format!("root=UUID=redacted{ws}iommu=pt"));
        assert!(parse_cmdline(&r).passthrough);
    }
}

/// Found by `vpd`: a VPD-R resource whose last field is an `RV` of length 0 at the very end
/// of the bytes. The checksum was summed through the byte after the field, past the end
/// (an index out of bounds). An empty `RV` has no checksum byte: the checksum is not ok.
#[test]
fn vpd_empty_rv_at_the_end() {
    let v = vfio_core::pci::vpd::decode(&[0x90, 9, 0, 208, 254, 0, 0, 0, 0, 82, 86, 0]);
    assert_eq!(v.checksum_ok, Some(false));
    assert_eq!(v.fields.last().map(|f| (f.keyword.as_str(), f.length)), Some(("RV", 0)));
    assert!(v.problem.is_some(), "no end tag: {v:?}");
}
