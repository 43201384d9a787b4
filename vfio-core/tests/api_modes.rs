//! The device API through the public mock, in every IOMMU mode the mock offers (legacy
//! type1v2 and type1, iommufd, and no-IOMMU where it applies), the way the kernel's VFIO
//! selftests run each test in each mode.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use vfio_core::container::IommuType;
use vfio_core::dma::{Backing, BatchEntry, HostMemory};
use vfio_core::kernel::{Errno, KernelOp};
use vfio_core::mock::{DeviceSpec, Fault, MockHost, MockKernelConfig};
use vfio_core::pci::ConfigSpace;
use vfio_core::{
    AddressSpace, DmaPerm, DmaPool, Error, Interface, IrqIndex, PciAddress, RegionIndex, Vfio,
};
use vmm_sys_util::eventfd::EventFd;

#[path = "common/modes.rs"]
mod modes;
use modes::{interface, Mode, MODES};

fn addr(s: &str) -> PciAddress {
    PciAddress::parse(s).unwrap()
}

/// A host like the VM lab's: edu alone in group 1, an NVMe controller (MSI-X, FLR) and a
/// second function sharing bus 1 in groups 2 and 3, as root with unsafe interrupts.
fn host() -> MockHost {
    let mut nvme2 = DeviceSpec::nvme("0000:01:00.1").group(3).driver("vfio-pci");
    nvme2.flr = false;
    let host = MockHost::new([
        DeviceSpec::edu("0000:00:04.0").group(1).driver("vfio-pci"),
        DeviceSpec::nvme("0000:01:00.0").group(2).driver("vfio-pci"),
        nvme2,
    ]);
    host.set_kernel_config(MockKernelConfig {
        cap_ipc_lock: true,
        interrupt_remapping: false,
        allow_unsafe_interrupts: true,
        ..MockKernelConfig::default()
    });
    host
}

fn vfio(host: &MockHost) -> Vfio {
    Vfio::new(host.kernel(), host.fs())
}

/// Page-aligned process memory for caller-owned mappings.
fn mem(len: usize) -> HostMemory {
    HostMemory::new(len, Backing::Anonymous).unwrap()
}

#[test]
fn open_reads_info_and_closes_everything() {
    for m in MODES {
        let host = host();
        let k = host.kernel();
        {
            let dev = vfio(&host).open(addr("0000:00:04.0"), interface(m)).unwrap();
            assert!(dev.info().is_pci(), "{m:?}");
            assert_eq!(dev.regions().len(), 9);
            assert_eq!(dev.region(0).unwrap().size, 1 << 20);
            assert_eq!(dev.iommufd_devid().is_some(), m == Mode::Iommufd);
            assert!(k.open_fds() > 0);
        }
        assert_eq!(k.open_fds(), 0, "{m:?}: every fd closed on drop");
    }
}

#[test]
fn bars_map_whole_or_around_the_msix_table() {
    for m in MODES {
        for mappable in [true, false] {
            let host = host();
            host.set_kernel_config(MockKernelConfig {
                msix_mappable: mappable,
                ..host.kernel_config()
            });
            let dev = vfio(&host).open(addr("0000:01:00.0"), interface(m)).unwrap();
            let bar0 = dev.region(0).unwrap();
            assert_eq!(bar0.msix_mappable, mappable, "{m:?}");
            let map = dev.map_region(0).unwrap();
            if mappable {
                assert_eq!(map.areas().collect::<Vec<_>>(), vec![(0, 0x4000)]);
            } else {
                // The table page (0x2000) is left out of the sparse areas.
                assert!(map.areas().all(|(o, l)| o + l as u64 <= 0x2000 || o >= 0x3000), "{m:?}");
                assert!(matches!(map.read::<u32>(0x2000), Err(Error::OutOfBounds { .. })));
            }
            // A write through the mapping is what pread sees, at every width.
            map.write(0x10, 0x11u8).unwrap();
            map.write(0x12, 0x2233u16).unwrap();
            map.write(0x14, 0x4455_6677u32).unwrap();
            map.write(0x18, 0x8899_aabb_ccdd_eeffu64).unwrap();
            let mut b = [0u8; 16];
            dev.read_region(0, 0x10, &mut b).unwrap();
            assert_eq!(&b[..8], &[0x11, 0, 0x33, 0x22, 0x77, 0x66, 0x55, 0x44]);
            assert_eq!(u64::from_le_bytes(b[8..].try_into().unwrap()), 0x8899_aabb_ccdd_eeff);
            assert!(matches!(map.read::<u32>(0x11), Err(Error::OutOfBounds { .. })), "unaligned");
            assert!(matches!(map.read::<u64>(0x4000), Err(Error::OutOfBounds { .. })));
            // The Bar accessor falls back to pread/pwrite in the hole, where vfio-pci
            // protects the MSI-X table: writes are dropped and reads give all ones.
            let bar = dev.bar(0).unwrap();
            bar.write(0x2000, 0xabcdu16).unwrap();
            let want = if mappable { 0xabcd } else { 0xffff };
            assert_eq!(bar.read::<u16>(0x2000).unwrap(), want, "{m:?}");
            assert_eq!(bar.is_mapped(0x2000, 2), mappable);
            bar.write(0x1ff0, 0x5a5au16).unwrap();
            assert_eq!(bar.read::<u16>(0x1ff0).unwrap(), 0x5a5a);
        }
    }
}

#[test]
fn region_io_is_bounds_checked() {
    let host = host();
    let dev = vfio(&host).open(addr("0000:00:04.0"), Interface::Container).unwrap();
    let mut b = [0u8; 8];
    assert!(matches!(dev.read_region(0, (1 << 20) - 4, &mut b), Err(Error::OutOfBounds { .. })));
    let rom = dev.read_region(RegionIndex::ROM, 0, &mut b);
    assert!(matches!(rom, Err(Error::OutOfBounds { .. })), "no ROM");
    assert!(matches!(dev.read_region(40, 0, &mut b), Err(Error::NotFound { .. })));
    assert!(matches!(dev.bar(RegionIndex::CONFIG), Err(Error::Invalid { .. })));
    assert!(matches!(dev.bar(1), Err(Error::NotFound { .. })));
}

#[test]
fn config_accessors_and_capability_walk() {
    for m in MODES {
        let host = host();
        let dev = vfio(&host).open(addr("0000:01:00.0"), interface(m)).unwrap();
        assert_eq!(dev.config_read_u16(0).unwrap(), 0x1b36);
        assert_eq!(dev.config_read_u8(0x0e).unwrap() & 0x7f, 0);
        dev.enable_bus_master().unwrap();
        assert_eq!(dev.config_read_u16(4).unwrap() & 0x6, 0x6);
        let image = dev.config_space().unwrap();
        let cfg = ConfigSpace::new(&image);
        let ids: Vec<u16> = cfg.capabilities().filter_map(Result::ok).map(|c| c.id).collect();
        assert!(ids.contains(&0x11) && ids.contains(&0x10), "{m:?}: {ids:x?}");
    }
}

#[test]
fn dma_buffers_are_mapped_inside_the_ranges_and_unmapped_on_drop() {
    for m in MODES {
        let host = host();
        let k = host.kernel();
        let dev = vfio(&host).open(addr("0000:00:04.0"), interface(m)).unwrap();
        let pool = DmaPool::new(dev.address_space()).unwrap();
        pool.limit_iova(1 << 28);
        let a = pool.alloc(100).unwrap();
        let b = pool.alloc(3 * 4096).unwrap();
        assert_eq!((a.len(), b.len()), (4096, 3 * 4096));
        assert!(a.iova() >= 4096 && b.iova() + 3 * 4096 <= 1 << 28, "{m:?}");
        assert!(a.iova() + 4096 <= b.iova() || b.iova() + 3 * 4096 <= a.iova());
        assert_eq!(k.dma_mappings(), 2);
        // The device sees what we write, and we see what it writes.
        a.write(0, b"hello").unwrap();
        let mut seen = [0u8; 5];
        host.dma_read(dev.address().unwrap(), a.iova(), &mut seen).unwrap();
        assert_eq!(&seen, b"hello");
        host.dma_write(dev.address().unwrap(), b.iova() + 4096, b"back").unwrap();
        let mut got = [0u8; 4];
        b.read(4096, &mut got).unwrap();
        assert_eq!(&got, b"back");
        assert!(matches!(a.read(4090, &mut [0u8; 8]), Err(Error::OutOfBounds { .. })));
        drop(a);
        b.free().unwrap();
        assert_eq!(k.dma_mappings(), 0, "{m:?}");
        // Freed IOVA space is reused.
        let c = pool.alloc(4096).unwrap();
        assert_eq!(c.iova(), 4096);
    }
}

#[test]
fn read_only_buffers_refuse_device_writes() {
    for m in MODES {
        let host = host();
        let dev = vfio(&host).open(addr("0000:00:04.0"), interface(m)).unwrap();
        let pool = DmaPool::new(dev.address_space()).unwrap();
        let ro = pool.alloc_with(4096, Backing::Anonymous, DmaPerm::Read).unwrap();
        let a = dev.address().unwrap();
        host.dma_read(a, ro.iova(), &mut [0u8; 8]).unwrap();
        assert_eq!(host.dma_write(a, ro.iova(), &[1u8; 8]).unwrap_err(), Errno::EFAULT, "{m:?}");
    }
}

#[test]
fn caller_memory_maps_at_chosen_iovas_and_unmap_all() {
    for m in MODES {
        let host = host();
        let k = host.kernel();
        let dev = vfio(&host).open(addr("0000:00:04.0"), interface(m)).unwrap();
        let mem = mem(1 << 20);
        let pool = DmaPool::new(dev.address_space()).unwrap();
        // SAFETY: `mem` outlives the mapping.
        let ram = unsafe { pool.map_user_at(mem.addr(), 0x100_0000, 1 << 20, DmaPerm::ReadWrite) }
            .unwrap();
        assert_eq!(ram.iova(), 0x100_0000);
        // SAFETY: as above.
        let any = unsafe { pool.map_user(mem.addr(), 4096, DmaPerm::Read) }.unwrap();
        assert_ne!(any.iova(), ram.iova());
        // SAFETY: as above.
        let clash = unsafe { pool.map_user_at(mem.addr(), 0x100_0000, 4096, DmaPerm::Read) };
        assert_eq!(clash.unwrap_err().errno(), Some(Errno::EEXIST), "{m:?}");
        assert_eq!(k.dma_mappings(), 2);
        assert_eq!(ram.unmap().unwrap(), 1 << 20);
        assert_eq!(k.dma_mappings(), 1);
        std::mem::forget(any); // left to unmap_all
        let space = dev.address_space();
        // SAFETY: as above.
        unsafe { space.map(mem.addr(), 0x200_0000, 8192, DmaPerm::ReadWrite) }.unwrap();
        assert_eq!(space.unmap_all().unwrap(), 4096 + 8192, "{m:?}");
        assert_eq!(k.dma_mappings(), 0);
    }
}

#[test]
fn batch_map_coalesces_and_undoes_on_failure() {
    for m in MODES {
        let host = host();
        let k = host.kernel();
        let dev = vfio(&host).open(addr("0000:00:04.0"), interface(m)).unwrap();
        let pool = DmaPool::new(dev.address_space()).unwrap();
        let mem = mem(1000 * 4096);
        let op = if m == Mode::Iommufd { KernelOp::IoasMap } else { KernelOp::MapDma };
        let entries: Vec<BatchEntry> = (0..1000)
            .map(|i| BatchEntry {
                vaddr: mem.addr() + i * 4096,
                iova: 0x40_0000 + i * 4096,
                size: 4096,
                slot: 0,
            })
            .collect();
        let before = k.calls(op);
        // SAFETY: `mem` outlives the mappings.
        let maps = unsafe { pool.map_batch(&entries, DmaPerm::ReadWrite) }.unwrap();
        assert_eq!(k.calls(op) - before, 1, "{m:?}: 1000 contiguous buffers, one call");
        assert_eq!(maps.len(), 1);
        drop(maps);
        assert_eq!(k.dma_mappings(), 0);
        // Every other page: 500 runs; the third call fails and the first two are undone.
        let sparse: Vec<BatchEntry> = entries.iter().step_by(2).copied().collect();
        host.inject(Fault::kernel(op).errno(Errno::ENOMEM).nth(3));
        // SAFETY: as above.
        let err = unsafe { pool.map_batch(&sparse, DmaPerm::ReadWrite) }.unwrap_err();
        assert_eq!((err.kernel_op(), err.errno()), (Some(op), Some(Errno::ENOMEM)));
        assert_eq!(k.dma_mappings(), 0, "{m:?}: nothing left behind");
    }
}

#[test]
fn memlock_and_entry_limit_errors_carry_hints() {
    for m in MODES {
        let host = host();
        host.set_kernel_config(MockKernelConfig {
            cap_ipc_lock: false,
            memlock_limit: 1 << 20,
            dma_entry_limit: 2,
            ..host.kernel_config()
        });
        let dev = vfio(&host).open(addr("0000:00:04.0"), interface(m)).unwrap();
        let pool = DmaPool::new(dev.address_space()).unwrap();
        let err = pool.alloc(2 << 20).unwrap_err();
        assert_eq!(err.errno(), Some(Errno::ENOMEM), "{m:?}");
        assert!(err.to_string().contains("RLIMIT_MEMLOCK (1024 KiB"), "{err}");
        let _a = pool.alloc(4096).unwrap();
        let _b = pool.alloc(4096).unwrap();
        let third = pool.alloc(4096);
        if m == Mode::Iommufd {
            assert!(third.is_ok(), "iommufd has no entry limit");
        } else {
            let err = third.unwrap_err();
            assert_eq!(err.errno(), Some(Errno::ENOSPC));
            assert!(err.to_string().contains("dma_entry_limit"), "{err}");
        }
    }
}

#[test]
fn msix_vectors_are_enabled_skipped_triggered_and_masked() {
    for m in MODES {
        let host = host();
        let dev = vfio(&host).open(addr("0000:01:00.0"), interface(m)).unwrap();
        let info = dev.irq_info(IrqIndex::Msix).unwrap();
        assert_eq!(info.count, 65);
        let fds = dev.new_eventfds(4).unwrap();
        let fired = |f: &EventFd| {
            let mut p = libc::pollfd { fd: f.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: a valid pollfd.
            (unsafe { libc::poll(&mut p, 1, 0) } == 1) && f.read().is_ok()
        };
        // Vectors 0, 1 and 3; vector 2 left disabled.
        dev.enable_irqs(IrqIndex::Msix, 0, &[Some(&fds[0]), Some(&fds[1]), None, Some(&fds[3])])
            .unwrap();
        dev.trigger_irqs(IrqIndex::Msix, 0, 4).unwrap();
        let got: Vec<bool> = fds.iter().map(fired).collect();
        assert_eq!(got, vec![true, true, false, true], "{m:?}");
        dev.disable_vectors(IrqIndex::Msix, 3, 1).unwrap();
        dev.trigger_irqs_where(IrqIndex::Msix, 0, &[true, false, false, true]).unwrap();
        let got: Vec<bool> = fds.iter().map(fired).collect();
        assert_eq!(got, vec![true, false, false, false]);
        // vfio-pci has no MSI/MSI-X masking through SET_IRQS (ENOTTY, as in
        // vfio_pci_set_irqs_ioctl): mask in the device's MSI-X table instead.
        assert_eq!(dev.mask_irqs(IrqIndex::Msix, 0, 1).unwrap_err().errno(), Some(Errno::ENOTTY));
        assert_eq!(dev.unmask_irqs(IrqIndex::Msix, 0, 1).unwrap_err().errno(), Some(Errno::ENOTTY));
        // A device-raised vector reaches its eventfd.
        assert!(host.raise_irq(dev.address().unwrap(), 2, 0));
        assert!(fired(&fds[0]));
        dev.disable_irqs(IrqIndex::Msix).unwrap();
        dev.trigger_irqs(IrqIndex::Msix, 0, 1).unwrap_err();
        assert!(dev.enable_irqs(IrqIndex::Msix, 64, &[Some(&fds[0]), Some(&fds[1])]).is_err());
    }
}

#[test]
fn intx_fires_masks_itself_and_unmasks() {
    for m in MODES {
        let host = host();
        let dev = vfio(&host).open(addr("0000:00:04.0"), interface(m)).unwrap();
        let fds = dev.new_eventfds(2).unwrap();
        dev.enable_irqs_all(IrqIndex::Intx, 0, &fds[..1]).unwrap();
        dev.set_intx_unmask_eventfd(&fds[1]).unwrap();
        let a = dev.address().unwrap();
        assert!(host.raise_irq(a, 0, 0), "{m:?}");
        assert_eq!(fds[0].read().unwrap(), 1);
        // Automasked: a second interrupt waits for the unmask.
        assert!(!host.raise_irq(a, 0, 0));
        dev.unmask_irqs(IrqIndex::Intx, 0, 1).unwrap();
        dev.disable_irqs(IrqIndex::Intx).unwrap();
        // MSI and INTx are exclusive.
        dev.enable_irqs_all(IrqIndex::Msi, 0, &fds[..1]).unwrap();
        let e = dev.enable_irqs_all(IrqIndex::Intx, 0, &fds[..1]).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::EINVAL));
    }
}

#[test]
fn reset_and_hot_reset() {
    for m in MODES {
        let host = host();
        let v = vfio(&host);
        let nvme = v.open(addr("0000:01:00.0"), interface(m)).unwrap();
        assert!(nvme.can_reset());
        nvme.reset().unwrap();
        assert_eq!(host.reset_count(addr("0000:01:00.0")), 1, "{m:?}");
        let edu = v.open(addr("0000:00:04.0"), interface(m)).unwrap();
        assert!(matches!(edu.reset(), Err(Error::Unsupported { .. })));
        let affected: Vec<String> =
            nvme.hot_reset_info().unwrap().iter().map(|a| a.address.to_string()).collect();
        assert_eq!(affected, vec!["0000:01:00.0", "0000:01:00.1"], "{m:?}");
        if m == Mode::Iommufd {
            let other = v.open_in(addr("0000:01:00.1"), &nvme.address_space()).unwrap();
            nvme.hot_reset(&[]).unwrap();
            drop(other);
        } else {
            // Without the other function's group the kernel refuses.
            assert!(nvme.hot_reset(&[nvme.group().unwrap()]).is_err());
            let other = v.open_in(addr("0000:01:00.1"), &nvme.address_space()).unwrap();
            nvme.hot_reset(&[nvme.group().unwrap(), other.group().unwrap()]).unwrap();
        }
        assert_eq!(host.reset_count(addr("0000:01:00.1")), 1, "{m:?}");
    }
}

#[test]
fn devices_share_an_address_space() {
    for m in MODES {
        let host = host();
        let k = host.kernel();
        let v = vfio(&host);
        let a = v.open(addr("0000:01:00.0"), interface(m)).unwrap();
        let b = v.open_in(addr("0000:00:04.0"), &a.address_space()).unwrap();
        match (a.address_space(), b.address_space()) {
            (AddressSpace::Container(x), AddressSpace::Container(y)) => {
                assert!(Arc::ptr_eq(&x, &y))
            }
            (AddressSpace::Ioas(x), AddressSpace::Ioas(y)) => assert!(Arc::ptr_eq(&x, &y)),
            _ => panic!("{m:?}: different kinds of address space"),
        }
        let pool = DmaPool::new(a.address_space()).unwrap();
        let buf = pool.alloc(4096).unwrap();
        buf.write(0, b"shared").unwrap();
        assert_eq!(k.dma_mappings(), 1);
        for d in [&a, &b] {
            let mut s = [0u8; 6];
            host.dma_read(d.address().unwrap(), buf.iova(), &mut s).unwrap();
            assert_eq!(&s, b"shared", "{m:?}");
        }
    }
}

#[test]
fn two_devices_of_one_group_share_the_group_fd() {
    let host = MockHost::new([
        DeviceSpec::nvme("0000:02:00.0").group(7).driver("vfio-pci"),
        DeviceSpec::nvme("0000:02:00.1").group(7).driver("vfio-pci"),
    ]);
    let k = host.kernel();
    let v = vfio(&host);
    let a = v.open(addr("0000:02:00.0"), Interface::Container).unwrap();
    let b = v.open_in(addr("0000:02:00.1"), &a.address_space()).unwrap();
    assert_eq!(k.calls(KernelOp::OpenGroup), 1);
    assert!(Arc::ptr_eq(a.group().unwrap(), b.group().unwrap()));
}

#[test]
fn a_group_that_is_not_viable_names_its_blockers() {
    let mut audio = DeviceSpec::new("0000:02:00.1").group(5).driver("snd_hda_intel");
    audio.class = 0x040300;
    let host = MockHost::new([DeviceSpec::edu("0000:02:00.0").group(5).driver("vfio-pci"), audio]);
    let err = vfio(&host).open(addr("0000:02:00.0"), Interface::Container).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::GroupNotViable { group: 5, .. }), "{text}");
    assert!(text.contains("0000:02:00.1 is bound to snd_hda_intel"), "{text}");
    assert!(text.contains("a group bind of 0000:02:00.1"), "{text}");
    assert_eq!(host.kernel().open_fds(), 0);
}

#[test]
fn a_device_not_on_vfio_pci_or_absent_is_a_clear_error() {
    let host = MockHost::new([DeviceSpec::nvme("0000:03:00.0").group(9).driver("nvme")]);
    let v = vfio(&host);
    let e = v.open(addr("0000:03:00.0"), Interface::Auto).unwrap_err().to_string();
    assert!(
        e.contains("bound to nvme") && e.contains("bind 0000:03:00.0 to vfio-pci first"),
        "{e}"
    );
    let e = v.open(addr("0000:09:00.0"), Interface::Auto).unwrap_err().to_string();
    assert!(e.contains("PCI device 0000:09:00.0 not found"), "{e}");
}

#[test]
fn auto_picks_iommufd_only_when_the_host_offers_it() {
    for (iommufd, want_ioas) in [(true, true), (false, false)] {
        let host = host().with_sys(|s| {
            s.load_vfio();
            s.modules.insert("iommufd".into());
        });
        host.set_kernel_config(MockKernelConfig { iommufd, ..host.kernel_config() });
        let dev = vfio(&host).open(addr("0000:00:04.0"), Interface::Auto).unwrap();
        assert_eq!(matches!(dev.address_space(), AddressSpace::Ioas(_)), want_ioas);
        if !want_ioas {
            let c = match dev.address_space() {
                AddressSpace::Container(c) => c,
                _ => unreachable!(),
            };
            assert_eq!(c.iommu_type(), Some(IommuType::Type1v2));
        }
    }
}

#[test]
fn type1v2_falls_back_to_type1() {
    let host = host();
    host.set_kernel_config(MockKernelConfig { type1v2: false, ..host.kernel_config() });
    let dev = vfio(&host).open(addr("0000:00:04.0"), Interface::Container).unwrap();
    let AddressSpace::Container(c) = dev.address_space() else { panic!() };
    assert_eq!(c.iommu_type(), Some(IommuType::Type1));
}

#[test]
fn no_iommu_mode_opens_devices_but_maps_nothing() {
    let host = MockHost::new([DeviceSpec::edu("0000:00:03.0").driver("vfio-pci")]);
    host.set_kernel_config(MockKernelConfig { noiommu: true, ..MockKernelConfig::default() });
    let dev = vfio(&host).open(addr("0000:00:03.0"), Interface::Auto).unwrap();
    let AddressSpace::Container(c) = dev.address_space() else { panic!() };
    assert_eq!(c.iommu_type(), Some(IommuType::NoIommu));
    assert_eq!(dev.config_read_u16(0).unwrap(), 0x1234);
    let fds = dev.new_eventfds(1).unwrap();
    dev.enable_irqs_all(IrqIndex::Msi, 0, &fds).unwrap();
    dev.trigger_irqs(IrqIndex::Msi, 0, 1).unwrap();
    assert_eq!(fds[0].read().unwrap(), 1);
    let mem = mem(4096);
    // SAFETY: `mem` outlives the (refused) mapping.
    let e = unsafe { dev.address_space().map(mem.addr(), 0x1000, 4096, DmaPerm::ReadWrite) }
        .unwrap_err();
    assert!(e.to_string().contains("no-IOMMU mode has no DMA mapping"), "{e}");
    assert!(DmaPool::new(dev.address_space()).is_err());
    drop(dev);
    // iommufd asked for a no-IOMMU device: the error says why there is no cdev.
    for open in [
        vfio(&host).open(addr("0000:00:03.0"), Interface::Iommufd).map(drop),
        vfio(&host).open_fds(addr("0000:00:03.0"), Interface::Iommufd).map(drop),
    ] {
        let e = open.unwrap_err().to_string();
        assert!(e.contains("no-IOMMU group") && e.contains("Interface::Container"), "{e}");
    }
}

#[test]
fn a_failure_at_each_step_of_opening_leaks_nothing() {
    let container_path = [
        KernelOp::OpenContainer,
        KernelOp::GetApiVersion,
        KernelOp::OpenGroup,
        KernelOp::GroupGetStatus,
        KernelOp::GroupSetContainer,
        KernelOp::CheckExtension,
        KernelOp::SetIommu,
        KernelOp::GroupGetDeviceFd,
        KernelOp::DeviceGetInfo,
        KernelOp::DeviceGetRegionInfo,
    ];
    let iommufd_path = [
        KernelOp::OpenIommufd,
        KernelOp::IoasAlloc,
        KernelOp::OpenDeviceCdev,
        KernelOp::DeviceBindIommufd,
        KernelOp::DeviceAttachIommufdPt,
        KernelOp::DeviceGetInfo,
        KernelOp::DeviceGetRegionInfo,
    ];
    for (interface, ops) in
        [(Interface::Container, &container_path[..]), (Interface::Iommufd, &iommufd_path[..])]
    {
        for &op in ops {
            for errno in [Errno::EIO, Errno::ENOMEM, Errno::EPERM] {
                let host = host();
                let k = host.kernel();
                host.inject(Fault::kernel(op).errno(errno));
                let err = vfio(&host).open(addr("0000:00:04.0"), interface).unwrap_err();
                assert_eq!(err.kernel_op(), Some(op), "{interface:?} {op:?}: {err}");
                assert_eq!(err.errno(), Some(errno), "{interface:?} {op:?}");
                assert_eq!(k.open_fds(), 0, "{interface:?} {op:?}: fd leaked");
            }
        }
    }
}

#[test]
fn hugetlb_buffers_map_at_aligned_iovas() {
    if let Err(e) = HostMemory::new(2 << 20, Backing::Huge2M) {
        eprintln!("skipped: no 2 MiB huge pages reserved on this machine ({e}); vfio-vm-checks covers hugetlb buffers on the real kernel in the VM lab");
        return;
    }
    for m in MODES {
        let host = host();
        let dev = vfio(&host).open(addr("0000:00:04.0"), interface(m)).unwrap();
        let pool = DmaPool::new(dev.address_space()).unwrap();
        let buf = pool.alloc_with(100, Backing::Huge2M, DmaPerm::ReadWrite).unwrap();
        assert_eq!(buf.len(), 2 << 20, "{m:?}");
        assert_eq!(buf.iova() % (2 << 20), 0, "{m:?}");
        host.dma_write(dev.address().unwrap(), buf.iova() + (1 << 20), b"huge").unwrap();
        let mut got = [0u8; 4];
        buf.read(1 << 20, &mut got).unwrap();
        assert_eq!(&got, b"huge");
    }
}
