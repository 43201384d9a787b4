//! Checks 1 and 6: the edu driver on the real kernel in one interface, and two edu devices
//! sharing one address space.

use std::sync::Arc;
use std::time::Duration;

use vfio_core::dma::Backing;
use vfio_core::{AddressSpace, Device, DmaPerm, IrqIndex, PciAddress, Vfio};

use super::driver::{edu_pool, fill, Edu, MAX_DMA};
use super::report::{ensure, Ctx, Outcome, Report};
use super::{Mem, Mode};

/// How long to wait for an interrupt or a DMA completion.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Check 1 in one mode: identify, liveness, factorial with MSI and with INTx, DMA round
/// trip, DMA to an unmapped IOVA.
pub fn driver_checks(rep: &mut Report, vfio: &Vfio, edu: PciAddress, mode: &Mode) {
    let label = format!("edu driver [{}]", mode.name);
    let device = match vfio.open(edu, mode.interface) {
        Ok(d) => d,
        Err(e) => return rep.check(format!("{label}: open"), Err(e.to_string())),
    };
    let got = vfio_tests::conformance::mode_name(&device);
    rep.check(
        format!("{label}: opened in mode {got}"),
        ensure(got == mode.name, || format!("expected mode {}", mode.name)),
    );
    let mut drv = match Edu::new(&device) {
        Ok(d) => d,
        Err(e) => return rep.check(format!("{label}: BAR0 and bus master"), Err(e.to_string())),
    };
    rep.check(
        format!("{label}: BAR0 is mmap'd"),
        ensure(drv.bar.is_mapped(0, 4), || "BAR0 accesses go through pread/pwrite".into()),
    );
    rep.check(format!("{label}: identify"), identify(&drv));
    rep.check(format!("{label}: liveness"), liveness(&drv));
    rep.check(format!("{label}: factorial with MSI on an eventfd"), factorial_msi(&mut drv));
    if mode.dma {
        rep.check(format!("{label}: DMA RAM -> edu -> RAM, {MAX_DMA} bytes"), dma_round_trip(&drv));
        rep.check(format!("{label}: DMA to an unmapped IOVA does not land"), dma_unmapped(&drv));
        rep.check(format!("{label}: DMA into a 2 MiB hugetlb buffer"), dma_hugetlb(&drv));
        rep.check(
            format!("{label}: a read-only mapping is read by the device and never written"),
            dma_read_only(&drv),
        );
        if let AddressSpace::Container(c) = device.address_space() {
            if matches!(c.supports_vaddr_update(), Ok(false)) {
                let e = c.invalidate_vaddr(0, 0, true);
                rep.check(
                    format!("{label}: live update: this container has no VFIO_UPDATE_VADDR (iommufd's compat container), and invalidate_vaddr says so"),
                    ensure(matches!(e, Err(vfio_core::Error::Unsupported { .. })), || format!("{e:?}")),
                );
            } else {
                rep.check(
                    format!("{label}: live update (VFIO_UPDATE_VADDR): guest RAM moved to a new address, the DMA lands in it"),
                    live_update(&drv, &c),
                );
            }
        }
    } else {
        rep.skip(
            format!("{label}: DMA"),
            "no-IOMMU mode has no DMA mapping (devices use physical addresses)",
        );
    }
    let _ = device.disable_irqs(IrqIndex::Msi);
    drv.irq = None;
    rep.check(
        format!("{label}: factorial with INTx on an eventfd, unmasked after each"),
        factorial_intx(&mut drv),
    );
    let _ = device.disable_irqs(IrqIndex::Intx);
}

/// A memfd mapped shared, as guest RAM kept across a live update.
fn memfd_map(fd: i32, len: usize) -> Result<u64, String> {
    // SAFETY: a new shared mapping of our own memfd; the caller unmaps it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    ensure(p != libc::MAP_FAILED, || format!("mmap: {}", std::io::Error::last_os_error()))?;
    Ok(p as u64)
}

fn live_update(drv: &Edu, c: &vfio_core::Container) -> Outcome {
    let len = 1usize << 16;
    // SAFETY: memfd_create takes a NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"ram".as_ptr(), libc::MFD_CLOEXEC) };
    ensure(fd >= 0, || "memfd_create".into())?;
    // SAFETY: ftruncate of our memfd.
    ensure(unsafe { libc::ftruncate(fd, len as i64) } == 0, || "ftruncate".into())?;
    let r = (|| -> Outcome {
        let old = memfd_map(fd, len)?;
        let iova = 0x80_0000;
        // SAFETY: `old` stays mapped until the addresses are invalidated.
        unsafe { c.map_dma(old, iova, len as u64, DmaPerm::ReadWrite) }.ctx("map")?;
        let n = c.invalidate_vaddr(iova, len as u64, false).ctx("invalidate vaddr")?;
        ensure(n == len as u64, || format!("invalidated {n} bytes"))?;
        // SAFETY: no mapping names `old` any more.
        unsafe { libc::munmap(old as *mut libc::c_void, len) };
        let new = memfd_map(fd, len)?;
        // SAFETY: `new` maps the same pages; unmapped after the IOVA range below.
        unsafe { c.update_vaddr(new, iova, len as u64) }.ctx("update vaddr")?;
        let pool = edu_pool(drv.device).ctx("pool")?;
        let src = pool.alloc(4096).ctx("alloc")?;
        let data = fill(&src, 11, MAX_DMA as usize).ctx("fill")?;
        let ok = drv.dma_to_device(src.iova(), MAX_DMA, TIMEOUT).ctx("DMA to edu")?
            && drv.dma_from_device(iova, MAX_DMA, TIMEOUT).ctx("DMA to the updated RAM")?;
        // SAFETY: `new` maps `len` bytes.
        let got = unsafe { std::slice::from_raw_parts(new as *const u8, MAX_DMA as usize) };
        let same = got == &data[..];
        c.unmap_dma(iova, len as u64).ctx("unmap")?;
        // SAFETY: unmapped from the IOMMU above.
        unsafe { libc::munmap(new as *mut libc::c_void, len) };
        ensure(ok && same, || format!("DMA completed {ok}, data landed {same}"))
    })();
    // SAFETY: our memfd.
    unsafe { libc::close(fd) };
    r
}

fn identify(drv: &Edu) -> Outcome {
    let id = drv.identify().ctx("read ident")?;
    ensure(id == Some((1, 0)), || format!("identify gave {id:?}, expected edu 1.0"))
}

fn liveness(drv: &Edu) -> Outcome {
    for v in [0x1234_5678u32, 0, 0xffff_ffff, 0xa5a5_5a5a] {
        ensure(drv.liveness(v).ctx("liveness")?, || format!("{v:#x} did not read back inverted"))?;
    }
    Ok(())
}

fn factorial_msi(drv: &mut Edu) -> Outcome {
    drv.enable_msi().ctx("enable MSI")?;
    for (n, want) in [(5u32, 120u32), (10, 3_628_800)] {
        let (got, irq) = drv.factorial(n, TIMEOUT).ctx("factorial")?;
        ensure(got == want, || format!("{n}! read {got}, expected {want}"))?;
        ensure(irq, || format!("no MSI on the eventfd for {n}!"))?;
    }
    Ok(())
}

fn factorial_intx(drv: &mut Edu) -> Outcome {
    let fds = drv.device.new_eventfds(1).ctx("eventfd")?;
    drv.device.enable_irqs_all(IrqIndex::Intx, 0, &fds).ctx("enable INTx")?;
    drv.irq = fds.into_iter().next();
    // Two rounds: the second interrupt arrives only if the unmask after the first worked.
    for (n, want) in [(4u32, 24u32), (6, 720)] {
        let (got, irq) = drv.factorial(n, TIMEOUT).ctx("factorial")?;
        ensure(got == want, || format!("{n}! read {got}, expected {want}"))?;
        ensure(irq, || format!("no INTx on the eventfd for {n}!"))?;
        drv.device.unmask_irqs(IrqIndex::Intx, 0, 1).ctx("unmask INTx")?;
    }
    drv.irq = None;
    Ok(())
}

fn dma_round_trip(drv: &Edu) -> Outcome {
    let pool = edu_pool(drv.device).ctx("DMA pool")?;
    let src = pool.alloc(4096).ctx("alloc")?;
    let dst = pool.alloc(4096).ctx("alloc")?;
    let data = fill(&src, 0x5a, MAX_DMA as usize).ctx("fill")?;
    ensure(drv.dma_to_device(src.iova(), MAX_DMA, TIMEOUT).ctx("DMA")?, || {
        format!("RAM -> edu from IOVA {:#x} did not complete with its interrupt", src.iova())
    })?;
    ensure(drv.dma_from_device(dst.iova(), MAX_DMA, TIMEOUT).ctx("DMA")?, || {
        format!("edu -> RAM to IOVA {:#x} did not complete with its interrupt", dst.iova())
    })?;
    let mut back = vec![0u8; MAX_DMA as usize];
    dst.read(0, &mut back).ctx("read")?;
    let bad = back.iter().zip(&data).filter(|(a, b)| a != b).count();
    ensure(bad == 0, || format!("{bad} of {MAX_DMA} bytes differ after the round trip"))
}

fn dma_unmapped(drv: &Edu) -> Outcome {
    let pool = edu_pool(drv.device).ctx("DMA pool")?;
    // Load edu's buffer with a pattern through a mapped buffer.
    let src = pool.alloc(4096).ctx("alloc")?;
    fill(&src, 0x11, MAX_DMA as usize).ctx("fill")?;
    drv.dma_to_device(src.iova(), MAX_DMA, TIMEOUT).ctx("DMA")?;
    // Memory mapped once, then unmapped but kept.
    let mem = Mem::new(4096);
    mem.fill(0xc3);
    // SAFETY: `mem` outlives the mapping, which is unmapped on the next line.
    let m = unsafe { pool.map_user(mem.addr(), 4096, DmaPerm::ReadWrite) }.ctx("map")?;
    let iova = m.iova();
    let unmapped = m.unmap().ctx("unmap")?;
    ensure(unmapped == 4096, || format!("unmap reported {unmapped} bytes, expected 4096"))?;
    // QEMU raises the completion interrupt even when the DMA faults: check the data only.
    drv.dma_from_device(iova, MAX_DMA, TIMEOUT).ctx("DMA")?;
    let changed = mem.bytes().iter().filter(|b| **b != 0xc3).count();
    ensure(changed == 0, || format!("{changed} bytes changed through unmapped IOVA {iova:#x}"))
}

/// A buffer of 2 MiB huge pages (the lab reserves some): mapped at a 2 MiB-aligned IOVA,
/// and the device writes into it at an offset past the first 4 KiB page.
fn dma_hugetlb(drv: &Edu) -> Outcome {
    let pool = edu_pool(drv.device).ctx("DMA pool")?;
    let huge = pool
        .alloc_with(2 << 20, Backing::Huge2M, DmaPerm::ReadWrite)
        .ctx("2 MiB hugetlb buffer (the lab reserves huge pages)")?;
    let iova = huge.iova();
    ensure(iova % (2 << 20) == 0, || format!("IOVA {iova:#x} is not 2 MiB aligned"))?;
    let src = pool.alloc(4096).ctx("alloc")?;
    let data = fill(&src, 0x77, MAX_DMA as usize).ctx("fill")?;
    drv.dma_to_device(src.iova(), MAX_DMA, TIMEOUT).ctx("DMA")?;
    let off = 1 << 20;
    drv.dma_from_device(iova + off as u64, MAX_DMA, TIMEOUT).ctx("DMA")?;
    let mut back = vec![0u8; MAX_DMA as usize];
    huge.read(off, &mut back).ctx("read")?;
    ensure(back == data, || "the data did not land in the hugetlb buffer".into())
}

/// `DmaPerm::Read`: the device reads the buffer, and its writes to it fault.
fn dma_read_only(drv: &Edu) -> Outcome {
    let pool = edu_pool(drv.device).ctx("DMA pool")?;
    let ro = pool.alloc_with(4096, Backing::Anonymous, DmaPerm::Read).ctx("read-only buffer")?;
    let data = fill(&ro, 0x3c, MAX_DMA as usize).ctx("fill")?;
    drv.dma_to_device(ro.iova(), MAX_DMA, TIMEOUT).ctx("DMA from the read-only buffer")?;
    let out = pool.alloc(4096).ctx("alloc")?;
    drv.dma_from_device(out.iova(), MAX_DMA, TIMEOUT).ctx("DMA")?;
    let mut back = vec![0u8; MAX_DMA as usize];
    out.read(0, &mut back).ctx("read")?;
    ensure(back == data, || "the device did not read the read-only buffer".into())?;
    // Now the device writes a different pattern towards the read-only buffer.
    let other = pool.alloc(4096).ctx("alloc")?;
    fill(&other, 0x99, MAX_DMA as usize).ctx("fill")?;
    drv.dma_to_device(other.iova(), MAX_DMA, TIMEOUT).ctx("DMA")?;
    drv.dma_from_device(ro.iova(), MAX_DMA, TIMEOUT).ctx("DMA")?;
    let mut now = vec![0u8; MAX_DMA as usize];
    ro.read(0, &mut now).ctx("read")?;
    ensure(now == data, || "a device write landed in a read-only mapping".into())
}

fn same_space(a: &AddressSpace, b: &AddressSpace) -> bool {
    match (a, b) {
        (AddressSpace::Container(x), AddressSpace::Container(y)) => Arc::ptr_eq(x, y),
        (AddressSpace::Ioas(x), AddressSpace::Ioas(y)) => Arc::ptr_eq(x, y),
        _ => false,
    }
}

/// Check 6: edu and edu2 in one container or IOAS, one buffer reached by both.
pub fn shared_space(rep: &mut Report, vfio: &Vfio, edu: PciAddress, edu2: PciAddress, mode: &Mode) {
    let name =
        format!("shared address space [{}]: edu and edu2, one buffer, DMA from each", mode.name);
    let r = (|| -> Outcome {
        let d1 = vfio.open(edu, mode.interface).ctx("open edu")?;
        let space = d1.address_space();
        let d2 = vfio.open_in(edu2, &space).ctx("open edu2 into edu's address space")?;
        ensure(same_space(&space, &d2.address_space()), || {
            "edu2 got another address space".into()
        })?;
        let pool = edu_pool(&d1).ctx("DMA pool")?;
        let src = pool.alloc(4096).ctx("alloc")?;
        let data = fill(&src, 0x77, MAX_DMA as usize).ctx("fill")?;
        for (which, dev) in [("edu", &d1), ("edu2", &d2)] {
            one_round_trip(which, dev, &pool, src.iova(), &data)?;
        }
        Ok(())
    })();
    rep.check(name, r);
}

fn one_round_trip(
    which: &str,
    dev: &Device,
    pool: &vfio_core::DmaPool,
    src: u64,
    data: &[u8],
) -> Outcome {
    let drv = Edu::new(dev).ctx(which)?;
    let dst = pool.alloc(4096).ctx("alloc")?;
    drv.dma_to_device(src, MAX_DMA, TIMEOUT).ctx(which)?;
    drv.dma_from_device(dst.iova(), MAX_DMA, TIMEOUT).ctx(which)?;
    let mut back = vec![0u8; MAX_DMA as usize];
    dst.read(0, &mut back).ctx("read")?;
    ensure(back == data, || {
        format!("{which}: the data read from the shared buffer did not come back")
    })
}

/// Peer-to-peer DMA: edu2's BAR0 mapped into edu's address space with
/// `DmaPool::map_peer`, then edu's DMA engine reads edu2's identification register
/// through the IOMMU. Where the backend cannot map device memory, the kernel's answer is
/// recorded instead.
pub fn peer_to_peer(rep: &mut Report, vfio: &Vfio, edu: PciAddress, edu2: PciAddress, mode: &Mode) {
    // iommufd, and its compat container serving the container modes, cannot map device
    // memory on the kernels the lab runs (EFAULT): recorded, not failed.
    let compat = std::env::var("VFIO_LAB_CONTAINER").as_deref() == Ok("compat");
    let no_pfnmap = mode.name == "iommufd" || compat;
    let what = if no_pfnmap {
        "map_peer of edu2's BAR0: iommufd cannot map device memory (VM_PFNMAP) on these kernels, the error is recorded; or, where it can, edu's DMA reads edu2's ident"
    } else {
        "edu2's BAR0 mapped for DMA (DmaPool::map_peer), edu's DMA reads edu2's ident through the IOMMU"
    };
    let name = format!("peer-to-peer [{}]: {what}", mode.name);
    let r = (|| -> Outcome {
        let device = vfio.open(edu, mode.interface).ctx("open edu")?;
        let peer = Arc::new(vfio.open_in(edu2, &device.address_space()).ctx("open edu2")?);
        peer.enable_bus_master().ctx("edu2 memory decode")?;
        let bar = Arc::new(peer.map_region_owned(0).ctx("edu2 BAR0")?);
        let pool = edu_pool(&device).ctx("pool")?;
        let at = 0x0800_0000;
        let maps = match pool.map_peer(&bar, at) {
            Ok(m) => m,
            Err(e) if no_pfnmap => {
                rep.note(format!("iommufd cannot map device memory on this kernel: {e}"));
                return Ok(());
            }
            Err(e) => return Err(format!("map_peer: {e}")),
        };
        let drv = Edu::new(&device).ctx("edu")?;
        let dst = pool.alloc(4096).ctx("alloc")?;
        let ok = drv.dma_to_device(at, 4, TIMEOUT).ctx("DMA from edu2's BAR")?
            && drv.dma_from_device(dst.iova(), 4, TIMEOUT).ctx("DMA to RAM")?;
        let mut b = [0u8; 4];
        dst.read(0, &mut b).ctx("read")?;
        drop(maps);
        let id = u32::from_le_bytes(b);
        ensure(ok && id == 0x0100_00ed, || format!("DMA completed {ok}, read {id:#x}"))
    })();
    rep.check(name, r);
}
