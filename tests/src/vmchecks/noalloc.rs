//! Check 5: the hot paths allocate nothing on the real kernel.
//!
//! The binary's global allocator counts allocations made by a thread while it is armed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use vfio_core::{DmaPerm, IrqIndex, PciAddress, Vfio};

use super::report::{ensure, Ctx, Outcome, Report};
use super::{Mem, Mode};

/// Forwards to the system allocator, counting allocations on armed threads.
pub struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards every call to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if ARMED.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if ARMED.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if ARMED.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, n) }
    }
}

/// Allocations made by this thread while `f` runs, and its result.
fn counted<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let before = ALLOCS.load(Ordering::Relaxed);
    ARMED.with(|a| a.set(true));
    let r = f();
    ARMED.with(|a| a.set(false));
    (ALLOCS.load(Ordering::Relaxed) - before, r)
}

/// Check 5 in one mode: each hot-path call succeeds and allocates nothing.
pub fn zero_allocations(rep: &mut Report, vfio: &Vfio, edu: PciAddress, mode: &Mode) {
    let dma = if mode.dma { "DMA map/unmap, " } else { "" };
    let name = format!(
        "zero allocations [{}]: {dma}region read/write, BAR mmap read/write, config read, IRQ trigger",
        mode.name
    );
    let r = (|| -> Outcome {
        let device = vfio.open(edu, mode.interface).ctx("open edu")?;
        device.enable_bus_master().ctx("bus master")?;
        let bar = device.bar(0).ctx("BAR0")?;
        ensure(bar.is_mapped(0, 4), || "BAR0 is not mmap'd".into())?;
        let fds = device.new_eventfds(1).ctx("eventfd")?;
        device.enable_irqs_all(IrqIndex::Msi, 0, &fds).ctx("enable MSI")?;
        let space = device.address_space();
        let mem = Mem::new(4096);
        let mut bad = Vec::new();
        let mut note = |what: &str, (n, ok): (u64, Result<bool, vfio_core::Error>)| match ok {
            Ok(true) if n == 0 => {}
            Ok(true) => bad.push(format!("{what}: {n} allocations")),
            Ok(false) => bad.push(format!("{what}: wrong value")),
            Err(e) => bad.push(format!("{what}: {e}")),
        };
        if mode.dma {
            note(
                "DMA map",
                // SAFETY: `mem` outlives the mapping, unmapped just below.
                counted(|| {
                    unsafe { space.map(mem.addr(), 0x10_0000, 4096, DmaPerm::ReadWrite) }
                        .map(|()| true)
                }),
            );
            note("DMA unmap", counted(|| space.unmap(0x10_0000, 4096).map(|n| n == 4096)));
        }
        note(
            "region write (pwrite BAR0 liveness)",
            counted(|| device.write_region(0, 4, &0x1111_2222u32.to_le_bytes()).map(|()| true)),
        );
        note(
            "region read (pread BAR0 liveness)",
            counted(|| {
                let mut b = [0u8; 4];
                device.read_region(0, 4, &mut b).map(|()| u32::from_le_bytes(b) == !0x1111_2222u32)
            }),
        );
        note("BAR mmap write", counted(|| bar.write(4, 0x3333_4444u32).map(|()| true)));
        note("BAR mmap read", counted(|| bar.read::<u32>(4).map(|v| v == !0x3333_4444u32)));
        note("config read", counted(|| device.config_read_u16(0).map(|v| v == 0x1234)));
        note(
            "IRQ trigger (MSI)",
            counted(|| device.trigger_irqs(IrqIndex::Msi, 0, 1).map(|()| true)),
        );
        let fired = super::driver::wait_eventfd(&fds[0], super::edu::TIMEOUT).is_some();
        let _ = device.disable_irqs(IrqIndex::Msi);
        ensure(fired, || "the triggered MSI did not reach the eventfd".into())?;
        ensure(bad.is_empty(), || bad.join("; "))
    })();
    rep.check(name, r);
}
