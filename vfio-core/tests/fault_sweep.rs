//! Fault-injection sweep: every kernel call of each flow fails in turn, with each
//! plausible errno, and afterwards nothing is leaked and the error names what failed.
//!
//! For each flow a dry run on a fresh simulated host counts the calls of every kernel
//! operation; then, for each operation `op` called `n` times and each errno, the flow runs
//! again on a fresh host with the `k`th call of `op` failing (`k` in `1..=n`). After the
//! flow has dropped every object it made:
//!
//! - the mock kernel holds no descriptor, DMA mapping or region mapping
//!   (`open_fds`, `dma_mappings`, `mmaps` are back at their baseline of zero);
//! - the process has as many real descriptors as before (eventfds are real);
//! - the flow either recovered (a call the library may retry or ignore, listed per flow)
//!   or returned an error whose [`Error::kernel_op`] is the failed operation and whose
//!   errno is the injected one.
//!
//! Tests in this file run one at a time (a lock) so that counting the process's real
//! descriptors is not disturbed by another test opening some.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use vfio_core::dma::{Backing, BatchEntry};
use vfio_core::kernel::{Errno, KernelOp};
use vfio_core::mock::{DeviceSpec, Fault, MockHost, MockKernel};
use vfio_core::{DmaPerm, DmaPool, Error, Interface, IrqIndex, PciAddress, Vfio};

const NVME: &str = "0000:01:00.0";
const ERRNOS: [Errno; 6] =
    [Errno::EIO, Errno::ENOMEM, Errno::EBUSY, Errno::EINVAL, Errno::EPERM, Errno::ENOSPC];

/// Every kernel operation of the seam.
const ALL_OPS: &[KernelOp] = &[
    KernelOp::OpenContainer,
    KernelOp::OpenGroup,
    KernelOp::OpenIommufd,
    KernelOp::OpenDeviceCdev,
    KernelOp::Close,
    KernelOp::GetApiVersion,
    KernelOp::CheckExtension,
    KernelOp::SetIommu,
    KernelOp::IommuGetInfo,
    KernelOp::MapDma,
    KernelOp::UnmapDma,
    KernelOp::GroupGetStatus,
    KernelOp::GroupSetContainer,
    KernelOp::GroupUnsetContainer,
    KernelOp::GroupGetDeviceFd,
    KernelOp::DeviceGetInfo,
    KernelOp::DeviceGetRegionInfo,
    KernelOp::DeviceGetIrqInfo,
    KernelOp::DeviceSetIrqs,
    KernelOp::DeviceReset,
    KernelOp::DeviceGetPciHotResetInfo,
    KernelOp::DevicePciHotReset,
    KernelOp::DeviceBindIommufd,
    KernelOp::DeviceAttachIommufdPt,
    KernelOp::DeviceDetachIommufdPt,
    KernelOp::RegionRead,
    KernelOp::RegionWrite,
    KernelOp::Mmap,
    KernelOp::Munmap,
    KernelOp::IoasAlloc,
    KernelOp::IoasMap,
    KernelOp::IoasUnmap,
    KernelOp::IoasIovaRanges,
    KernelOp::IoasMapFile,
    KernelOp::IoasChangeProcess,
    KernelOp::IommufdDestroy,
    KernelOp::EventFd,
    KernelOp::MemlockLimit,
    KernelOp::DeviceFeature,
];

/// Operations not injected: `munmap` of a mapping the library made fails only on a bad
/// argument, and an injected failure leaves the mapping in place by construction.
const NOT_INJECTED: &[KernelOp] = &[KernelOp::Munmap];

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn real_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

fn host() -> MockHost {
    let h = MockHost::new([DeviceSpec::nvme(NVME).group(5).driver("vfio-pci")]);
    // Pinned memory is not the subject here: unlimited, as for root.
    let mut cfg = h.kernel_config();
    cfg.cap_ipc_lock = true;
    h.set_kernel_config(cfg);
    h
}

fn nvme() -> PciAddress {
    PciAddress::parse(NVME).unwrap()
}

/// One flow: runs against a fresh host and drops everything it made before returning.
type Flow = dyn Fn(&Vfio) -> vfio_core::Result<()>;

/// What one injected fault led to, for the report of a failed sweep.
#[derive(Debug)]
struct Case {
    op: KernelOp,
    nth: u64,
    errno: Errno,
}

/// Runs `flow` with every call of every operation failing in turn.
///
/// `tolerated` says which failures the flow may absorb (returning `Ok`), given the case
/// and how many calls of its operation the dry run made: calls made while tearing down
/// (a failed close or unmap leaves nothing behind once the descriptor is gone) or
/// probes the library falls back from.
fn sweep(name: &str, flow: &Flow, tolerated: &dyn Fn(&Case, u64) -> bool) -> usize {
    let _serial = serial();
    // The dry run: it must succeed and it tells the call sequence.
    let h = host();
    let k = h.kernel();
    let vfio = Vfio::new(k.clone(), h.fs());
    flow(&vfio).unwrap_or_else(|e| panic!("{name}: the dry run failed: {e}"));
    drop(vfio);
    assert_leak_free(name, &k, None);
    let counts: BTreeMap<KernelOp, u64> = ALL_OPS
        .iter()
        .map(|&op| (op, k.calls(op)))
        .filter(|&(op, n)| n > 0 && !NOT_INJECTED.contains(&op))
        .collect();
    assert!(!counts.is_empty(), "{name}: the flow made no kernel call");

    let mut cases = 0;
    let mut problems = vec![];
    for (&op, &n) in &counts {
        for nth in 1..=n {
            for errno in ERRNOS {
                let case = Case { op, nth, errno };
                let fds_before = real_fds();
                let h = host();
                let k = h.kernel();
                h.inject(Fault::kernel(op).errno(errno).nth(nth as u32));
                let vfio = Vfio::new(k.clone(), h.fs());
                let result = flow(&vfio);
                drop(vfio);
                cases += 1;
                if let Some(p) = leak(&k) {
                    problems.push(format!("{case:?}: {p}"));
                }
                // The host is left as found: the device is still on vfio-pci.
                let drv = h.state().devices.get(&nvme()).and_then(|d| d.driver.clone());
                if drv.as_deref() != Some("vfio-pci") {
                    problems.push(format!("{case:?}: device left on {drv:?}"));
                }
                // The simulated host owns real descriptors too (BAR memfds): count once
                // it is gone.
                drop((h, k));
                let fds_after = real_fds();
                if fds_after != fds_before {
                    problems.push(format!(
                        "{case:?}: {} real descriptors leaked",
                        fds_after as i64 - fds_before as i64
                    ));
                }
                match result {
                    Ok(()) if tolerated(&case, n) => {}
                    Ok(()) => problems.push(format!("{case:?}: the failure went unreported")),
                    Err(e) => {
                        if e.kernel_op() != Some(op) || e.errno() != Some(errno) {
                            problems.push(format!(
                                "{case:?}: the error does not name the failure: {:?} {:?}: {e}",
                                e.kernel_op(),
                                e.errno()
                            ));
                        }
                        check_message(&e, op, errno, &case, &mut problems);
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{name}: {} problems:\n{}", problems.len(), problems.join("\n"));
    cases
}

fn check_message(e: &Error, op: KernelOp, errno: Errno, case: &Case, problems: &mut Vec<String>) {
    if matches!(e, Error::Kernel { .. }) {
        let msg = e.to_string();
        if !msg.contains(op.kernel_name())
            || !msg.contains(errno.desc()) && !msg.contains(&format!("{errno}"))
        {
            problems.push(format!("{case:?}: message lacks the operation or errno: {msg}"));
        }
        if msg.contains('\n') {
            problems.push(format!("{case:?}: message spans lines: {msg}"));
        }
    }
}

fn leak(k: &MockKernel) -> Option<String> {
    let (fds, dmas, maps) = (k.open_fds(), k.dma_mappings(), k.mmaps());
    (fds + dmas + maps > 0)
        .then(|| format!("left behind: {fds} descriptors, {dmas} DMA mappings, {maps} mmaps"))
}

fn assert_leak_free(name: &str, k: &Arc<MockKernel>, case: Option<&Case>) {
    if let Some(p) = leak(k) {
        panic!("{name} {case:?}: {p}");
    }
}

/// Failures every flow may absorb on the legacy interface: closing (the descriptor is
/// gone either way), leaving the container on close, and EINVAL for the last region
/// (VGA, which vfio-pci answers with EINVAL on a device without one). A failed
/// `CHECK_EXTENSION` or `SET_IOMMU` is reported, never papered over by falling back to
/// an older IOMMU type.
fn container_ok(c: &Case, n: u64) -> bool {
    matches!(c.op, KernelOp::Close | KernelOp::GroupUnsetContainer) || vga_absent(c, n)
}

/// The same for iommufd: closing, detaching and destroying the IOAS on the way out.
fn iommufd_ok(c: &Case, n: u64) -> bool {
    matches!(c.op, KernelOp::Close | KernelOp::DeviceDetachIommufdPt | KernelOp::IommufdDestroy)
        || vga_absent(c, n)
}

fn vga_absent(c: &Case, n: u64) -> bool {
    c.op == KernelOp::DeviceGetRegionInfo && c.errno == Errno::EINVAL && c.nth == n
}

/// Unmapping on drop may fail: the mapping goes with the address space.
fn unmap_ok(c: &Case) -> bool {
    matches!(c.op, KernelOp::UnmapDma | KernelOp::IoasUnmap | KernelOp::Munmap)
}

fn open_flow(interface: Interface) -> impl Fn(&Vfio) -> vfio_core::Result<()> {
    move |vfio: &Vfio| {
        let d = vfio.open(nvme(), interface)?;
        // Something the open device must answer.
        let _ = d.config_read_u16(0)?;
        Ok(())
    }
}

#[test]
fn open_through_the_container_fails_cleanly_at_every_call() {
    let n = sweep("open/container", &open_flow(Interface::Container), &container_ok);
    assert!(n > 50, "{n} cases");
}

#[test]
fn open_through_iommufd_fails_cleanly_at_every_call() {
    let n = sweep("open/iommufd", &open_flow(Interface::Iommufd), &iommufd_ok);
    assert!(n > 50, "{n} cases");
}

/// Allocates a buffer, maps user memory at a pool-chosen IOVA and a batch of three
/// entries (two of them contiguous), writes through the buffer, then drops it all.
fn dma_flow(interface: Interface) -> impl Fn(&Vfio) -> vfio_core::Result<()> {
    move |vfio: &Vfio| {
        let d = vfio.open(nvme(), interface)?;
        let pool = DmaPool::new(d.address_space())?;
        let buf = pool.alloc(3 * 4096)?;
        buf.write(0, b"sweep")?;
        let big = pool.alloc_with(8192, Backing::Anonymous, DmaPerm::Read)?;
        let mem = memmap2::MmapMut::map_anon(4 * 4096).unwrap();
        let base = mem.as_ptr() as u64;
        // SAFETY: `mem` outlives every mapping made from it (they are dropped first).
        let user = unsafe { pool.map_user(base, 4096, DmaPerm::ReadWrite)? };
        let entries = [
            BatchEntry { vaddr: base + 4096, iova: 0x1000_0000, size: 4096, slot: 0 },
            BatchEntry { vaddr: base + 8192, iova: 0x1000_1000, size: 4096, slot: 0 },
            BatchEntry { vaddr: base + 12288, iova: 0x2000_0000, size: 4096, slot: 0 },
        ];
        // SAFETY: as above.
        let batch = unsafe { pool.map_batch(&entries, DmaPerm::ReadWrite)? };
        assert_eq!(batch.len(), 2);
        drop(batch);
        drop(user);
        drop(big);
        drop(buf);
        drop(mem);
        Ok(())
    }
}

#[test]
fn dma_mapping_through_the_container_fails_cleanly_at_every_call() {
    sweep("dma/container", &dma_flow(Interface::Container), &|c, n| {
        container_ok(c, n) || unmap_ok(c)
    });
}

#[test]
fn dma_mapping_through_iommufd_fails_cleanly_at_every_call() {
    sweep("dma/iommufd", &dma_flow(Interface::Iommufd), &|c, n| iommufd_ok(c, n) || unmap_ok(c));
}

/// Live update on iommufd: guest RAM mapped from a memfd, taken over, unmapped.
fn live_update_flow(vfio: &Vfio) -> vfio_core::Result<()> {
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    let d = vfio.open(nvme(), Interface::Iommufd)?;
    let vfio_core::AddressSpace::Ioas(ioas) = d.address_space() else { unreachable!() };
    // SAFETY: memfd_create takes a NUL-terminated name; the descriptor is owned below.
    let ram =
        unsafe { OwnedFd::from_raw_fd(libc::memfd_create(c"ram".as_ptr(), libc::MFD_CLOEXEC)) };
    // SAFETY: ftruncate of our own memfd.
    assert_eq!(unsafe { libc::ftruncate(std::os::fd::AsRawFd::as_raw_fd(&ram), 4 * 4096) }, 0);
    // SAFETY: the memfd is the flow's own; nothing references its pages.
    let iova =
        unsafe { ioas.map_file(ram.as_fd(), 0, Some(0x10_0000), 4 * 4096, DmaPerm::ReadWrite)? };
    ioas.iommufd().change_process()?;
    ioas.unmap_dma(iova, 4 * 4096)?;
    Ok(())
}

#[test]
fn live_update_through_iommufd_fails_cleanly_at_every_call() {
    sweep("liveupdate/iommufd", &live_update_flow, &|c, n| iommufd_ok(c, n) || unmap_ok(c));
}

/// Enables every MSI-X vector on eventfds, triggers one, disables them, then maps BAR0.
fn irq_flow(interface: Interface) -> impl Fn(&Vfio) -> vfio_core::Result<()> {
    move |vfio: &Vfio| {
        let d = vfio.open(nvme(), interface)?;
        let info = d.irq_info(IrqIndex::Msix)?;
        let fds = d.new_eventfds(info.count.min(4) as usize)?;
        d.enable_irqs_all(IrqIndex::Msix, 0, &fds)?;
        d.trigger_irqs(IrqIndex::Msix, 0, 1)?;
        d.disable_irqs(IrqIndex::Msix)?;
        let map = d.map_region(0)?;
        let _: u32 = map.read(0)?;
        Ok(())
    }
}

#[test]
fn set_irqs_and_mmap_fail_cleanly_at_every_call() {
    sweep("irqs/container", &irq_flow(Interface::Container), &|c, n| {
        container_ok(c, n) || unmap_ok(c)
    });
    sweep("irqs/iommufd", &irq_flow(Interface::Iommufd), &|c, n| iommufd_ok(c, n) || unmap_ok(c));
}

/// A function reset, then the hot-reset dependency list.
fn reset_flow(interface: Interface) -> impl Fn(&Vfio) -> vfio_core::Result<()> {
    move |vfio: &Vfio| {
        let d = vfio.open(nvme(), interface)?;
        assert!(d.can_reset());
        d.reset()?;
        let affected = d.hot_reset_info()?;
        assert!(affected.iter().any(|a| a.address == nvme()), "{affected:?}");
        Ok(())
    }
}

#[test]
fn reset_fails_cleanly_at_every_call() {
    sweep("reset/container", &reset_flow(Interface::Container), &container_ok);
    sweep("reset/iommufd", &reset_flow(Interface::Iommufd), &iommufd_ok);
}

/// Low power allowed and disallowed again (`VFIO_DEVICE_FEATURE`).
fn feature_flow(interface: Interface) -> impl Fn(&Vfio) -> vfio_core::Result<()> {
    move |vfio: &Vfio| {
        let d = vfio.open(nvme(), interface)?;
        d.low_power_entry()?;
        d.low_power_exit()?;
        Ok(())
    }
}

#[test]
fn device_features_fail_cleanly_at_every_call() {
    sweep("feature/container", &feature_flow(Interface::Container), &container_ok);
    sweep("feature/iommufd", &feature_flow(Interface::Iommufd), &iommufd_ok);
}

/// The dependent-device list decodes as `struct vfio_pci_dependent_device` lays it out
/// (the group id or devid first, then segment, bus, devfn).
#[test]
fn hot_reset_info_names_the_device_and_its_group() {
    let _serial = serial();
    let h = host();
    let vfio = Vfio::new(h.kernel(), h.fs());
    let d = vfio.open(nvme(), Interface::Container).unwrap();
    let affected = d.hot_reset_info().unwrap();
    assert_eq!(affected.len(), 1, "{affected:?}");
    assert_eq!(affected[0].address, nvme());
    assert_eq!(affected[0].group_or_devid, 5);
}

/// The sweep itself must be able to fail: a flow that leaks a descriptor is caught.
#[test]
#[should_panic(expected = "descriptors")]
fn the_sweep_catches_a_leaked_descriptor() {
    let leaky = |vfio: &Vfio| -> vfio_core::Result<()> {
        let d = vfio.open(nvme(), Interface::Container)?;
        std::mem::forget(d);
        Ok(())
    };
    sweep("leaky", &leaky, &|_, _| false);
}
