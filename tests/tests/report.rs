//! The conformance report format: parsing, round trip, and diffs.

use vfio_tests::conformance::Report;

#[test]
fn expected_files_parse_and_round_trip() {
    for mode in ["type1v2", "type1", "iommufd", "noiommu"] {
        let path = format!("{}/conformance/edu-{mode}.expected", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let r = Report::parse(&text);
        assert!(r.lines.len() > 50, "{path}: {} lines", r.lines.len());
        assert_eq!(r.lines[0], ("open".to_string(), mode.to_string()));
        assert_eq!(Report::parse(&r.text()), r);
    }
}

#[test]
fn diff_names_each_disagreement() {
    let a = Report::parse("open = type1v2\ndma.map = ok\nirq.msi.fired = 1\n");
    let b = Report::parse("# comment\nopen = type1v2\ndma.map = err EEXIST\n");
    let d = a.diff(&b);
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(d[0].contains("dma.map: got ok, expected err EEXIST"));
    assert!(d[1].contains("line 3"));
    assert!(a.diff(&a).is_empty());
}
