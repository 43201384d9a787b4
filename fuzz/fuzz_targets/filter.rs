//! Fuzzes PCI address parsing and the device filter expressions (`-d` ids, addresses and
//! slots, name regular expressions), matching them against a sample device.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfio_core::host::devices::PciDevice;
use vfio_core::host::filter::{AddressFilter, DeviceFilter, IdFilter, NameFilter};
use vfio_core::PciAddress;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let dev = PciDevice {
        address: PciAddress::new(0, 1, 0, 0).unwrap(),
        vendor: 0x10de,
        device: 0x1280,
        subsystem_vendor: 0,
        subsystem_device: 0,
        class: 0x030000,
        vendor_name: Some("NVIDIA Corporation".into()),
        device_name: Some("GK208 [GeForce GT 635]".into()),
        class_name: Some("VGA compatible controller".into()),
        driver: None,
        driver_override: None,
        iommu_group: Some(1),
        pci_bridge: false,
        isolated: Some(true),
        group_peers: vec![],
    };
    if let Ok(a) = PciAddress::parse(s) {
        // A parsed address prints in full form and parses back to itself.
        assert_eq!(PciAddress::parse(&a.to_string()).unwrap(), a);
        assert!(a.device < 32 && a.function < 8);
    }
    let mut f = DeviceFilter::default();
    if let Ok(id) = IdFilter::parse(s) {
        f.ids.push(id);
    }
    if let Ok(a) = AddressFilter::parse(s) {
        let _ = a.matches(dev.address);
        f.addresses.push(a);
    }
    // Regular expressions are compiled only from short inputs to keep runs fast.
    if s.len() <= 64 {
        if let Ok(n) = NameFilter::parse(s) {
            f.names.push(n);
        }
    }
    let _ = f.matches(&dev);
});
