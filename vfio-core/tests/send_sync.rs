//! Which library types may cross and be shared between threads, checked at compile time
//! (this file does not build if one of them loses `Send` or `Sync`). docs/reliability.md
//! has the table.

use vfio_core::container::Container;
use vfio_core::group::Group;
use vfio_core::iommufd::{Ioas, Iommufd};
use vfio_core::region::{Bar, MappedRegion};
use vfio_core::{AddressSpace, Device, DmaBuffer, DmaMapping, DmaPool, Vfio};

const fn assert_send_sync<T: Send + Sync>() {}

const _: () = {
    assert_send_sync::<Vfio>();
    assert_send_sync::<Container>();
    assert_send_sync::<Group>();
    assert_send_sync::<Iommufd>();
    assert_send_sync::<Ioas>();
    assert_send_sync::<Device>();
    assert_send_sync::<AddressSpace>();
    assert_send_sync::<DmaPool>();
    assert_send_sync::<DmaBuffer>();
    assert_send_sync::<DmaMapping>();
    assert_send_sync::<MappedRegion<'static>>();
    assert_send_sync::<Bar<'static>>();
};

/// A device opened on one thread is used from several at once.
#[test]
fn a_device_and_its_buffers_are_shared_across_threads() {
    use vfio_core::mock::{DeviceSpec, MockHost};
    use vfio_core::{Interface, PciAddress};
    let h = MockHost::new([DeviceSpec::edu("0000:00:04.0").group(1).driver("vfio-pci")]);
    let vfio = Vfio::new(h.kernel(), h.fs());
    let dev = vfio.open(PciAddress::parse("0000:00:04.0").unwrap(), Interface::Auto).unwrap();
    let pool = DmaPool::new(dev.address_space()).unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                assert_eq!(dev.config_read_u16(0).unwrap(), 0x1234);
                let b = pool.alloc(4096).unwrap();
                b.write(0, b"x").unwrap();
            });
        }
    });
    drop(pool);
    drop(dev);
    assert_eq!(h.kernel().dma_mappings(), 0);
}
