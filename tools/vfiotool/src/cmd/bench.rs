//! `vfiotool bench`: passthrough latency on a device bound to vfio-pci.
//!
//! Four measurements, each a list of per-operation times in nanoseconds: MMIO accesses
//! to one register (reads; writes only with `--write`), DMA map and unmap by size,
//! interrupt setup and teardown, and software-triggered interrupt delivery (from
//! `VFIO_DEVICE_SET_IRQS` trigger to the eventfd becoming readable). The statistics
//! ([`Stats`]), histogram ([`buckets`], [`render_histogram`]) and progress bar
//! ([`progress_bar`]) are pure functions.

use std::io::{IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use serde::Serialize;
use vmm_sys_util::eventfd::EventFd;

use vfio_core::region::{Bar, MmioValue};
use vfio_core::{
    AddressSpace, Device, DmaPerm, DmaPool, Error, IrqIndex, PciAddress, Result, Vfio,
};

use crate::cli::{Context, InterfaceArg};
use crate::cmd::info::{human_size, irq_name};

/// The `schema` value of `bench --json`.
pub const SCHEMA: &str = "vfiotool.bench/1";

/// How long to wait for a triggered interrupt before giving up on it.
const IRQ_TIMEOUT: Duration = Duration::from_secs(1);

/// Arguments of `bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The device (`0000:01:00.0`), bound to vfio-pci.
    pub address: String,
    /// The BAR holding the register to access.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub bar: u32,
    /// The register's offset in the BAR (hex with 0x, or decimal).
    #[arg(long, visible_alias = "register", default_value = "0", value_name = "OFFSET")]
    pub offset: String,
    /// Access width in bits: 8, 16, 32 or 64.
    #[arg(long, default_value_t = 32, value_name = "BITS")]
    pub width: u32,
    /// Also time writes of VALUE to the register. Without it nothing is written to the
    /// device's BARs.
    #[arg(long, value_name = "VALUE")]
    pub write: Option<String>,
    /// Operations timed per measurement.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub iterations: u32,
    /// DMA mapping sizes, comma-separated (`4K,64K,2M`; multiples of 4 KiB).
    #[arg(long, default_value = "4K,64K,2M", value_name = "SIZES")]
    pub sizes: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The kernel interface to open the device through.
    #[arg(long, value_enum, default_value_t = InterfaceArg::Auto)]
    pub interface: InterfaceArg,
}

/// Summary statistics of a list of samples (nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Number of samples.
    pub count: usize,
    /// Smallest.
    pub min: u64,
    /// Median (nearest rank).
    pub p50: u64,
    /// 99th percentile (nearest rank).
    pub p99: u64,
    /// Largest.
    pub max: u64,
    /// Arithmetic mean, rounded down.
    pub mean: u64,
}

/// The `p`-th percentile (0 < p <= 100) of sorted samples by the nearest-rank method:
/// the smallest sample with at least `p` percent of the samples at or below it. `None`
/// for no samples.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

impl Stats {
    /// Statistics of `samples` (in any order); `None` when there are none.
    pub fn from_samples(samples: &[u64]) -> Option<Stats> {
        let mut s = samples.to_vec();
        s.sort_unstable();
        let sum: u128 = s.iter().map(|&x| u128::from(x)).sum();
        Some(Stats {
            count: s.len(),
            min: *s.first()?,
            p50: percentile(&s, 50.0)?,
            p99: percentile(&s, 99.0)?,
            max: *s.last()?,
            mean: (sum / s.len() as u128) as u64,
        })
    }
}

/// One histogram bucket: samples in `lo..=hi` nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// Lowest value of the bucket.
    pub lo: u64,
    /// Highest value of the bucket.
    pub hi: u64,
    /// Samples in it.
    pub count: usize,
}

/// Power-of-two buckets from the one holding the smallest sample to the one holding the
/// largest (`[0, 1]`, `[2, 3]`, `[4, 7]`, ...), empty ones in between included.
pub fn buckets(samples: &[u64]) -> Vec<Bucket> {
    let class = |x: u64| if x < 2 { 0 } else { 63 - x.leading_zeros() };
    let (Some(&min), Some(&max)) = (samples.iter().min(), samples.iter().max()) else {
        return Vec::new();
    };
    let (first, last) = (class(min), class(max));
    let mut out: Vec<Bucket> = (first..=last)
        .map(|k| Bucket {
            lo: if k == 0 { 0 } else { 1u64 << k },
            hi: if k >= 63 { u64::MAX } else { (1u64 << (k + 1)) - 1 },
            count: 0,
        })
        .collect();
    for &x in samples {
        out[(class(x) - first) as usize].count += 1;
    }
    out
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

/// Parses a number: `0x` hex, or decimal.
pub fn parse_number(what: &'static str, s: &str) -> Result<u64> {
    let t = s.trim();
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => t.parse(),
    };
    r.map_err(|_| Error::Invalid {
        what,
        input: s.to_string(),
        reason: "expected a number, hex with 0x (0x10) or decimal (16)".into(),
    })
}

/// Parses a size: bytes, or a number with `K`, `M` or `G` (binary units).
pub fn parse_size(s: &str) -> Result<u64> {
    let bad = |reason: &str| Error::Invalid {
        what: "DMA size",
        input: s.to_string(),
        reason: format!("{reason}; expected sizes such as 4K,64K,2M (multiples of 4K)"),
    };
    let t = s.trim();
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = num.parse().map_err(|_| bad("not a number"))?;
    let size = n.checked_mul(mult).ok_or_else(|| bad("too large"))?;
    if size == 0 || size % 4096 != 0 {
        return Err(bad("not a positive multiple of 4 KiB"));
    }
    if size > 1 << 30 {
        return Err(bad("larger than 1G"));
    }
    Ok(size)
}

/// Parses a comma-separated size list.
pub fn parse_sizes(s: &str) -> Result<Vec<u64>> {
    s.split(',').filter(|x| !x.trim().is_empty()).map(parse_size).collect()
}

/// Checks that a register of `width` bits at `offset` lies inside a BAR of `size` bytes
/// and is naturally aligned.
pub fn check_register(bar: u32, offset: u64, width: u32, size: u64) -> Result<()> {
    let bytes = u64::from(width / 8);
    let input = format!("BAR{bar}+{offset:#x}");
    if !matches!(width, 8 | 16 | 32 | 64) {
        return Err(Error::Invalid {
            what: "access width",
            input: width.to_string(),
            reason: "use --width 8, 16, 32 or 64".into(),
        });
    }
    if size == 0 {
        return Err(Error::Invalid {
            what: "register",
            input,
            reason: format!("the device has no BAR{bar}; see `vfiotool info` for its BARs"),
        });
    }
    if offset.checked_add(bytes).is_none_or(|end| end > size) {
        return Err(Error::Invalid {
            what: "register",
            input,
            reason: format!(
                "BAR{bar} is {} ({size:#x} bytes): a {width}-bit register must start at or \
                 below {:#x}",
                human_size(size),
                size.saturating_sub(bytes)
            ),
        });
    }
    if offset % bytes != 0 {
        return Err(Error::Invalid {
            what: "register",
            input,
            reason: format!("a {width}-bit access must be aligned to {bytes} bytes"),
        });
    }
    Ok(())
}

/// Times `n` calls of `op`, calling `tick` after each with the number done.
pub fn time_n(
    n: u32,
    tick: &mut dyn FnMut(u64),
    mut op: impl FnMut() -> Result<()>,
) -> Result<Vec<u64>> {
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let t = Instant::now();
        op()?;
        out.push(t.elapsed().as_nanos() as u64);
        tick(u64::from(i) + 1);
    }
    Ok(out)
}

fn read_once<T: MmioValue>(bar: &Bar<'_>, offset: u64) -> Result<()> {
    std::hint::black_box(bar.read::<T>(offset)?);
    Ok(())
}

/// Times `n` reads of a `width`-bit register.
pub fn bench_mmio_read(
    bar: &Bar<'_>,
    offset: u64,
    width: u32,
    n: u32,
    tick: &mut dyn FnMut(u64),
) -> Result<Vec<u64>> {
    match width {
        8 => time_n(n, tick, || read_once::<u8>(bar, offset)),
        16 => time_n(n, tick, || read_once::<u16>(bar, offset)),
        64 => time_n(n, tick, || read_once::<u64>(bar, offset)),
        _ => time_n(n, tick, || read_once::<u32>(bar, offset)),
    }
}

/// Times `n` writes of `value` (truncated to `width` bits) to a register.
pub fn bench_mmio_write(
    bar: &Bar<'_>,
    offset: u64,
    width: u32,
    value: u64,
    n: u32,
    tick: &mut dyn FnMut(u64),
) -> Result<Vec<u64>> {
    match width {
        8 => time_n(n, tick, || bar.write::<u8>(offset, value as u8)),
        16 => time_n(n, tick, || bar.write::<u16>(offset, value as u16)),
        64 => time_n(n, tick, || bar.write::<u64>(offset, value)),
        _ => time_n(n, tick, || bar.write::<u32>(offset, value as u32)),
    }
}

/// Times `n` map and unmap pairs of `size` bytes of process memory.
pub fn bench_dma(
    pool: &DmaPool,
    size: u64,
    n: u32,
    tick: &mut dyn FnMut(u64),
) -> Result<(Vec<u64>, Vec<u64>)> {
    const PAGE: usize = 4096;
    let len = size as usize;
    // The buffer outlives every mapping made of it: each is unmapped in the loop.
    let mut mem = vec![0u8; len + PAGE];
    let start = mem.as_mut_ptr() as usize;
    let vaddr = (start.div_ceil(PAGE) * PAGE) as u64;
    let (mut maps, mut unmaps) = (Vec::with_capacity(n as usize), Vec::with_capacity(n as usize));
    for i in 0..n {
        let t = Instant::now();
        // SAFETY: `vaddr..vaddr+size` lies inside `mem`, which stays allocated (and is not
        // read or written by this program) until after the mapping is unmapped below.
        let m = unsafe { pool.map_user(vaddr, size, DmaPerm::ReadWrite) }?;
        maps.push(t.elapsed().as_nanos() as u64);
        let t = Instant::now();
        m.unmap()?;
        unmaps.push(t.elapsed().as_nanos() as u64);
        tick(u64::from(i) + 1);
    }
    drop(mem);
    Ok((maps, unmaps))
}

/// The interrupt index to measure: MSI-X, else MSI, else INTx (the first with vectors).
pub fn pick_irq(dev: &Device) -> Option<IrqIndex> {
    [IrqIndex::Msix, IrqIndex::Msi, IrqIndex::Intx]
        .into_iter()
        .find(|&i| dev.irq_info(i).is_ok_and(|info| info.count > 0))
}

/// Times `n` enables (one vector on an eventfd) and disables of an interrupt index.
pub fn bench_irq_setup(
    dev: &Device,
    index: IrqIndex,
    n: u32,
    tick: &mut dyn FnMut(u64),
) -> Result<(Vec<u64>, Vec<u64>)> {
    let fds = dev.new_eventfds(1)?;
    let (mut on, mut off) = (Vec::with_capacity(n as usize), Vec::with_capacity(n as usize));
    for i in 0..n {
        let t = Instant::now();
        dev.enable_irqs_all(index, 0, &fds)?;
        on.push(t.elapsed().as_nanos() as u64);
        let t = Instant::now();
        dev.disable_irqs(index)?;
        off.push(t.elapsed().as_nanos() as u64);
        tick(u64::from(i) + 1);
    }
    Ok((on, off))
}

/// Waits until `fd` is readable, then consumes its count. Errors after [`IRQ_TIMEOUT`].
fn wait_eventfd(fd: &EventFd) -> Result<()> {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: `p` is one valid pollfd on the stack for the duration of the call.
    let r = unsafe { libc::poll(&mut p, 1, IRQ_TIMEOUT.as_millis() as libc::c_int) };
    if r <= 0 {
        return Err(Error::Unsupported {
            what: "software-triggered interrupt".into(),
            hint: Some(format!(
                "no eventfd signal within {} ms of the trigger",
                IRQ_TIMEOUT.as_millis()
            )),
        });
    }
    fd.read().map_err(|e| Error::host("read eventfd", "<eventfd>", e))?;
    Ok(())
}

/// Times `n` software triggers of vector 0 of `index`, each until its eventfd fires.
pub fn bench_irq_trigger(
    dev: &Device,
    index: IrqIndex,
    n: u32,
    tick: &mut dyn FnMut(u64),
) -> Result<Vec<u64>> {
    let fds = dev.new_eventfds(1)?;
    dev.enable_irqs_all(index, 0, &fds)?;
    let r = time_n(n, tick, || {
        dev.trigger_irqs(index, 0, 1)?;
        wait_eventfd(&fds[0])?;
        if index == IrqIndex::Intx {
            dev.unmask_irqs(index, 0, 1)?;
        }
        Ok(())
    });
    let off = dev.disable_irqs(index);
    let samples = r?;
    off?;
    Ok(samples)
}

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
    fn new(name: &str, what: String, size: Option<u64>) -> Self {
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

    fn with_samples(mut self, r: Result<Vec<u64>>) -> Self {
        match r {
            Ok(s) => {
                self.stats = Stats::from_samples(&s);
                self.histogram = buckets(&s);
            }
            Err(e) => self.error = Some(e.to_string()),
        }
        self
    }

    fn skipped(mut self, why: impl Into<String>) -> Self {
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

/// Draws a progress bar on stderr while a measurement runs (only when stderr is a
/// terminal).
struct Progress<'a> {
    out: Option<&'a mut dyn Write>,
    last: u64,
}

impl<'a> Progress<'a> {
    fn new(err: &'a mut dyn Write) -> Self {
        let tty = std::io::stderr().is_terminal();
        Progress { out: tty.then_some(err), last: u64::MAX }
    }

    fn tick(&mut self, label: &str, done: u64, total: u64) {
        let Some(out) = self.out.as_mut() else { return };
        let pct = (done * 100).checked_div(total).unwrap_or(100);
        if pct == self.last {
            return;
        }
        self.last = pct;
        let _ = write!(out, "\r{:<60}", progress_bar(label, done, total, 30));
        let _ = out.flush();
    }

    fn clear(&mut self) {
        if let Some(out) = self.out.as_mut() {
            let _ = write!(out, "\r{:<60}\r", "");
            let _ = out.flush();
        }
        self.last = u64::MAX;
    }
}

fn interface_name(space: &AddressSpace) -> String {
    match space {
        AddressSpace::Container(c) => match c.iommu_type() {
            Some(t) => format!("container ({t:?})"),
            None => "container".into(),
        },
        AddressSpace::Ioas(_) => "iommufd".into(),
    }
}

/// Runs every measurement on an open device.
pub fn measure(
    dev: &Device,
    args: &BenchArgs,
    offset: u64,
    write: Option<u64>,
    sizes: &[u64],
    err: &mut dyn Write,
) -> Result<BenchReport> {
    let region_size = dev.region(args.bar).map(|r| r.size).unwrap_or(0);
    if args.bar > 5 {
        return Err(Error::Invalid {
            what: "BAR index",
            input: args.bar.to_string(),
            reason: "BARs are numbered 0 to 5".into(),
        });
    }
    check_register(args.bar, offset, args.width, region_size)?;
    let bar = dev.bar(args.bar)?;
    let n = args.iterations;
    let mut progress = Progress::new(err);
    let mut sections = Vec::new();
    let reg = format!("BAR{}+{offset:#x}", args.bar);

    let label = format!("MMIO read {reg}");
    let r =
        bench_mmio_read(&bar, offset, args.width, n, &mut |d| progress.tick(&label, d, n.into()));
    progress.clear();
    sections.push(
        Section::new("mmio_read", format!("{}-bit read of {reg}", args.width), None)
            .with_samples(r),
    );
    let what = format!("{}-bit write of {reg}", args.width);
    sections.push(match write {
        Some(v) => {
            let label = format!("MMIO write {reg}");
            let r = bench_mmio_write(&bar, offset, args.width, v, n, &mut |d| {
                progress.tick(&label, d, n.into())
            });
            progress.clear();
            Section::new("mmio_write", format!("{what} ({v:#x})"), None).with_samples(r)
        }
        None => Section::new("mmio_write", what, None)
            .skipped("not asked for: writes happen only with --write VALUE"),
    });
    let register = Register {
        bar: args.bar,
        offset,
        width: args.width,
        mapped: bar.is_mapped(offset, (args.width / 8) as usize),
    };
    drop(bar);

    let pool = DmaPool::new(dev.address_space());
    for &size in sizes {
        let what = |op: &str| format!("{op} of {} of process memory", human_size(size));
        let (mut m, mut u) = (
            Section::new("dma_map", what("map"), Some(size)),
            Section::new("dma_unmap", what("unmap"), Some(size)),
        );
        match &pool {
            Ok(pool) => {
                let label = format!("DMA map/unmap {}", human_size(size));
                match bench_dma(pool, size, n, &mut |d| progress.tick(&label, d, n.into())) {
                    Ok((a, b)) => {
                        m = m.with_samples(Ok(a));
                        u = u.with_samples(Ok(b));
                    }
                    Err(e) => {
                        m.error = Some(e.to_string());
                        u.error = Some(e.to_string());
                    }
                }
                progress.clear();
            }
            Err(e) => {
                m.error = Some(e.to_string());
                u.error = Some(e.to_string());
            }
        }
        sections.push(m);
        sections.push(u);
    }

    let irq = pick_irq(dev);
    let (mut on, mut off, mut trig) = (
        Section::new("irq_enable", "enable one vector on an eventfd".into(), None),
        Section::new("irq_disable", "disable the index".into(), None),
        Section::new("irq_trigger", "software trigger until the eventfd fires".into(), None),
    );
    match irq {
        None => {
            let why = "the device offers no INTx, MSI or MSI-X vector";
            on = on.skipped(why);
            off = off.skipped(why);
            trig = trig.skipped(why);
        }
        Some(index) => {
            let label = format!("IRQ setup {}", irq_name(index));
            match bench_irq_setup(dev, index, n, &mut |d| progress.tick(&label, d, n.into())) {
                Ok((a, b)) => {
                    on = on.with_samples(Ok(a));
                    off = off.with_samples(Ok(b));
                }
                Err(e) => {
                    on.error = Some(e.to_string());
                    off.error = Some(e.to_string());
                }
            }
            progress.clear();
            let label = format!("IRQ trigger {}", irq_name(index));
            let r = bench_irq_trigger(dev, index, n, &mut |d| progress.tick(&label, d, n.into()));
            progress.clear();
            trig = trig.with_samples(r);
        }
    }
    sections.extend([on, off, trig]);
    Ok(BenchReport {
        schema: SCHEMA,
        address: dev.name().to_string(),
        interface: interface_name(&dev.address_space()),
        iterations: n,
        register,
        irq_index: irq.map(irq_name),
        sections,
    })
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
    o += &format!(
        "\n{:<12} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "measurement", "size", "min", "p50", "p99", "max", "mean"
    );
    for s in &r.sections {
        let size = s.size.map(human_size).unwrap_or_default();
        match (&s.stats, &s.skipped, &s.error) {
            (Some(st), _, _) => {
                o += &format!(
                    "{:<12} {size:>6} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
                    s.name,
                    format_ns(st.min),
                    format_ns(st.p50),
                    format_ns(st.p99),
                    format_ns(st.max),
                    format_ns(st.mean)
                )
            }
            (None, Some(why), _) => o += &format!("{:<12} {size:>6} skipped: {why}\n", s.name),
            (None, None, Some(e)) => o += &format!("{:<12} {size:>6} failed: {e}\n", s.name),
            (None, None, None) => o += &format!("{:<12} {size:>6} no samples\n", s.name),
        }
    }
    for s in r.sections.iter().filter(|s| s.stats.is_some()) {
        let size = s.size.map(|x| format!(" {}", human_size(x))).unwrap_or_default();
        o += &format!("\n{}{size}: {}\n", s.name, s.what);
        for l in render_histogram(&s.histogram, 40) {
            o += &format!("  {l}\n");
        }
    }
    o
}

/// Runs `bench`.
pub fn run(args: &BenchArgs, ctx: &mut Context) -> Result<i32> {
    let addr = PciAddress::parse(&args.address)?;
    let offset = parse_number("register offset", &args.offset)?;
    let write = args.write.as_deref().map(|v| parse_number("--write value", v)).transpose()?;
    if !matches!(args.width, 8 | 16 | 32 | 64) {
        return Err(Error::Invalid {
            what: "access width",
            input: args.width.to_string(),
            reason: "use --width 8, 16, 32 or 64".into(),
        });
    }
    if let Some(v) = write {
        if args.width < 64 && v >> args.width != 0 {
            return Err(Error::Invalid {
                what: "--write value",
                input: format!("{v:#x}"),
                reason: format!("does not fit in {} bits", args.width),
            });
        }
    }
    if args.iterations == 0 {
        return Err(Error::Invalid {
            what: "iteration count",
            input: "0".into(),
            reason: "give --iterations 1 or more".into(),
        });
    }
    let sizes = parse_sizes(&args.sizes)?;
    let vfio = Vfio::new(ctx.kernel.clone(), ctx.fs.clone());
    let dev = crate::cmd::info::open_live(&vfio, addr, args.interface.into())?;
    let report = measure(&dev, args, offset, write, &sizes, &mut *ctx.err)?;
    drop(dev);
    let text = if args.json {
        serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
    } else {
        render(&report)
    };
    ctx.out.write_all(text.as_bytes()).map_err(|e| Error::host("write output", "<stdout>", e))?;
    let failed = report.sections.iter().any(|s| s.error.is_some());
    Ok(i32::from(failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let s: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&s, 50.0), Some(50));
        assert_eq!(percentile(&s, 99.0), Some(99));
        assert_eq!(percentile(&s, 100.0), Some(100));
        assert_eq!(percentile(&s, 0.1), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[1, 2, 3, 4], 50.0), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4, 5], 50.0), Some(3));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn stats_sort_their_input() {
        let st = Stats::from_samples(&[30, 10, 20, 1000]).unwrap();
        assert_eq!(st, Stats { count: 4, min: 10, p50: 20, p99: 1000, max: 1000, mean: 265 });
        assert_eq!(Stats::from_samples(&[]), None);
    }

    #[test]
    fn buckets_are_powers_of_two_with_gaps_kept() {
        let b = buckets(&[5, 6, 40, 1]);
        assert_eq!(b.first().unwrap(), &Bucket { lo: 0, hi: 1, count: 1 });
        assert_eq!(b.iter().map(|x| x.count).sum::<usize>(), 4);
        assert_eq!(b[2], Bucket { lo: 4, hi: 7, count: 2 });
        assert_eq!(b[3], Bucket { lo: 8, hi: 15, count: 0 });
        assert_eq!(b.last().unwrap(), &Bucket { lo: 32, hi: 63, count: 1 });
        assert_eq!(b.len(), 6);
        assert!(buckets(&[]).is_empty());
        let top = buckets(&[u64::MAX]);
        assert_eq!(top, vec![Bucket { lo: 1 << 63, hi: u64::MAX, count: 1 }]);
    }

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
    fn numbers_and_sizes_parse() {
        assert_eq!(parse_number("n", "0x10").unwrap(), 16);
        assert_eq!(parse_number("n", "16").unwrap(), 16);
        assert!(parse_number("n", "0xzz").is_err());
        assert_eq!(parse_sizes("4K,64K,2M").unwrap(), vec![4096, 65536, 2 << 20]);
        assert_eq!(parse_size("8192").unwrap(), 8192);
        assert!(parse_size("3K").unwrap_err().to_string().contains("multiple of 4 KiB"));
        assert!(parse_size("2T").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn registers_must_fit_and_be_aligned() {
        assert!(check_register(0, 0xffffc, 32, 1 << 20).is_ok());
        let e = check_register(0, 0x100000, 32, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("BAR0 is 1M") && e.contains("0xffffc"), "{e}");
        assert!(check_register(0, 0xffffd, 8, 1 << 20).is_ok());
        let e = check_register(0, 2, 32, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("aligned to 4"), "{e}");
        assert!(check_register(2, 0, 32, 0).unwrap_err().to_string().contains("no BAR2"));
        assert!(check_register(0, 0, 24, 16).is_err());
        assert!(check_register(0, u64::MAX, 8, 16).is_err());
    }

    #[test]
    fn times_format_in_readable_units() {
        assert_eq!(format_ns(850), "850ns");
        assert_eq!(format_ns(12_345), "12.3us");
        assert_eq!(format_ns(4_560_000), "4.56ms");
        assert_eq!(format_ns(1_200_000_000), "1.20s");
    }
}
