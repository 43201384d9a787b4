//! Conformance scenarios on QEMU's edu device.
//!
//! Each scenario performs kernel operations through vfio-core and records what came back
//! as `key = value` lines (a value, `ok`, or `err ERRNO`). The same list runs against the
//! real kernel in the VM lab (`vfio-conformance`) and against the mock (the
//! `conformance` test of this crate); both must match the expected file of the IOMMU mode
//! under `tests/conformance/`, so the mock and the kernel agree.

use std::fmt::Write as _;
use std::os::fd::AsRawFd;
use std::time::Duration;

use vfio_core::container::IommuType;
use vfio_core::dma::{Backing, HostMemory};
use vfio_core::feature::{FEATURE_GET, FEATURE_PROBE, FEATURE_SET};
use vfio_core::info::RegionFlags;
use vfio_core::irq::IrqIndex;
use vfio_core::{
    AddressSpace, Device, DmaPerm, Error, Feature, Interface, PciAddress, VfToken, Vfio,
};

/// The kernel series of a release (`6.12` of `6.12.117+deb12-amd64`): what the recorded
/// answers are kept by, in `tests/conformance/<series>/`.
pub fn series(release: &str) -> Option<String> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty());
    let (major, minor) = (parts.next()?, parts.next()?);
    Some(format!("{major}.{minor}"))
}

/// The file of a series and mode, relative to `tests/conformance/`.
pub fn file_name(series: &str, mode: &str) -> String {
    format!("{series}/edu-{mode}.expected")
}

/// The first line of a recorded file: where the answers came from.
pub fn source_line(source: &str, mode: &str) -> String {
    format!("# source: {source}; mode {mode}")
}

/// Recorded observations, in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// `(key, value)` pairs.
    pub lines: Vec<(String, String)>,
}

impl Report {
    fn put(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.lines.push((key.into(), value.into()));
    }

    fn result<T: std::fmt::Display>(&mut self, key: &str, r: Result<T, Error>) {
        let v = match r {
            Ok(v) => v.to_string(),
            Err(e) => outcome_err(&e),
        };
        self.put(key, v);
    }

    /// The report as text, one `key = value` per line.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.lines {
            let _ = writeln!(s, "{k} = {v}");
        }
        s
    }

    /// Parses text written by [`Report::text`] (blank lines and `#` comments skipped).
    pub fn parse(text: &str) -> Report {
        let mut r = Report::default();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some((k, v)) = line.split_once(" = ") {
                r.put(k.trim(), v.trim());
            }
        }
        r
    }

    /// The lines where `self` and `expected` differ, as human-readable text.
    pub fn diff(&self, expected: &Report) -> Vec<String> {
        let mut out = Vec::new();
        let n = self.lines.len().max(expected.lines.len());
        for i in 0..n {
            match (self.lines.get(i), expected.lines.get(i)) {
                (Some(a), Some(b)) if a == b => {}
                (Some((k, v)), Some((ek, ev))) if k == ek => {
                    out.push(format!("{k}: got {v}, expected {ev}"))
                }
                (a, b) => out.push(format!("line {}: got {a:?}, expected {b:?}", i + 1)),
            }
        }
        out
    }
}

fn outcome_err(e: &Error) -> String {
    match (e.errno(), e) {
        (Some(errno), _) => format!("err {errno:?}"),
        (None, Error::OutOfBounds { .. }) => "err out-of-bounds".into(),
        (None, Error::Unsupported { .. }) => "err unsupported".into(),
        (None, Error::NotFound { .. }) => "err not-found".into(),
        (None, Error::Invalid { what, .. }) => format!("err invalid {what}"),
        (None, other) => format!("err {other}"),
    }
}

fn ok<T>(r: Result<T, Error>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => outcome_err(&e),
    }
}

fn flags_text(f: RegionFlags) -> String {
    let mut s = String::new();
    for (bit, c) in [(RegionFlags::READ, 'r'), (RegionFlags::WRITE, 'w'), (RegionFlags::MMAP, 'm')]
    {
        s.push(if f.contains(bit) { c } else { '-' });
    }
    s
}

/// Which IOMMU mode a device was opened in, as the expected files name it.
pub fn mode_name(device: &Device) -> &'static str {
    match device.address_space() {
        AddressSpace::Ioas(_) => "iommufd",
        AddressSpace::Container(c) => match c.iommu_type() {
            Some(IommuType::Type1v2) => "type1v2",
            Some(IommuType::Type1) => "type1",
            Some(IommuType::NoIommu) => "noiommu",
            None => "container-unset",
        },
    }
}

/// Runs every scenario on the edu device at `edu` (bound to vfio-pci), opened with
/// `interface`.
pub fn run(vfio: &Vfio, edu: PciAddress, interface: Interface) -> Report {
    let mut r = Report::default();
    let device = match vfio.open(edu, interface) {
        Ok(d) => d,
        Err(e) => {
            r.put("open", outcome_err(&e));
            return r;
        }
    };
    r.put("open", mode_name(&device));
    device_info(&mut r, &device);
    config(&mut r, &device);
    irqs(&mut r, &device);
    dma(&mut r, &device);
    reset(&mut r, &device);
    features(&mut r, &device);
    r
}

fn device_info(r: &mut Report, d: &Device) {
    let i = d.info();
    r.put("device.pci", i.is_pci().to_string());
    r.put("device.reset", i.can_reset().to_string());
    r.put("device.num_regions", i.num_regions.to_string());
    r.put("device.num_irqs", i.num_irqs.to_string());
    for reg in d.regions() {
        r.put(
            format!("region.{}", reg.index),
            format!(
                "size {:#x} flags {} areas {} msix_mappable {}",
                reg.size,
                flags_text(reg.flags),
                reg.mmap_areas.len(),
                reg.msix_mappable
            ),
        );
    }
    for idx in IrqIndex::ALL {
        let v = match d.irq_info(idx) {
            Ok(info) => format!("count {} flags {:#x}", info.count, info.flags.bits()),
            Err(e) => outcome_err(&e),
        };
        r.put(format!("irq.{idx:?}"), v);
    }
}

fn config(r: &mut Report, d: &Device) {
    r.result("config.vendor", d.config_read_u16(0).map(|v| format!("{v:#06x}")));
    r.result("config.device", d.config_read_u16(2).map(|v| format!("{v:#06x}")));
    // The vendor id is read-only.
    let _ = d.config_write_u16(0, 0xbeef);
    r.result("config.vendor_after_write", d.config_read_u16(0).map(|v| format!("{v:#06x}")));
    // BAR sizing: all ones, read back the size mask with the type bits, restore.
    if let Ok(orig) = d.config_read_u32(0x10) {
        let _ = d.config_write_u32(0x10, 0xffff_ffff);
        r.result("config.bar0_sizing", d.config_read_u32(0x10).map(|v| format!("{v:#010x}")));
        let _ = d.config_write_u32(0x10, orig);
        r.result("config.bar0_restored", d.config_read_u32(0x10).map(|v| (v == orig).to_string()));
    }
    r.put("config.read_past_end", ok(d.config_read_u32(0x1000)));
}

fn irqs(r: &mut Report, d: &Device) {
    let Ok(fds) = d.new_eventfds(2) else {
        r.put("irq.eventfd", "failed");
        return;
    };
    let fired = |fd: &vmm_sys_util::eventfd::EventFd| {
        let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: a valid pollfd for the call.
        let n = unsafe { libc::poll(&mut p, 1, 1000) };
        if n == 1 {
            fd.read().map(|v| v.to_string()).unwrap_or_else(|_| "read error".into())
        } else {
            "none".into()
        }
    };
    r.put("irq.msi.trigger_before_enable", ok(d.trigger_irqs(IrqIndex::Msi, 0, 1)));
    r.put("irq.msi.enable_two", ok(d.enable_irqs_all(IrqIndex::Msi, 0, &fds[..2])));
    r.put("irq.msi.enable", ok(d.enable_irqs_all(IrqIndex::Msi, 0, &fds[..1])));
    r.put("irq.msi.trigger", ok(d.trigger_irqs(IrqIndex::Msi, 0, 1)));
    r.put("irq.msi.fired", fired(&fds[0]));
    r.put("irq.msi.trigger_bool_false", ok(d.trigger_irqs_where(IrqIndex::Msi, 0, &[false])));
    r.put("irq.msi.fired_after_false", fired(&fds[0]));
    r.put("irq.msi.trigger_out_of_range", ok(d.trigger_irqs(IrqIndex::Msi, 1, 1)));
    r.put("irq.intx.enable_while_msi", ok(d.enable_irqs_all(IrqIndex::Intx, 0, &fds[1..2])));
    r.put("irq.msi.disable", ok(d.disable_irqs(IrqIndex::Msi)));
    r.put("irq.intx.enable", ok(d.enable_irqs_all(IrqIndex::Intx, 0, &fds[1..2])));
    r.put("irq.intx.trigger", ok(d.trigger_irqs(IrqIndex::Intx, 0, 1)));
    r.put("irq.intx.fired", fired(&fds[1]));
    r.put("irq.intx.unmask", ok(d.unmask_irqs(IrqIndex::Intx, 0, 1)));
    r.put("irq.intx.mask", ok(d.mask_irqs(IrqIndex::Intx, 0, 1)));
    r.put("irq.intx.disable", ok(d.disable_irqs(IrqIndex::Intx)));
    r.put("irq.msix.enable", ok(d.enable_irqs_all(IrqIndex::Msix, 0, &fds[..1])));
}

fn dma(r: &mut Report, d: &Device) {
    let space = d.address_space();
    match &space {
        AddressSpace::Container(c) => match c.iommu_info() {
            Ok(info) => {
                r.put("iommu.pgsizes", format!("{:#x}", info.page_sizes));
                r.put("iommu.ranges", format!("{:x?}", info.iova_ranges));
                r.put("iommu.dma_avail", format!("{:?}", info.dma_avail));
            }
            Err(e) => r.put("iommu.info", outcome_err(&e)),
        },
        AddressSpace::Ioas(i) => {
            r.result("iommu.ranges", i.iova_ranges().map(|v| format!("{v:x?}")))
        }
    }
    let mem = HostMemory::new(4 << 20, Backing::Anonymous).expect("test memory");
    let base = mem.addr();
    let map = |vaddr: u64, iova: u64, size: u64| {
        // SAFETY: `mem` outlives every mapping made here; all are unmapped below.
        ok(unsafe { space.map(vaddr, iova, size, DmaPerm::ReadWrite) })
    };
    let m = 0x10_0000u64;
    r.put("dma.map", map(base, m, 0x2000));
    r.put("dma.map_same_again", map(base, m, 0x2000));
    r.put("dma.map_overlap_tail", map(base, m + 0x1000, 0x2000));
    r.put("dma.map_misaligned_iova", map(base, m + 0x10800, 0x1000));
    r.put("dma.map_misaligned_vaddr", map(base + 0x800, m + 0x10000, 0x1000));
    r.put("dma.map_zero_size", map(base, m + 0x20000, 0));
    r.put("dma.map_cross_2_64", map(base, u64::MAX - 0xfff, 0x2000));
    r.put(
        "dma.unmap_split_tail",
        format!("{:?}", space.unmap(m + 0x1000, 0x1000).map_err(|e| outcome_err(&e))),
    );
    r.put(
        "dma.unmap_split_head",
        format!("{:?}", space.unmap(m, 0x1000).map_err(|e| outcome_err(&e))),
    );
    r.put("dma.unmap_whole", format!("{:?}", space.unmap(m, 0x2000).map_err(|e| outcome_err(&e))));
    r.put("dma.unmap_again", format!("{:?}", space.unmap(m, 0x2000).map_err(|e| outcome_err(&e))));
    r.put(
        "dma.map_two",
        format!("{} {}", map(base, m, 0x1000), map(base + 0x1000, m + 0x1000, 0x1000)),
    );
    r.put(
        "dma.unmap_spanning_two",
        format!("{:?}", space.unmap(m, 0x2000).map_err(|e| outcome_err(&e))),
    );
    r.put(
        "dma.map_three",
        format!(
            "{} {} {}",
            map(base, m, 0x1000),
            map(base, m + 0x4000, 0x1000),
            map(base, m + 0x8000, 0x1000)
        ),
    );
    r.put("dma.unmap_all", format!("{:?}", space.unmap_all().map_err(|e| outcome_err(&e))));
    drop(mem);
    let gone = HostMemory::new(0x1000, Backing::Anonymous).expect("test memory");
    let gone_addr = gone.addr();
    drop(gone);
    r.put("dma.map_unmapped_vaddr", map(gone_addr, m, 0x1000));
    let _ = space.unmap_all();
}

fn reset(r: &mut Report, d: &Device) {
    r.put("reset.function", ok(d.reset()));
    r.put(
        "reset.hot_reset_info",
        match d.hot_reset_info() {
            Ok(v) => format!("{:?}", v.iter().map(|a| a.address.to_string()).collect::<Vec<_>>()),
            Err(e) => outcome_err(&e),
        },
    );
}

/// `VFIO_DEVICE_FEATURE` on a plain PCI function: every feature probed plain, with GET
/// and with SET; the header's rules; the VF token of a device that is no PF; low power
/// entry, entry with wake-up and exit. No BAR is mapped meanwhile (entry revokes
/// mappings). What depends on the device suspending, which runtime PM does
/// asynchronously where the kernel has it, is left to the lab's e1000e check: whether
/// the wake-up eventfd fires, and whether a second entry after an entry with wake-up is
/// EINVAL (still engaged) or works (the ioctl itself woke the device, which ended the
/// single-shot entry: seen on the stock 6.12 kernel now and then).
fn features(r: &mut Report, d: &Device) {
    for f in Feature::ALL {
        let probe = |ops| ok(d.feature_probe_ops(f, ops));
        r.put(
            format!("feature.{f}"),
            format!("{} get {} set {}", probe(0), probe(FEATURE_GET), probe(FEATURE_SET)),
        );
    }
    let lpe = u32::from(Feature::LowPowerEntry.index());
    r.put("feature.get_and_set", ok(d.feature_ioctl(lpe | FEATURE_GET | FEATURE_SET, &mut [])));
    r.put("feature.no_op", ok(d.feature_ioctl(lpe, &mut [])));
    r.put("feature.unknown_flag", ok(d.feature_ioctl(lpe | FEATURE_SET | 1 << 19, &mut [])));
    r.put("feature.unknown_index", ok(d.feature_ioctl(0xfff0 | FEATURE_PROBE, &mut [])));
    let token = VfToken::parse("bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3").expect("a UUID");
    r.put("feature.vf_token_set", ok(d.set_vf_token(&token)));
    r.put("feature.vf_token_get", ok(d.feature_get(Feature::PciVfToken, &mut [0; 16])));
    r.put("low_power.exit_first", ok(d.low_power_exit()));
    r.put("low_power.entry", ok(d.low_power_entry()));
    r.put("low_power.entry_again", ok(d.low_power_entry()));
    r.result("low_power.config_vendor", d.config_read_u16(0).map(|v| format!("{v:#06x}")));
    r.put("low_power.exit", ok(d.low_power_exit()));
    r.put("low_power.exit_again", ok(d.low_power_exit()));
    let wake = |fd: i32| {
        let mut data = [0u8; 8];
        data[..4].copy_from_slice(&fd.to_ne_bytes());
        ok(d.feature_set(Feature::LowPowerEntryWithWakeup, &data))
    };
    r.put("low_power.wakeup_negative_fd", wake(-1));
    r.put("low_power.wakeup_not_eventfd", wake(d.as_raw_fd()));
    r.put("low_power.wakeup_short", ok(d.feature_set(Feature::LowPowerEntryWithWakeup, &[0; 4])));
    match d.new_eventfds(1) {
        Ok(fds) => {
            r.put("low_power.wakeup", ok(d.low_power_entry_with_wakeup(&fds[0])));
            r.put("low_power.wakeup_exit", ok(d.low_power_exit()));
        }
        Err(e) => r.put("low_power.wakeup", outcome_err(&e)),
    }
}

/// How long scenario waits may take at most (kept for interrupt polls).
pub const WAIT: Duration = Duration::from_secs(1);
