//! The edu example driver (`examples/edu/driver.rs`) run against the mock's model of
//! QEMU's edu device, in every IOMMU mode. The same driver runs against the real kernel
//! and QEMU's device in the VM lab.

#[path = "../examples/edu/driver.rs"]
mod driver;

use std::time::Duration;

use driver::{edu_pool, fill, Edu, MAX_DMA};
use vfio_core::container::IommuType;
use vfio_core::mock::models::EduModel;
use vfio_core::mock::{DeviceSpec, MockHost, MockKernelConfig};
use vfio_core::{Interface, PciAddress, Vfio};

const T: Duration = Duration::from_secs(5);

fn lab() -> (MockHost, Vfio, PciAddress) {
    let a = PciAddress::parse("0000:00:04.0").unwrap();
    let host = MockHost::new([DeviceSpec::edu("0000:00:04.0").group(1).driver("vfio-pci")]);
    host.set_kernel_config(MockKernelConfig {
        cap_ipc_lock: true,
        interrupt_remapping: false,
        allow_unsafe_interrupts: true,
        ..MockKernelConfig::default()
    });
    assert!(host.attach_model(a, 0, Box::new(EduModel::new())));
    let vfio = Vfio::new(host.kernel(), host.fs());
    (host, vfio, a)
}

#[test]
fn the_edu_driver_works_in_every_mode() {
    for interface in
        [Interface::Container, Interface::ContainerWith(IommuType::Type1), Interface::Iommufd]
    {
        let (host, vfio, a) = lab();
        let device = vfio.open(a, interface).unwrap();
        let mut edu = Edu::new(&device).unwrap();
        assert_eq!(edu.identify().unwrap(), Some((1, 0)), "{interface:?}");
        assert!(edu.liveness(0x1234_5678).unwrap());
        assert!(!edu.bar.is_mapped(0, 4), "a model-backed BAR is trapped, not mmap'd");
        edu.enable_msi().unwrap();
        assert_eq!(edu.factorial(5, T).unwrap(), (120, true), "{interface:?}");
        assert_eq!(edu.factorial(10, T).unwrap().0, 3_628_800);

        let pool = edu_pool(&device).unwrap();
        let src = pool.alloc(4096).unwrap();
        let dst = pool.alloc(4096).unwrap();
        let data = fill(&src, 0x5a, MAX_DMA as usize).unwrap();
        assert!(edu.dma_to_device(src.iova(), MAX_DMA, T).unwrap());
        assert!(edu.dma_from_device(dst.iova(), MAX_DMA, T).unwrap());
        let mut back = vec![0u8; MAX_DMA as usize];
        dst.read(0, &mut back).unwrap();
        assert_eq!(back, data, "{interface:?}: DMA round trip");
        drop((src, dst));
        assert_eq!(host.kernel().dma_mappings(), 0);
    }
}

#[test]
fn dma_to_an_unmapped_iova_does_not_land() {
    let (_host, vfio, a) = lab();
    let device = vfio.open(a, Interface::Container).unwrap();
    let mut edu = Edu::new(&device).unwrap();
    edu.enable_msi().unwrap();
    let pool = edu_pool(&device).unwrap();
    let src = pool.alloc(4096).unwrap();
    fill(&src, 0x11, MAX_DMA as usize).unwrap();
    assert!(edu.dma_to_device(src.iova(), MAX_DMA, T).unwrap());
    // A buffer whose mapping is gone: the device's write must fault, not land.
    let victim = pool.alloc(4096).unwrap();
    let stale = victim.iova();
    let mem = victim.as_ptr();
    std::mem::forget(victim); // keep the memory; drop only the mapping below
    device.address_space().unmap(stale, 4096).unwrap();
    edu.dma_from_device(stale, MAX_DMA, T).unwrap();
    // SAFETY: the memory is still mapped in the process (forgotten, not freed).
    let first = unsafe { std::slice::from_raw_parts(mem, 64) };
    assert!(first.iter().all(|b| *b == 0), "DMA to an unmapped IOVA landed");
}

/// Live update on the container (`VFIO_UPDATE_VADDR`): guest RAM is a memfd; the old
/// process invalidates the mappings' addresses, the new one maps the same memfd at
/// another address and gives it to the mappings; the device's DMA then lands in it.
#[test]
fn a_live_update_moves_guest_ram_to_a_new_address_without_unmapping() {
    use vfio_core::AddressSpace;
    for interface in [Interface::Container, Interface::ContainerWith(IommuType::Type1)] {
        let (_host, vfio, a) = lab();
        let device = vfio.open(a, interface).unwrap();
        let AddressSpace::Container(c) = device.address_space() else { panic!("a container") };
        let len = 1 << 16;
        // SAFETY: a fresh memfd of `len` bytes, mapped shared twice below.
        let memfd = unsafe { libc::memfd_create(c"ram".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(memfd >= 0);
        // SAFETY: ftruncate of our own memfd.
        assert_eq!(unsafe { libc::ftruncate(memfd, len as i64) }, 0);
        let map = || {
            // SAFETY: a new shared mapping of our memfd; unmapped below.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    memfd,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            p as u64
        };
        let old = map();
        let iova = 0x10_0000;
        // SAFETY: `old` stays mapped until the addresses are invalidated below.
        unsafe { c.map_dma(old, iova, len as u64, vfio_core::DmaPerm::ReadWrite) }.unwrap();
        assert_eq!(c.invalidate_vaddr(iova, len as u64, false).unwrap(), len as u64);
        // SAFETY: `old` is no longer named by any mapping.
        unsafe { libc::munmap(old as *mut libc::c_void, len) };
        let new = map();
        // SAFETY: `new` maps the same pages as `old` did and stays mapped until the end.
        unsafe { c.update_vaddr(new, iova, len as u64) }.unwrap();
        let mut edu = Edu::new(&device).unwrap();
        edu.enable_msi().unwrap();
        let pool = edu_pool(&device).unwrap();
        let src = pool.alloc(4096).unwrap();
        let data = fill(&src, 3, 512).unwrap();
        assert!(edu.dma_to_device(src.iova(), 512, T).unwrap());
        assert!(edu.dma_from_device(iova, 512, T).unwrap(), "{interface:?}");
        // SAFETY: `new` maps `len` bytes; read the first 512.
        let got = unsafe { std::slice::from_raw_parts(new as *const u8, 512) }.to_vec();
        assert_eq!(got, data, "{interface:?}: the DMA landed in the new mapping");
        assert_eq!(c.unmap_dma(iova, len as u64).unwrap(), len as u64);
        // SAFETY: unmapped from the IOMMU above; our own mapping and memfd.
        unsafe {
            libc::munmap(new as *mut libc::c_void, len);
            libc::close(memfd);
        }
    }
}
