//! Benchmarks of vfio-core's hot paths.
//!
//! On a real device (`VFIO_BENCH_DEVICE=0000:00:04.0`, bound to vfio-pci, as root) every
//! kernel-facing operation is measured three ways in one run — vfio-core, the raw-C
//! baseline doing the same ioctls, and vfio-ioctls 0.10 where it offers the operation
//! (on a second device, `VFIO_BENCH_PEER`, since a group can be open only once) — with
//! the candidates interleaved round by round; the table of medians and ratios is printed
//! and written to `target/vfio-bench/real.json`. `VFIO_BENCH_INTERFACE=container|iommufd`
//! picks the interface (default: auto).
//!
//! Everywhere, criterion benchmarks run the same operations on the mock kernel: that is
//! the library's own cost per call (the mock stands in for the kernel), plus the pure
//! parts (IOVA allocator, config decode) and the batch-map comparison. Set
//! `VFIO_BENCH_SMOKE=1` for a quick run that only checks everything works, and
//! `VFIO_BENCH_MOCK=0` to run only the real-device part.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use vfio_benches::{c, compare, table, Candidate, Comparison};
use vfio_core::container::Container;
use vfio_core::dma::{Backing, BatchEntry, HostMemory};
use vfio_core::iova::IovaAllocator;
use vfio_core::kernel::RealKernel;
use vfio_core::mock::{DeviceSpec, MockHost, MockKernelConfig};
use vfio_core::{AddressSpace, DmaPerm, Interface, IrqIndex, PciAddress, RegionIndex, Vfio};
use vfio_ioctls::{VfioContainer, VfioDevice, VfioOps};
use vmm_sys_util::eventfd::EventFd;

fn smoke() -> bool {
    std::env::var_os("VFIO_BENCH_SMOKE").is_some()
}

fn rounds() -> usize {
    if smoke() {
        3
    } else {
        41
    }
}

fn env_device(var: &str) -> Option<PciAddress> {
    let v = std::env::var(var).ok()?;
    match PciAddress::parse(&v) {
        Ok(a) => Some(a),
        Err(e) => {
            eprintln!("bench: {var}: {e}");
            None
        }
    }
}

/// Anonymous, populated memory for DMA.
fn mem(len: usize) -> HostMemory {
    HostMemory::new(len, Backing::Anonymous).expect("benchmark memory")
}

/// The vfio-ioctls side: its own container with the peer device.
struct Peer {
    container: Arc<VfioContainer>,
    device: VfioDevice,
    efd: EventFd,
}

fn open_peer(addr: PciAddress) -> Option<Peer> {
    let container = Arc::new(VfioContainer::new(None).ok()?);
    let sysfs = format!("/sys/bus/pci/devices/{addr}");
    let ops: Arc<dyn VfioOps> = container.clone();
    let device = match VfioDevice::new(Path::new(&sysfs), ops, false) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("bench: vfio-ioctls cannot open {addr}: {e}");
            return None;
        }
    };
    let efd = EventFd::new(libc::EFD_CLOEXEC).ok()?;
    Some(Peer { container, device, efd })
}

fn real(addr: PciAddress) -> Result<Vec<Comparison>, vfio_core::Error> {
    let interface = match std::env::var("VFIO_BENCH_INTERFACE").as_deref() {
        Ok("container") => Interface::Container,
        Ok("iommufd") => Interface::Iommufd,
        _ => Interface::Auto,
    };
    let vfio = Vfio::host();
    let dev = vfio.open(addr, interface)?;
    let space = dev.address_space();
    let devfd = dev.as_raw_fd();
    let peer = env_device("VFIO_BENCH_PEER").and_then(open_peer);
    if peer.is_none() {
        eprintln!("bench: no VFIO_BENCH_PEER device: vfio-ioctls columns stay empty");
    }
    let mem = mem(4 << 20);
    let vaddr = mem.addr();
    let iova = 0x20_0000u64;
    let mut rows = Vec::new();

    // The floor: the cheapest VFIO ioctl.
    let floor = Container::open(Arc::new(RealKernel::new()), None)?;
    let ffd = floor.as_raw_fd();
    rows.push(compare(
        "VFIO_GET_API_VERSION (syscall floor)",
        &mut [
            Candidate::new("vfio-core", || {
                floor.api_version().unwrap();
            }),
            // SAFETY: a valid container fd; the ioctl writes no memory.
            Candidate::new("C", || assert!(unsafe { c::vb_api_version(ffd) } >= 0)),
        ],
        rounds(),
        2000,
    ));

    // DMA map + unmap by size.
    for (label, size) in [("4 KiB", 4096u64), ("64 KiB", 65536), ("2 MiB", 2 << 20)] {
        let mut cands = vec![Candidate::new("vfio-core", || {
            // SAFETY: `mem` outlives the mapping, which is undone right away.
            unsafe { space.map(vaddr, iova, size, DmaPerm::ReadWrite) }.unwrap();
            assert_eq!(space.unmap(iova, size).unwrap(), size);
        })];
        match &space {
            AddressSpace::Container(ct) => {
                let cfd = ct.as_raw_fd();
                cands.push(Candidate::new("C", move || {
                    // SAFETY: as above; plain ioctls on a valid container fd.
                    assert_eq!(unsafe { c::vb_dma_map(cfd, vaddr, iova, size) }, 0);
                    // SAFETY: as above.
                    assert_eq!(unsafe { c::vb_dma_unmap(cfd, iova, size) }, size as i64);
                }));
            }
            AddressSpace::Ioas(ioas) => {
                let ifd = ioas.iommufd().as_raw_fd();
                let id = ioas.id();
                cands.push(Candidate::new("C", move || {
                    // SAFETY: as above, on a valid iommufd.
                    assert_eq!(unsafe { c::vb_ioas_map(ifd, id, vaddr, iova, size) }, 0);
                    // SAFETY: as above.
                    assert_eq!(unsafe { c::vb_ioas_unmap(ifd, id, iova, size) }, size as i64);
                }));
            }
        }
        if let Some(p) = &peer {
            cands.push(Candidate::new("vfio-ioctls", || {
                // SAFETY: as above.
                unsafe { p.container.vfio_dma_map(iova, size as usize, mem.as_ptr()) }.unwrap();
                p.container.vfio_dma_unmap(iova, size as usize).unwrap();
            }));
        }
        rows.push(compare(&format!("DMA map + unmap {label}"), &mut cands, rounds(), 200));
    }

    // Interrupts: software trigger to eventfd wake-up, and setup.
    let irq = if dev.irq_info(IrqIndex::Msix)?.count > 0 { IrqIndex::Msix } else { IrqIndex::Msi };
    let nvec = dev.irq_info(irq)?.count.min(64);
    let fds = dev.new_eventfds(nvec as usize)?;
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let mut cands = vec![
        Candidate::new("vfio-core", || {
            dev.enable_irqs_all(irq, 0, &fds).unwrap();
            dev.disable_irqs(irq).unwrap();
        }),
        Candidate::new("C", || {
            // SAFETY: `raw` holds `nvec` valid eventfds.
            assert_eq!(unsafe { c::vb_irq_eventfds(devfd, irq.raw(), 0, nvec, raw.as_ptr()) }, 0);
            // SAFETY: plain ioctl.
            assert_eq!(unsafe { c::vb_irq_disable(devfd, irq.raw()) }, 0);
        }),
    ];
    if let Some(p) = &peer {
        cands.push(Candidate::new("vfio-ioctls", || {
            p.device.enable_msi(vec![&p.efd]).unwrap();
            p.device.disable_msi().unwrap();
        }));
    }
    rows.push(compare(
        &format!("{irq:?} setup + teardown, {nvec} vector(s)"),
        &mut cands,
        rounds(),
        50,
    ));

    dev.enable_irqs_all(irq, 0, &fds[..1])?;
    let efd = &fds[0];
    if let Some(p) = &peer {
        p.device.enable_msi(vec![&p.efd]).unwrap();
    }
    let mut cands = vec![
        Candidate::new("vfio-core", || {
            dev.trigger_irqs(irq, 0, 1).unwrap();
            efd.read().unwrap();
        }),
        Candidate::new("C", || {
            // SAFETY: plain ioctl.
            assert_eq!(unsafe { c::vb_irq_trigger(devfd, irq.raw(), 0, 1) }, 0);
            efd.read().unwrap();
        }),
    ];
    if let Some(p) = &peer {
        cands.push(Candidate::new("vfio-ioctls", || {
            p.device.trigger_irq(1, 0).unwrap();
            p.efd.read().unwrap();
        }));
    }
    rows.push(compare("IRQ software trigger -> eventfd wake-up", &mut cands, rounds(), 500));
    dev.disable_irqs(irq)?;

    // BAR and config access.
    let bar0 = dev.region(RegionIndex::BAR0)?.clone();
    let cfg = dev.region(RegionIndex::CONFIG)?.clone();
    if bar0.size >= 4096 && !bar0.mmap_areas.is_empty() {
        let bar = dev.bar(RegionIndex::BAR0)?;
        // The C baseline maps BAR0 itself.
        // SAFETY: a fresh shared mapping of the device's BAR0, unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ,
                libc::MAP_SHARED,
                devfd,
                bar0.offset as i64,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let cands = &mut [
            Candidate::new("vfio-core", || {
                std::hint::black_box(bar.read::<u32>(0).unwrap());
            }),
            // SAFETY: `p` maps at least 4 bytes of BAR0.
            Candidate::new("C", || {
                std::hint::black_box(unsafe { c::vb_mmio_read32(p.cast()) });
            }),
        ];
        rows.push(compare("BAR0 32-bit read through mmap", cands, rounds(), 2000));
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(p, 4096) };
    }
    let mut pread_row = |name: &str, index: RegionIndex, offset: u64| {
        let mut cands = vec![
            Candidate::new("vfio-core", || {
                let mut b = [0u8; 4];
                dev.read_region(index, 0, &mut b).unwrap();
                std::hint::black_box(b);
            }),
            Candidate::new("C", || {
                let mut v = 0u32;
                // SAFETY: `v` is a valid out pointer.
                assert_eq!(unsafe { c::vb_pread32(devfd, offset, &mut v) }, 4);
                std::hint::black_box(v);
            }),
        ];
        if let Some(p) = &peer {
            cands.push(Candidate::new("vfio-ioctls", || {
                let mut b = [0u8; 4];
                p.device.region_read(index.raw(), &mut b, 0);
                std::hint::black_box(b);
            }));
        }
        rows.push(compare(name, &mut cands, rounds(), 1000));
    };
    if bar0.size >= 4 {
        pread_row("BAR0 32-bit read through pread", RegionIndex::BAR0, bar0.offset);
    }
    pread_row("config space 32-bit read", RegionIndex::CONFIG, cfg.offset);
    Ok(rows)
}

fn mock_host() -> (MockHost, Vfio) {
    let host = MockHost::new([
        DeviceSpec::nvme("0000:01:00.0").group(2).driver("vfio-pci"),
        DeviceSpec::edu("0000:00:04.0").group(1).driver("vfio-pci"),
    ]);
    host.set_kernel_config(MockKernelConfig {
        cap_ipc_lock: true,
        dma_entry_limit: u32::MAX,
        ..MockKernelConfig::default()
    });
    let vfio = Vfio::new(host.kernel(), host.fs());
    (host, vfio)
}

/// The library over the mock kernel, in both interfaces.
fn mock_benches(c: &mut Criterion) {
    let (host, vfio) = mock_host();
    let nvme = PciAddress::parse("0000:01:00.0").unwrap();
    let anon = mem(1 << 30);
    for (label, interface) in [("container", Interface::Container), ("iommufd", Interface::Iommufd)]
    {
        let dev = vfio.open(nvme, interface).unwrap();
        let space = dev.address_space();
        let mut g = c.benchmark_group(format!("mock/{label}/dma map+unmap"));
        for (name, size) in
            [("4KiB", 4096u64), ("64KiB", 65536), ("2MiB", 2 << 20), ("1GiB", 1 << 30)]
        {
            g.throughput(Throughput::Bytes(size));
            g.bench_function(BenchmarkId::new("anonymous", name), |b| {
                b.iter(|| {
                    // SAFETY: `anon` outlives the mapping, undone right away.
                    unsafe { space.map(anon.addr(), 1 << 32, size, DmaPerm::ReadWrite) }.unwrap();
                    space.unmap(1 << 32, size).unwrap();
                })
            });
        }
        g.finish();
        let mut g = c.benchmark_group(format!("mock/{label}/irq"));
        let fds = dev.new_eventfds(64).unwrap();
        for n in [1usize, 16, 64] {
            g.bench_function(BenchmarkId::new("msix setup+teardown", n), |b| {
                b.iter(|| {
                    dev.enable_irqs_all(IrqIndex::Msix, 0, &fds[..n]).unwrap();
                    dev.disable_irqs(IrqIndex::Msix).unwrap();
                })
            });
        }
        dev.enable_irqs_all(IrqIndex::Msix, 0, &fds[..1]).unwrap();
        g.bench_function("trigger -> eventfd wake-up", |b| {
            b.iter(|| {
                dev.trigger_irqs(IrqIndex::Msix, 0, 1).unwrap();
                fds[0].read().unwrap();
            })
        });
        dev.disable_irqs(IrqIndex::Msix).unwrap();
        g.finish();
        let mut g = c.benchmark_group(format!("mock/{label}/access"));
        let bar = dev.bar(RegionIndex::BAR0).unwrap();
        g.bench_function("BAR0 read32 mmap", |b| b.iter(|| bar.read::<u32>(0x8).unwrap()));
        g.bench_function("BAR0 read32 pread", |b| {
            b.iter(|| {
                let mut x = [0u8; 4];
                dev.read_region(RegionIndex::BAR0, 0x8, &mut x).unwrap();
                x
            })
        });
        g.bench_function("config read32", |b| b.iter(|| dev.config_read_u32(0).unwrap()));
        g.finish();
    }

    // Hugetlb backing, where the host has huge pages reserved.
    {
        let dev = vfio.open(nvme, Interface::Container).unwrap();
        let pool = vfio_core::DmaPool::new(dev.address_space()).unwrap();
        match pool.alloc_with(2 << 20, Backing::Huge2M, DmaPerm::ReadWrite) {
            Ok(buf) => {
                drop(buf);
                c.bench_function("mock/container/dma alloc+map+unmap/hugetlb 2MiB", |b| {
                    b.iter(|| {
                        pool.alloc_with(2 << 20, Backing::Huge2M, DmaPerm::ReadWrite).unwrap()
                    })
                });
            }
            Err(e) => println!("bench: hugetlb benchmarks skipped: {e}"),
        }
    }

    // Batch map of 1000 contiguous 4 KiB buffers against one call per buffer.
    {
        let dev = vfio.open(nvme, Interface::Container).unwrap();
        let pool = vfio_core::DmaPool::new(dev.address_space()).unwrap();
        let k = host.kernel();
        let entries: Vec<BatchEntry> = (0..1000u64)
            .map(|i| BatchEntry {
                vaddr: anon.addr() + i * 4096,
                iova: (1 << 32) + i * 4096,
                size: 4096,
                slot: 0,
            })
            .collect();
        let before = k.calls(vfio_core::kernel::KernelOp::MapDma);
        // SAFETY: `anon` outlives the mappings, dropped right away.
        drop(unsafe { pool.map_batch(&entries, DmaPerm::ReadWrite) }.unwrap());
        let batch_calls = k.calls(vfio_core::kernel::KernelOp::MapDma) - before;
        let before = k.calls(vfio_core::kernel::KernelOp::MapDma);
        let singles: Vec<_> = entries
            .iter()
            // SAFETY: as above.
            .map(|e| {
                unsafe { pool.map_user_at(e.vaddr, e.iova, e.size, DmaPerm::ReadWrite) }.unwrap()
            })
            .collect();
        drop(singles);
        let single_calls = k.calls(vfio_core::kernel::KernelOp::MapDma) - before;
        println!("bench: 1000 contiguous 4 KiB buffers: batch map {batch_calls} MAP_DMA call(s), one per buffer {single_calls}");
        let mut g = c.benchmark_group("mock/container/map 1000 x 4KiB");
        g.bench_function("map_batch", |b| {
            // SAFETY: as above.
            b.iter(|| drop(unsafe { pool.map_batch(&entries, DmaPerm::ReadWrite) }.unwrap()))
        });
        g.bench_function("one call per buffer", |b| {
            b.iter(|| {
                let v: Vec<_> = entries
                    .iter()
                    // SAFETY: as above.
                    .map(|e| {
                        unsafe { pool.map_user_at(e.vaddr, e.iova, e.size, DmaPerm::ReadWrite) }
                            .unwrap()
                    })
                    .collect();
                drop(v)
            })
        });
        g.finish();
    }

    // Pure parts.
    let ranges = [
        vfio_core::info::IovaRange { start: 0, last: 0xfedf_ffff },
        vfio_core::info::IovaRange { start: 0xfef0_0000, last: (1 << 48) - 1 },
    ];
    c.bench_function("iova allocator alloc+free 4KiB (1000 live)", |b| {
        let mut a = IovaAllocator::new(&ranges, 4096);
        let live: Vec<u64> = (0..1000).map(|_| a.alloc(4096, 0).unwrap()).collect();
        for x in live.iter().step_by(2) {
            a.free(*x, 4096);
        }
        b.iter(|| {
            let x = a.alloc(4096, 0).unwrap();
            a.free(x, 4096);
        })
    });
    let image = DeviceSpec::nvme("0000:01:00.0").config_image();
    c.bench_function("decode a device's config space (info)", |b| {
        b.iter(|| vfio_core::pci::config::decode(&image).unwrap())
    });
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(if smoke() { 50 } else { 500 }))
        .measurement_time(Duration::from_millis(if smoke() { 100 } else { 1500 }))
        .sample_size(if smoke() { 10 } else { 30 })
        .configure_from_args();
    if std::env::var("VFIO_BENCH_MOCK").as_deref() == Ok("0") {
        println!("bench: mock benchmarks skipped: VFIO_BENCH_MOCK=0");
    } else {
        mock_benches(&mut c);
        c.final_summary();
    }

    let Some(addr) = env_device("VFIO_BENCH_DEVICE") else {
        println!("bench: real-device benchmarks skipped: set VFIO_BENCH_DEVICE=ADDRESS (a device bound to vfio-pci, as root)");
        return;
    };
    match real(addr) {
        Ok(rows) => {
            let text = table(&rows);
            println!("\n{text}");
            let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
            let dir = Path::new(&dir).join("vfio-bench");
            let _ = std::fs::create_dir_all(&dir);
            let _ =
                std::fs::write(dir.join("real.json"), serde_json::to_string_pretty(&rows).unwrap());
            let _ = std::fs::write(dir.join("real.md"), text);
        }
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(1);
        }
    }
}
