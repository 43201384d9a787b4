//! Resets: function reset, hot reset info and hot reset in both modes.

use super::*;

#[test]
fn device_reset_needs_flr() {
    let (host, k) = edu_host();
    let d = open_edu(&k);
    assert_eq!(k.device_reset(&d).unwrap_err(), Errno::EINVAL);
    let (h2, k2, d2) = nvme_host("0000:01:00.0");
    k2.device_reset(&d2).unwrap();
    assert_eq!(h2.reset_count(pa("0000:01:00.0")), 1);
    // "Initiate FLR" in the PCIe device control register resets the function.
    let p = {
        let st = h2.state();
        let c = &st.devices[&pa("0000:01:00.0")].config;
        let mut p = c[0x34] as usize;
        while c[p] != 0x10 {
            p = c[p + 1] as usize;
        }
        p as u64
    };
    let mut ctl = [0u8; 2];
    k2.region_read(&d2, (7 << 40) + p + 8, &mut ctl).unwrap();
    k2.region_write(&d2, (7 << 40) + p + 8, &[ctl[0], ctl[1] | 0x80]).unwrap();
    assert_eq!(h2.reset_count(pa("0000:01:00.0")), 2);
    k2.region_read(&d2, (7 << 40) + p + 8, &mut ctl).unwrap();
    assert_eq!(ctl[1] & 0x80, 0, "the FLR bit reads back 0");
    // The last close resets a device whose reset works (vfio_pci_core_disable).
    k2.close(d2);
    assert_eq!(h2.reset_count(pa("0000:01:00.0")), 3);
    k.close(d);
    assert_eq!(host.reset_count(pa(EDU)), 0);
}

fn hot_reset_info(k: &MockKernel, d: &KernelFd, n: usize) -> (KResult<()>, Vec<u8>) {
    let mut b = vec![0u8; 12 + 8 * n];
    b[0..4].copy_from_slice(&((12 + 8 * n) as u32).to_le_bytes());
    let r = k.device_get_pci_hot_reset_info(d, &mut b);
    (r, b)
}

fn hot_reset(k: &MockKernel, d: &KernelFd, groups: &[i32]) -> KResult<()> {
    let mut b = Vec::new();
    b.extend_from_slice(&((12 + 4 * groups.len()) as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&(groups.len() as u32).to_le_bytes());
    b.extend_from_slice(&fd_bytes(groups));
    k.device_pci_hot_reset(d, &b)
}

#[test]
fn hot_reset_on_the_root_bus_is_unavailable() {
    let (_h, k) = edu_host();
    let d = open_edu(&k);
    assert_eq!(hot_reset_info(&k, &d, 4).0.unwrap_err(), Errno::ENODEV);
}

#[test]
fn hot_reset_info_and_legacy_reset() {
    let host = MockHost::new([
        DeviceSpec::nvme("0000:03:00.0").group(8).driver("vfio-pci"),
        DeviceSpec::edu("0000:03:00.1").group(9).driver("vfio-pci"),
    ]);
    let k = host.kernel();
    let (c, g8) = legacy(&k, 8);
    let g9 = k.open_group(GroupNode::Iommu(9)).unwrap();
    k.group_set_container(&g9, &c).unwrap();
    let d = dev_fd(&k, &g8, "0000:03:00.0").unwrap();
    let (r, b) = hot_reset_info(&k, &d, 1);
    assert_eq!(r.unwrap_err(), Errno::ENOSPC);
    assert_eq!(u32_at(&b, 8), 2);
    let (r, b) = hot_reset_info(&k, &d, 2);
    r.unwrap();
    assert_eq!((u32_at(&b, 4), u32_at(&b, 8)), (0, 2));
    assert_eq!((u32_at(&b, 12), b[18], b[19]), (8, 3, 0));
    assert_eq!((u32_at(&b, 20), b[26], b[27]), (9, 3, 1));
    // Legacy: count 0 is for cdevs; every affected group must be passed.
    assert_eq!(hot_reset(&k, &d, &[]).unwrap_err(), Errno::EINVAL);
    assert_eq!(hot_reset(&k, &d, &[g8.raw()]).unwrap_err(), Errno::EINVAL);
    assert_eq!(hot_reset(&k, &d, &[g8.raw(), c.raw()]).unwrap_err(), Errno::EINVAL);
    assert_eq!(hot_reset(&k, &d, &[g8.raw(), MOCK_FD_BASE + 5000]).unwrap_err(), Errno::EBADF);
    assert_eq!(hot_reset(&k, &d, &[g8.raw(), g9.raw(), g9.raw()]).unwrap_err(), Errno::EINVAL);
    hot_reset(&k, &d, &[g8.raw(), g9.raw()]).unwrap();
    assert_eq!(host.reset_count(pa("0000:03:00.1")), 1);
    // A device on the bus bound to a host driver blocks the reset.
    host.set_driver(pa("0000:03:00.1"), Some("e1000e"));
    assert_eq!(hot_reset(&k, &d, &[g8.raw(), g9.raw()]).unwrap_err(), Errno::EINVAL);
}

#[test]
fn hot_reset_through_cdev() {
    let host = MockHost::new([
        DeviceSpec::nvme("0000:03:00.0").group(8).driver("vfio-pci"),
        DeviceSpec::edu("0000:03:00.1").group(9).driver("vfio-pci"),
    ]);
    let k = host.kernel();
    let io = k.open_iommufd().unwrap();
    let bind = |idx: u32| {
        let d = k.open_device_cdev(idx).unwrap();
        let mut b = vfio_device_bind_iommufd { argsz: 24, iommufd: io.raw(), ..Default::default() };
        k.device_bind_iommufd(&d, &mut b).unwrap();
        (d, b.out_devid)
    };
    let (d0, id0) = bind(0);
    let (r, b) = hot_reset_info(&k, &d0, 2);
    r.unwrap();
    assert_eq!(u32_at(&b, 4), VFIO_PCI_HOT_RESET_FLAG_DEV_ID);
    assert_eq!(u32_at(&b, 12), id0);
    assert_eq!(u32_at(&b, 20), VFIO_PCI_DEVID_NOT_OWNED as u32);
    assert_eq!(hot_reset(&k, &d0, &[]).unwrap_err(), Errno::EINVAL);
    let (_d1, id1) = bind(1);
    let (_, b) = hot_reset_info(&k, &d0, 2);
    assert_eq!(
        u32_at(&b, 4),
        VFIO_PCI_HOT_RESET_FLAG_DEV_ID | VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED
    );
    assert_eq!(u32_at(&b, 20), id1);
    hot_reset(&k, &d0, &[]).unwrap();
    assert_eq!(host.reset_count(pa("0000:03:00.0")), 1);
}
