//! The measurements of `bench` on an open device, each a list of per-operation times in
//! nanoseconds: MMIO accesses to one register, DMA map and unmap by size, interrupt
//! setup and teardown, and software-triggered interrupt delivery (from the
//! `VFIO_DEVICE_SET_IRQS` trigger to the eventfd becoming readable).

use std::io::{IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use vfio_core::region::{Bar, MmioValue};
use vfio_core::{Device, DmaPerm, DmaPool, Error, IrqIndex, Result};

use super::report::{progress_bar, BenchReport, Register, Section, SCHEMA};
use super::BenchArgs;
use crate::format::{human_size, interface_name, irq_name};

/// How long to wait for a triggered interrupt before giving up on it.
const IRQ_TIMEOUT: Duration = Duration::from_secs(1);

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

    /// Runs one measurement of `n` operations under a progress bar labelled `label`.
    fn run<T>(&mut self, label: &str, n: u32, f: impl FnOnce(&mut dyn FnMut(u64)) -> T) -> T {
        let r = f(&mut |d| self.tick(label, d, n.into()));
        self.clear();
        r
    }

    fn clear(&mut self) {
        if let Some(out) = self.out.as_mut() {
            let _ = write!(out, "\r{:<60}\r", "");
            let _ = out.flush();
        }
        self.last = u64::MAX;
    }
}

/// The sections of a measurement made in pairs (map/unmap, enable/disable), with their
/// samples or both with the error that stopped them.
fn pair_sections(
    (mut a, mut b): (Section, Section),
    r: std::result::Result<(Vec<u64>, Vec<u64>), String>,
) -> (Section, Section) {
    match r {
        Ok((x, y)) => (a.with_samples(Ok(x)), b.with_samples(Ok(y))),
        Err(e) => {
            a.error = Some(e.clone());
            b.error = Some(e);
            (a, b)
        }
    }
}

/// MMIO reads, and writes when asked for, of the register; and the register measured.
fn measure_mmio(
    dev: &Device,
    args: &BenchArgs,
    offset: u64,
    write: Option<u64>,
    progress: &mut Progress<'_>,
) -> Result<(Vec<Section>, Register)> {
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
    let (n, width) = (args.iterations, args.width);
    let reg = format!("BAR{}+{offset:#x}", args.bar);
    let r = progress
        .run(&format!("MMIO read {reg}"), n, |tick| bench_mmio_read(&bar, offset, width, n, tick));
    let read = Section::new("mmio_read", format!("{width}-bit read of {reg}"), None);
    let what = format!("{width}-bit write of {reg}");
    let written = match write {
        Some(v) => {
            let r = progress.run(&format!("MMIO write {reg}"), n, |tick| {
                bench_mmio_write(&bar, offset, width, v, n, tick)
            });
            Section::new("mmio_write", format!("{what} ({v:#x})"), None).with_samples(r)
        }
        None => Section::new("mmio_write", what, None)
            .skipped("not asked for: writes happen only with --write VALUE"),
    };
    let mapped = bar.is_mapped(offset, (width / 8) as usize);
    Ok((vec![read.with_samples(r), written], Register { bar: args.bar, offset, width, mapped }))
}

/// DMA map and unmap of each size.
fn measure_dma(dev: &Device, n: u32, sizes: &[u64], progress: &mut Progress<'_>) -> Vec<Section> {
    let pool = DmaPool::new(dev.address_space());
    let mut sections = Vec::new();
    for &size in sizes {
        let what = |op: &str| format!("{op} of {} of process memory", human_size(size));
        let pair = (
            Section::new("dma_map", what("map"), Some(size)),
            Section::new("dma_unmap", what("unmap"), Some(size)),
        );
        let r = match &pool {
            Ok(pool) => progress
                .run(&format!("DMA map/unmap {}", human_size(size)), n, |tick| {
                    bench_dma(pool, size, n, tick)
                })
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let (m, u) = pair_sections(pair, r);
        sections.extend([m, u]);
    }
    sections
}

/// Interrupt setup, teardown and delivery on `irq` (skipped without one).
fn measure_irq(
    dev: &Device,
    irq: Option<IrqIndex>,
    n: u32,
    progress: &mut Progress<'_>,
) -> Vec<Section> {
    let on = Section::new("irq_enable", "enable one vector on an eventfd".into(), None);
    let off = Section::new("irq_disable", "disable the index".into(), None);
    let trig = Section::new("irq_trigger", "software trigger until the eventfd fires".into(), None);
    let Some(index) = irq else {
        let why = "the device offers no INTx, MSI or MSI-X vector";
        return vec![on.skipped(why), off.skipped(why), trig.skipped(why)];
    };
    let r = progress.run(&format!("IRQ setup {}", irq_name(index)), n, |tick| {
        bench_irq_setup(dev, index, n, tick)
    });
    let (on, off) = pair_sections((on, off), r.map_err(|e| e.to_string()));
    let r = progress.run(&format!("IRQ trigger {}", irq_name(index)), n, |tick| {
        bench_irq_trigger(dev, index, n, tick)
    });
    vec![on, off, trig.with_samples(r)]
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
    let n = args.iterations;
    let mut progress = Progress::new(err);
    let (mut sections, register) = measure_mmio(dev, args, offset, write, &mut progress)?;
    sections.extend(measure_dma(dev, n, sizes, &mut progress));
    let irq = pick_irq(dev);
    sections.extend(measure_irq(dev, irq, n, &mut progress));
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
