//! The `bench` report: its sections (one per measurement), the `--json` document, and the
//! text with a table of statistics and a histogram per measurement.

use serde::Serialize;
use vfio_core::Result;

use super::stats::{buckets, Bucket, Stats};
use crate::format::{human_size, Column, Table};

/// The `schema` value of `bench --json`.
pub const SCHEMA: &str = "vfiotool.bench/1";

/// One measurement of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    /// `mmio_read`, `mmio_write`, `dma_map`, `dma_unmap`, `irq_enable`, `irq_disable`,
    /// `irq_trigger`.
    pub name: String,
    /// What was measured, in words.
    pub what: String,
    /// The DMA size in bytes (`dma_*` only).
    pub size: Option<u64>,
    /// Statistics in nanoseconds; `null` when skipped or failed.
    pub stats: Option<Stats>,
    /// The histogram's power-of-two buckets.
    pub histogram: Vec<Bucket>,
    /// Why the measurement was not made (not asked for, nothing to measure).
    pub skipped: Option<String>,
    /// Why the measurement failed.
    pub error: Option<String>,
}

impl Section {
    /// A measurement not made yet.
    pub fn new(name: &str, what: String, size: Option<u64>) -> Self {
        Section {
            name: name.into(),
            what,
            size,
            stats: None,
            histogram: Vec::new(),
            skipped: None,
            error: None,
        }
    }

    /// With the statistics and histogram of the samples, or the error that stopped them.
    pub fn with_samples(mut self, r: Result<Vec<u64>>) -> Self {
        match r {
            Ok(s) => {
                self.stats = Stats::from_samples(&s);
                self.histogram = buckets(&s);
            }
            Err(e) => self.error = Some(e.to_string()),
        }
        self
    }

    /// Not made, for this reason.
    pub fn skipped(mut self, why: impl Into<String>) -> Self {
        self.skipped = Some(why.into());
        self
    }
}

/// The register measured.
#[derive(Debug, Clone, Serialize)]
pub struct Register {
    /// BAR index.
    pub bar: u32,
    /// Offset in the BAR.
    pub offset: u64,
    /// Access width in bits.
    pub width: u32,
    /// Accesses go through an mmap of the BAR (else pread/pwrite on the device fd).
    pub mapped: bool,
}

/// The whole `bench` report; serialized as the `bench --json` document.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// The device.
    pub address: String,
    /// The interface the device was opened through.
    pub interface: String,
    /// Operations per measurement.
    pub iterations: u32,
    /// The register of the MMIO measurements.
    pub register: Register,
    /// The interrupt index of the interrupt measurements: `INTx`, `MSI` or `MSI-X`
    /// (`null`: the device has none).
    pub irq_index: Option<&'static str>,
    /// The measurements, in the order made.
    pub sections: Vec<Section>,
}

/// A time in nanoseconds as `850ns`, `12.3us`, `4.56ms`, `1.20s`.
pub fn format_ns(ns: u64) -> String {
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}us", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2}ms", ns as f64 / 1e6)
    } else {
        format!("{:.2}s", ns as f64 / 1e9)
    }
}

/// Text lines of a histogram: the range, a bar of `#` scaled so that the fullest bucket
/// is `width` characters (a non-empty bucket gets at least one), and the count. A run of
/// two or more empty buckets is shown as one line over their whole range.
pub fn render_histogram(buckets: &[Bucket], width: usize) -> Vec<String> {
    let mut merged: Vec<Bucket> = Vec::with_capacity(buckets.len());
    for b in buckets {
        match merged.last_mut() {
            Some(prev) if prev.count == 0 && b.count == 0 => prev.hi = b.hi,
            _ => merged.push(*b),
        }
    }
    let buckets = &merged[..];
    let most = buckets.iter().map(|b| b.count).max().unwrap_or(0);
    let ranges: Vec<String> = buckets
        .iter()
        .map(|b| format!("{}-{}", format_ns(b.lo), format_ns(b.hi.saturating_add(1))))
        .collect();
    let w = ranges.iter().map(String::len).max().unwrap_or(0);
    buckets
        .iter()
        .zip(&ranges)
        .map(|(b, r)| {
            let n = if most == 0 || b.count == 0 { 0 } else { (b.count * width).div_ceil(most) };
            format!("{r:>w$} |{:<width$}| {}", "#".repeat(n), b.count)
        })
        .collect()
}

/// A progress bar line: `label [#####.....]  50%` with `width` cells.
pub fn progress_bar(label: &str, done: u64, total: u64, width: usize) -> String {
    let frac = if total == 0 { 1.0 } else { (done.min(total) as f64) / total as f64 };
    let filled = (frac * width as f64).round() as usize;
    format!(
        "{label} [{}{}] {:>3}%",
        "#".repeat(filled),
        ".".repeat(width - filled),
        (frac * 100.0).round() as u64
    )
}

/// The table of statistics: a row per measurement, or why it has none.
fn stats_table(sections: &[Section]) -> String {
    let mut t = Table::new(&[
        Column::left(12),
        Column::right(6),
        Column::right(9),
        Column::right(9),
        Column::right(9),
        Column::right(9),
        Column::right(9),
    ]);
    t.row(["measurement", "size", "min", "p50", "p99", "max", "mean"]);
    for s in sections {
        let (name, size) = (s.name.clone(), s.size.map(human_size).unwrap_or_default());
        match (&s.stats, &s.skipped, &s.error) {
            (Some(st), _, _) => t.row(
                [name, size]
                    .into_iter()
                    .chain([st.min, st.p50, st.p99, st.max, st.mean].into_iter().map(format_ns)),
            ),
            (None, Some(why), _) => t.row([name, size, format!("skipped: {why}")]),
            (None, None, Some(e)) => t.row([name, size, format!("failed: {e}")]),
            (None, None, None) => t.row([name, size, "no samples".into()]),
        }
    }
    t.render()
}

/// Renders the text report.
pub fn render(r: &BenchReport) -> String {
    let mut o = String::new();
    let reg = &r.register;
    o += &format!(
        "{} through {}, {} iterations per measurement\n",
        r.address, r.interface, r.iterations
    );
    o += &format!(
        "Register: BAR{}+{:#x}, {}-bit, {}\n",
        reg.bar,
        reg.offset,
        reg.width,
        if reg.mapped { "mmap'd" } else { "pread/pwrite on the device fd" }
    );
    if let Some(i) = r.irq_index {
        o += &format!("Interrupts: {i} vector 0\n");
    }
    o += "\n";
    o += &stats_table(&r.sections);
    for s in r.sections.iter().filter(|s| s.stats.is_some()) {
        let size = s.size.map(|x| format!(" {}", human_size(x))).unwrap_or_default();
        o += &format!("\n{}{size}: {}\n", s.name, s.what);
        for l in render_histogram(&s.histogram, 40) {
            o += &format!("  {l}\n");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bars_scale_to_the_fullest_bucket() {
        let b = [
            Bucket { lo: 256, hi: 511, count: 10 },
            Bucket { lo: 512, hi: 1023, count: 0 },
            Bucket { lo: 1024, hi: 2047, count: 1 },
        ];
        let lines = render_histogram(&b, 20);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "256ns-512ns |####################| 10");
        assert_eq!(lines[1], "512ns-1.0us |                    | 0");
        assert_eq!(lines[2], "1.0us-2.0us |##                  | 1");
        // Empty runs collapse into one line.
        let b = [
            Bucket { lo: 32, hi: 63, count: 5 },
            Bucket { lo: 64, hi: 127, count: 0 },
            Bucket { lo: 128, hi: 255, count: 0 },
            Bucket { lo: 256, hi: 511, count: 0 },
            Bucket { lo: 512, hi: 1023, count: 1 },
        ];
        let lines = render_histogram(&b, 5);
        assert_eq!(
            lines,
            ["  32ns-64ns |#####| 5", " 64ns-512ns |     | 0", "512ns-1.0us |#    | 1"]
        );
        // Ranges are right-aligned to the longest.
        let b = [Bucket { lo: 0, hi: 1, count: 4 }, Bucket { lo: 256, hi: 511, count: 2 }];
        let lines = render_histogram(&b, 4);
        assert_eq!(lines, ["    0ns-2ns |####| 4", "256ns-512ns |##  | 2"]);
        assert!(render_histogram(&[], 10).is_empty());
    }

    #[test]
    fn progress_bar_fills_in_proportion() {
        assert_eq!(progress_bar("x", 0, 10, 10), "x [..........]   0%");
        assert_eq!(progress_bar("x", 5, 10, 10), "x [#####.....]  50%");
        assert_eq!(progress_bar("x", 10, 10, 10), "x [##########] 100%");
        assert_eq!(progress_bar("x", 20, 10, 4), "x [####] 100%");
    }

    #[test]
    fn times_format_in_readable_units() {
        assert_eq!(format_ns(850), "850ns");
        assert_eq!(format_ns(12_345), "12.3us");
        assert_eq!(format_ns(4_560_000), "4.56ms");
        assert_eq!(format_ns(1_200_000_000), "1.20s");
    }

    #[test]
    fn the_table_lines_up_statistics_and_notes() {
        let mut ok = Section::new("dma_map", "map".into(), Some(4096));
        ok.stats = Some(Stats { count: 1, min: 850, p50: 12_345, p99: 4_560_000, max: 1, mean: 2 });
        let skipped = Section::new("mmio_write", "w".into(), None).skipped("not asked for");
        let mut failed = Section::new("irq_enable", "e".into(), None);
        failed.error = Some("EINVAL".into());
        let empty = Section::new("irq_trigger", "t".into(), None);
        assert_eq!(
            stats_table(&[ok, skipped, failed, empty]),
            "measurement    size       min       p50       p99       max      mean\n\
             dma_map          4K     850ns    12.3us    4.56ms       1ns       2ns\n\
             mmio_write          skipped: not asked for\n\
             irq_enable          failed: EINVAL\n\
             irq_trigger         no samples\n"
        );
    }
}
