//! The conformance report format: parsing, round trip, and diffs.

use vfio_tests::conformance::Report;

/// Every recorded file: `(series, mode, path)`.
fn recorded() -> Vec<(String, String, std::path::PathBuf)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance");
    let mut out = Vec::new();
    for series in std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()) {
        for f in std::fs::read_dir(&series).unwrap().map(|e| e.unwrap().path()) {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            let mode = name.strip_prefix("edu-").and_then(|n| n.strip_suffix(".expected"));
            let mode = mode.unwrap_or_else(|| panic!("{}: not edu-<mode>.expected", f.display()));
            let s = series.file_name().unwrap().to_string_lossy().into_owned();
            out.push((s, mode.to_string(), f));
        }
    }
    out.sort();
    out
}

#[test]
fn expected_files_parse_and_round_trip() {
    let files = recorded();
    assert!(files.iter().any(|(s, _, _)| s == "6.12"), "{files:?}");
    for (series, mode, path) in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let r = Report::parse(&text);
        let path = path.display();
        assert!(r.lines.len() > 50, "{path}: {} lines", r.lines.len());
        // The compat container's modes open as the container modes they imitate.
        let opened = mode.strip_prefix("compat-").unwrap_or(&mode);
        assert_eq!(r.lines[0], ("open".to_string(), opened.to_string()), "{path}");
        assert_eq!(Report::parse(&r.text()), r);
        // Where the answers came from: the kernel release of this series and the QEMU.
        let source = text.lines().next().unwrap_or_default();
        assert!(source.starts_with(&format!("# source: Linux {series}.")), "{path}: {source}");
        assert!(
            source.contains(", QEMU ") && source.ends_with(&format!("; mode {mode}")),
            "{path}: {source}"
        );
    }
}

#[test]
fn series_and_file_names() {
    use vfio_tests::conformance::{file_name, series};
    assert_eq!(series("6.12.117+deb12-amd64").as_deref(), Some("6.12"));
    assert_eq!(series("7.2.13").as_deref(), Some("7.2"));
    assert_eq!(series("garbage"), None);
    assert_eq!(file_name("7.2", "compat-type1"), "7.2/edu-compat-type1.expected");
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
