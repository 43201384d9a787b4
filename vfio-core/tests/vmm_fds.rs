//! What a VMM embedding vfio-core does, in every IOMMU mode: descriptors opened by a
//! privileged parent and used by a child that opens nothing by path and reads no sysfs,
//! an existing iommufd and IOAS reused by id, BAR mappings kept in the VMM's state next to
//! the device (`Arc<Device>`) with host addresses for KVM, and peer-to-peer DMA to a BAR.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

use vfio_core::dma::{Backing, HostMemory};
use vfio_core::kernel::{iommu_ioas_alloc, KernelOp, VfioKernel};
use vfio_core::mock::{DeviceSpec, MockHost, MockKernelConfig};
use vfio_core::{
    Device, DeviceFds, DmaPerm, DmaPool, Interface, IrqIndex, PciAddress, RegionMapping, Vfio,
};

#[path = "common/modes.rs"]
mod modes;
use modes::{interface, wanted, Mode, MODES};
const NVME: &str = "0000:01:00.0";
const EDU: &str = "0000:00:04.0";

fn a(s: &str) -> PciAddress {
    PciAddress::parse(s).unwrap()
}

fn host(msix_mappable: bool) -> MockHost {
    let host = MockHost::new([
        DeviceSpec::edu(EDU).group(1).driver("vfio-pci"),
        DeviceSpec::nvme(NVME).group(2).driver("vfio-pci"),
    ]);
    host.set_kernel_config(MockKernelConfig {
        cap_ipc_lock: true,
        allow_unsafe_interrupts: true,
        msix_mappable,
        ..MockKernelConfig::default()
    });
    host
}

const OPENS: [KernelOp; 4] =
    [KernelOp::OpenContainer, KernelOp::OpenGroup, KernelOp::OpenIommufd, KernelOp::OpenDeviceCdev];

fn opens(k: &vfio_core::mock::MockKernel) -> u64 {
    OPENS.iter().map(|op| k.calls(*op)).sum()
}

#[test]
fn a_child_uses_the_descriptors_a_parent_opened_and_nothing_else() {
    for m in MODES {
        let host = host(false);
        let k = host.kernel();
        // The privileged parent: finds the nodes through sysfs and opens them.
        let fds = Vfio::new(k.clone(), host.fs()).open_fds(a(NVME), interface(m)).unwrap();
        assert_eq!(
            matches!(fds, DeviceFds::Cdev { .. }),
            m == Mode::Iommufd,
            "{m:?}: the interface asked for"
        );
        // The child: only the kernel seam and the descriptors, no host view at all.
        let before = opens(&k);
        let dev = Arc::new(fds.open(k.clone(), wanted(m)).unwrap());
        assert_eq!(opens(&k), before, "{m:?}: the child opened nothing by path");
        // DMA, a BAR read through an owned mapping equal to pread, an interrupt.
        let pool = DmaPool::new(dev.address_space()).unwrap();
        let buf = pool.alloc(4096).unwrap();
        assert!(buf.iova() != 0);
        let bar0: RegionMapping = dev.map_region_owned(0).unwrap();
        bar0.write(0x10, 0x1234_5678u32).unwrap();
        let mut b = [0u8; 4];
        dev.read_region(0, 0x10, &mut b).unwrap();
        assert_eq!(u32::from_le_bytes(b), bar0.read::<u32>(0x10).unwrap(), "{m:?}");
        let ev = dev.new_eventfds(1).unwrap();
        dev.enable_irqs_all(IrqIndex::Msix, 0, &ev).unwrap();
        dev.trigger_irqs(IrqIndex::Msix, 0, 1).unwrap();
        assert_eq!(ev[0].read().unwrap(), 1, "{m:?}: the vector fired");
        // The objects lend their descriptors (for KVM, for a C library).
        assert_eq!(dev.as_fd().as_raw_fd(), dev.as_raw_fd());
        drop((buf, bar0, pool, ev));
        drop(dev);
        assert_eq!(k.open_fds(), 0, "{m:?}: every descriptor closed");
        assert_eq!(k.dma_mappings(), 0, "{m:?}");
    }
}

#[test]
fn a_descriptor_that_is_not_vfio_is_a_clear_error() {
    let host = host(false);
    let k = host.kernel();
    let not_vfio = std::fs::File::open("/proc/self/status").unwrap();
    let e = vfio_core::Container::from_fd(k.clone(), not_vfio.into(), None).unwrap_err();
    assert!(e.to_string().contains("adopt descriptor"), "{e}");
}

#[test]
fn an_existing_iommufd_and_ioas_are_reused_by_id() {
    let host = host(false);
    let k = host.kernel();
    // Whoever set up the VM's address space: an iommufd with an IOAS holding guest RAM.
    let ifd = k.open_iommufd().unwrap();
    let mut alloc = iommu_ioas_alloc {
        size: std::mem::size_of::<iommu_ioas_alloc>() as u32,
        flags: 0,
        out_ioas_id: 0,
    };
    k.ioas_alloc(&ifd, &mut alloc).unwrap();
    let id = alloc.out_ioas_id;
    let passed = k.export(ifd);
    let iommufd = vfio_core::iommufd::Iommufd::from_fd(k.clone(), passed).unwrap();
    assert!(iommufd.ioas(id + 100).is_err(), "an IOAS that does not exist is refused");
    let ioas = iommufd.ioas(id).unwrap();
    let fds = Vfio::new(k.clone(), host.fs()).open_fds(a(EDU), Interface::Iommufd).unwrap();
    let DeviceFds::Cdev { device, iommufd: own, .. } = fds else { panic!("a cdev") };
    drop(own);
    let dev = Device::from_cdev_fd(&ioas, device, EDU).unwrap();
    let ram = HostMemory::new(1 << 20, Backing::Anonymous).unwrap();
    let pool = DmaPool::new(dev.address_space()).unwrap();
    // SAFETY: `ram` outlives the mapping.
    let m = unsafe { pool.map_user_at(ram.addr(), 0, 1 << 20, DmaPerm::ReadWrite) }.unwrap();
    drop(m);
    drop(pool);
    drop(dev);
    drop(ioas);
    // The reused IOAS is its owner's: still there after our objects are gone.
    assert!(iommufd.ioas(id).is_ok(), "the IOAS was left to its owner");
}

#[test]
fn owned_bar_mappings_live_in_the_vmm_state_and_leave_out_the_msix_table() {
    fn assert_send_sync_static<T: Send + Sync + 'static>() {}
    assert_send_sync_static::<RegionMapping>();
    struct VmmState {
        dev: Arc<Device>,
        bar0: RegionMapping,
    }
    for m in MODES {
        for mappable in [true, false] {
            let host = host(mappable);
            let dev =
                Arc::new(Vfio::new(host.kernel(), host.fs()).open(a(NVME), interface(m)).unwrap());
            let state = VmmState { bar0: dev.map_region_owned(0).unwrap(), dev };
            let areas: Vec<_> = state.bar0.host_areas().collect();
            if mappable {
                assert_eq!((areas.len(), areas[0].len), (1, 0x4000), "{m:?}");
            } else {
                // The MSI-X table page (0x2000) is a hole the VMM must trap.
                assert!(areas.iter().all(|r| r.offset + r.len <= 0x2000 || r.offset >= 0x3000));
                assert!(areas.len() >= 2, "{m:?}: {areas:?}");
            }
            // The host address is the mapping itself: a store there is what pread sees.
            let first = areas[0];
            // SAFETY: the area is a live shared mapping of `first.len` bytes owned by
            // `state.bar0`, and naturally aligned.
            unsafe { std::ptr::write_volatile((first.host_addr + 8) as *mut u32, 0xfeed_f00d) };
            let mut b = [0u8; 4];
            state.dev.read_region(0, first.offset + 8, &mut b).unwrap();
            assert_eq!(u32::from_le_bytes(b), 0xfeed_f00d, "{m:?}");
            // Moved to another thread with the device (what a VMM's vCPU threads do).
            let k = host.kernel();
            std::thread::spawn(move || {
                assert_eq!(state.bar0.read::<u32>(first.offset + 8).unwrap(), 0xfeed_f00d);
                drop(state);
            })
            .join()
            .unwrap();
            assert_eq!(k.open_fds(), 0, "{m:?}: the mapping kept the device, then let it go");
        }
    }
}

#[test]
fn a_peer_bar_is_mapped_for_dma_and_kept_alive_by_its_mappings() {
    for m in [Mode::Type1v2, Mode::Type1] {
        let host = host(true);
        let vfio = Vfio::new(host.kernel(), host.fs());
        let nvme = vfio.open(a(NVME), interface(m)).unwrap();
        let edu = Arc::new(vfio.open_in(a(EDU), &nvme.address_space()).unwrap());
        let bar = Arc::new(edu.map_region_owned(0).unwrap());
        let pool = DmaPool::new(nvme.address_space()).unwrap();
        let maps = pool.map_peer(&bar, 1 << 32).unwrap();
        assert_eq!(maps.len(), bar.host_areas().count());
        assert_eq!(maps[0].iova(), 1 << 32);
        drop(bar);
        drop(edu);
        // The mappings still hold the BAR (and its device) until they go.
        assert_eq!(host.kernel().dma_mappings(), maps.len(), "{m:?}");
        drop(maps);
        assert_eq!(host.kernel().dma_mappings(), 0, "{m:?}");
    }
}
