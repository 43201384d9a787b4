//! DMA as a VMM uses it, in every IOMMU mode: guest RAM mapped at guest-physical 0 next
//! to buffers from the same pool, memory slots batch-mapped and unplugged one by one,
//! and what an unmap of part of a mapping does in each mode (as the real kernel does;
//! see `tests/conformance/edu-*.expected`, `dma.unmap_split_*`), and live update on
//! iommufd: guest RAM mapped from a memfd, taken over with `change_process`.

use vfio_core::dma::{Backing, BatchEntry, HostMemory};
use vfio_core::kernel::Errno;
use vfio_core::mock::{DeviceSpec, MockHost, MockKernelConfig};
use vfio_core::{DmaPerm, DmaPool, PciAddress, Vfio};

#[path = "../examples/edu/driver.rs"]
mod driver;
#[path = "common/modes.rs"]
mod modes;
use modes::{interface, Mode, MODES};

fn open(m: Mode) -> (MockHost, vfio_core::Device) {
    let host = MockHost::new([DeviceSpec::edu("0000:00:04.0").group(1).driver("vfio-pci")]);
    host.set_kernel_config(MockKernelConfig {
        cap_ipc_lock: true,
        allow_unsafe_interrupts: true,
        ..MockKernelConfig::default()
    });
    let dev = Vfio::new(host.kernel(), host.fs())
        .open(PciAddress::parse("0000:00:04.0").unwrap(), interface(m))
        .unwrap();
    (host, dev)
}

#[test]
fn guest_ram_at_gpa_zero_and_pool_buffers_never_collide() {
    for m in MODES {
        let (host, dev) = open(m);
        let pool = DmaPool::new(dev.address_space()).unwrap();
        let ram = HostMemory::new(16 << 20, Backing::Anonymous).unwrap();
        // SAFETY: `ram` outlives the mapping (dropped first, below).
        let gpa0 = unsafe { pool.map_user_at(ram.addr(), 0, 16 << 20, DmaPerm::ReadWrite) }
            .unwrap_or_else(|e| panic!("{m:?}: {e}"));
        let bufs: Vec<_> = (0..8).map(|_| pool.alloc(4096).unwrap()).collect();
        for b in &bufs {
            assert!(b.iova() >= 16 << 20, "{m:?}: a buffer at {:#x} inside guest RAM", b.iova());
        }
        // SAFETY: as above.
        let more = unsafe { pool.map_user(ram.addr(), 4096, DmaPerm::Read) }.unwrap();
        assert!(more.iova() >= 16 << 20, "{m:?}");
        drop(more);
        drop(bufs);
        drop(gpa0);
        assert_eq!(host.kernel().dma_mappings(), 0, "{m:?}");
        // Once guest RAM is gone, its IOVAs (not 0, kept out for the pool's own buffers)
        // are handed out again.
        let b = pool.alloc(4096).unwrap();
        assert_eq!(b.iova(), 0x1000, "{m:?}");
    }
}

#[test]
fn slots_batch_mapped_together_unplug_one_by_one() {
    for m in MODES {
        let (host, dev) = open(m);
        let pool = DmaPool::new(dev.address_space()).unwrap();
        let ram = HostMemory::new(8 << 20, Backing::Anonymous).unwrap();
        // Two slots, contiguous in both address spaces, each sent as 2 MiB pieces.
        let entries: Vec<BatchEntry> = (0..4u64)
            .map(|i| BatchEntry {
                vaddr: ram.addr() + i * (2 << 20),
                iova: (1 << 30) + i * (2 << 20),
                size: 2 << 20,
                slot: (i / 2) as u32,
            })
            .collect();
        // SAFETY: `ram` outlives the mappings.
        let mut maps = unsafe { pool.map_batch(&entries, DmaPerm::ReadWrite) }.unwrap();
        assert_eq!(maps.len(), 2, "{m:?}: one mapping per slot");
        assert_eq!(host.kernel().dma_mappings(), 2, "{m:?}");
        // Unplug slot 0: its mapping goes, slot 1 stays.
        let slot0 = maps.remove(0);
        assert_eq!(slot0.unmap().unwrap(), 4 << 20, "{m:?}");
        assert_eq!(host.kernel().dma_mappings(), 1, "{m:?}");
        drop(maps);
        assert_eq!(host.kernel().dma_mappings(), 0, "{m:?}");
    }
}

#[test]
fn unmapping_part_of_a_mapping_does_what_the_kernel_does() {
    for m in MODES {
        let (host, dev) = open(m);
        let space = dev.address_space();
        let mem = HostMemory::new(2 << 12, Backing::Anonymous).unwrap();
        let iova = 1 << 20;
        // SAFETY: `mem` outlives the mapping, unmapped below.
        unsafe { space.map(mem.addr(), iova, 2 << 12, DmaPerm::ReadWrite) }.unwrap();
        let tail = space.unmap(iova + 4096, 4096);
        match m {
            // type1 v1: a request that does not cover a mapping's first IOVA unmaps
            // nothing and succeeds with size 0; the mapping stays whole.
            Mode::Type1 => assert_eq!(tail.unwrap(), 0),
            Mode::Type1v2 => assert_eq!(tail.unwrap_err().errno(), Some(Errno::EINVAL)),
            Mode::Iommufd => assert_eq!(tail.unwrap_err().errno(), Some(Errno::ENOENT)),
        }
        assert_eq!(host.kernel().dma_mappings(), 1, "{m:?}: the mapping is still whole");
        // Covering the first IOVA: type1 v1 unmaps the whole mapping, the others refuse.
        let head = space.unmap(iova, 4096);
        match m {
            Mode::Type1 => assert_eq!(head.unwrap(), 2 << 12),
            Mode::Type1v2 => assert_eq!(head.unwrap_err().errno(), Some(Errno::EINVAL)),
            Mode::Iommufd => assert_eq!(head.unwrap_err().errno(), Some(Errno::ENOENT)),
        }
        if m != Mode::Type1 {
            assert_eq!(space.unmap(iova, 2 << 12).unwrap(), 2 << 12, "{m:?}");
        }
        assert_eq!(host.kernel().dma_mappings(), 0, "{m:?}");
    }
}

/// iommufd's compat container serves `/dev/vfio/vfio` on kernels built with
/// IOMMUFD_VFIO_CONTAINER (the lab's custom newest kernel): it has no live update, and the
/// library says so instead of passing on the kernel's bare EINVAL.
#[test]
fn live_update_on_the_compat_container_is_refused_with_the_way_out() {
    for compat in [false, true] {
        let host = MockHost::new([DeviceSpec::edu("0000:00:04.0").group(1).driver("vfio-pci")]);
        host.set_kernel_config(MockKernelConfig {
            compat_container: compat,
            cap_ipc_lock: true,
            allow_unsafe_interrupts: true,
            ..MockKernelConfig::default()
        });
        let dev = Vfio::new(host.kernel(), host.fs())
            .open(PciAddress::parse("0000:00:04.0").unwrap(), vfio_core::Interface::Container)
            .unwrap();
        let vfio_core::AddressSpace::Container(c) = dev.address_space() else { unreachable!() };
        assert_eq!(c.supports_vaddr_update().unwrap(), !compat);
        // iommufd's compat container has no entry limit.
        let avail = c.iommu_info().unwrap().dma_avail;
        assert_eq!(avail, Some(if compat { u32::MAX } else { 65535 }));
        let ram = HostMemory::new(0x4000, Backing::Anonymous).unwrap();
        // SAFETY: `ram` outlives the mapping (unmapped below).
        unsafe { c.map_dma(ram.addr(), 0x10_0000, 0x4000, DmaPerm::ReadWrite) }.unwrap();
        let r = c.invalidate_vaddr(0x10_0000, 0x4000, false);
        if compat {
            let e = r.unwrap_err();
            assert!(matches!(e, vfio_core::Error::Unsupported { .. }), "{e}");
            assert!(e.to_string().contains("VFIO_UPDATE_VADDR"), "{e}");
            assert!(e.to_string().contains("legacy type1v2 container"), "{e}");
            // The mapping is untouched and unmaps whole.
            assert_eq!(c.unmap_dma(0x10_0000, 0x4000).unwrap(), 0x4000);
        } else {
            assert_eq!(r.unwrap(), 0x4000);
        }
    }
}

/// A region the kernel offers without WRITE (a variant driver's read-only region) is
/// mapped read-only, and a write through the mapping is refused by the library: the
/// mapping is PROT_READ, so writing through it would fault the process.
#[test]
fn a_read_only_region_is_mapped_read_only_and_writes_are_refused() {
    let mut spec = DeviceSpec::edu("0000:00:04.0").group(1).driver("vfio-pci");
    spec.bars[2] = Some(vfio_core::mock::BarSpec::mem32(0x1000).read_only());
    let host = MockHost::new([spec]);
    host.set_kernel_config(MockKernelConfig {
        allow_unsafe_interrupts: true,
        ..Default::default()
    });
    let dev = std::sync::Arc::new(
        Vfio::new(host.kernel(), host.fs())
            .open(PciAddress::parse("0000:00:04.0").unwrap(), vfio_core::Interface::Container)
            .unwrap(),
    );
    dev.enable_bus_master().unwrap();
    let info = dev.region(2).unwrap();
    assert!(!info.flags.contains(vfio_core::info::RegionFlags::WRITE), "{info:?}");
    let m = dev.map_region(2).unwrap();
    assert_eq!(m.read::<u32>(0).unwrap(), 0);
    let e = m.write::<u32>(0, 1).unwrap_err();
    assert!(e.to_string().contains("WRITE"), "{e}");
    let owned = dev.map_region_owned(2).unwrap();
    assert!(owned.write::<u8>(4, 1).is_err());
    let bar = dev.bar(2).unwrap();
    assert!(bar.write::<u32>(8, 1).is_err());
    assert_eq!(bar.read::<u32>(8).unwrap(), 0);
    // pwrite is refused by the kernel too.
    assert!(dev.write_region(2, 0, &[1]).is_err());
}

/// A memfd of `len` bytes, as guest RAM kept across a live update.
fn memfd(len: u64) -> std::os::fd::OwnedFd {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: memfd_create takes a NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: a new descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ftruncate of our own memfd.
    assert_eq!(unsafe { libc::ftruncate(fd.as_raw_fd(), len as i64) }, 0);
    fd
}

/// Live update on iommufd as a VMM does it: guest RAM is a memfd mapped with
/// `Ioas::map_file` at guest-physical addresses; the process that takes over (here the
/// same one) calls `change_process`, which is refused while a mapping of a user address
/// (a `DmaPool` buffer) exists; after it the device's DMA still lands in the memfd.
#[test]
fn live_update_on_iommufd_keeps_guest_ram_mapped_from_a_memfd() {
    use std::os::fd::{AsFd, AsRawFd};
    use std::time::Duration;
    use vfio_core::mock::models::EduModel;
    let (host, dev) = open(Mode::Iommufd);
    let a = PciAddress::parse("0000:00:04.0").unwrap();
    drop(dev);
    assert!(host.attach_model(a, 0, Box::new(EduModel::new())));
    let dev = Vfio::new(host.kernel(), host.fs()).open(a, interface(Mode::Iommufd)).unwrap();
    let vfio_core::AddressSpace::Ioas(ioas) = dev.address_space() else { panic!("an IOAS") };
    let len = 1 << 20;
    let ram = memfd(len);
    // SAFETY: the memfd is this test's; its pages are read only with pread below.
    // At 128 MiB: below edu's 28-bit DMA limit, above the pool's own buffers.
    let gpa = 0x800_0000;
    let got = unsafe { ioas.map_file(ram.as_fd(), 0, Some(gpa), len, DmaPerm::ReadWrite) };
    assert_eq!(got.unwrap(), gpa);
    let mut edu = driver::Edu::new(&dev).unwrap();
    edu.enable_msi().unwrap();
    let t = Duration::from_secs(5);
    let pool = driver::edu_pool(&dev).unwrap();
    let src = pool.alloc(4096).unwrap();
    let data = driver::fill(&src, 9, 512).unwrap();
    assert!(edu.dma_to_device(src.iova(), 512, t).unwrap());
    // The pool's buffer is a user-address mapping: the take-over is refused, and says why.
    let e = ioas.iommufd().change_process().unwrap_err();
    assert_eq!(e.errno(), Some(Errno::EINVAL));
    assert!(e.to_string().contains("Ioas::map_file"), "{e}");
    drop(src);
    drop(pool);
    ioas.iommufd().change_process().unwrap();
    assert!(edu.dma_from_device(gpa + 0x4000, 512, t).unwrap());
    let mut got = vec![0u8; 512];
    // SAFETY: pread into our buffer from our memfd.
    let n = unsafe { libc::pread(ram.as_raw_fd(), got.as_mut_ptr().cast(), 512, 0x4000) };
    assert_eq!(n, 512);
    assert_eq!(got, data, "the DMA landed in the memfd after the take-over");
    assert_eq!(ioas.unmap_dma(gpa, len).unwrap(), len);
    assert_eq!(host.kernel().dma_mappings(), 0);
}

/// Kernels before 6.13 have no `IOMMU_IOAS_MAP_FILE`: the library says which kernel
/// it needs and what to use instead.
#[test]
fn map_file_on_a_kernel_before_6_13_names_the_kernel_it_needs() {
    use std::os::fd::AsFd;
    let (host, dev) = open(Mode::Iommufd);
    host.set_kernel_config(MockKernelConfig {
        cap_ipc_lock: true,
        ..MockKernelConfig::linux(6, 12)
    });
    let vfio_core::AddressSpace::Ioas(ioas) = dev.address_space() else { panic!("an IOAS") };
    let ram = memfd(1 << 16);
    // SAFETY: the memfd is this test's; nothing references its pages.
    let e =
        unsafe { ioas.map_file(ram.as_fd(), 0, None, 1 << 16, DmaPerm::ReadWrite) }.unwrap_err();
    assert_eq!(e.errno(), Some(Errno::ENOTTY));
    assert!(e.to_string().contains("predates IOMMU_IOAS_MAP_FILE (6.13)"), "{e}");
    let e = ioas.iommufd().change_process().unwrap_err();
    assert!(e.to_string().contains("predates IOMMU_IOAS_MAP_FILE (6.13)"), "{e}");
    // A range wrapping past 2^64 is refused before the kernel sees it.
    // SAFETY: as above.
    let e = unsafe { ioas.map_file(ram.as_fd(), u64::MAX, None, 2, DmaPerm::Read) }.unwrap_err();
    assert!(matches!(e, vfio_core::Error::Invalid { .. }), "{e}");
}
