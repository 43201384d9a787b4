//! No-IOMMU groups and their container.

use super::*;

#[test]
fn noiommu_groups_and_container() {
    let host = MockHost::new([
        DeviceSpec::edu(EDU).driver("vfio-pci"),
        DeviceSpec::edu("0000:00:05.0").group(0),
    ]);
    let k = host.kernel();
    assert_eq!(host.noiommu_group(pa(EDU)), None);
    assert_eq!(k.open_group(GroupNode::NoIommu(1)).unwrap_err(), Errno::ENOENT);
    host.set_kernel_config(MockKernelConfig { noiommu: true, ..Default::default() });
    // Group 0 is taken by a real group: the fake group gets the lowest free id.
    assert_eq!(host.noiommu_group(pa(EDU)), Some(1));
    let c = k.open_container().unwrap();
    assert_eq!(k.check_extension(&c, VFIO_NOIOMMU_IOMMU).unwrap(), 1);
    let g = k.open_group(GroupNode::NoIommu(1)).unwrap();
    assert_eq!(k.group_get_status(&g).unwrap(), VFIO_GROUP_FLAGS_VIABLE);
    k.group_set_container(&g, &c).unwrap();
    assert_eq!(k.check_extension(&c, VFIO_TYPE1v2_IOMMU).unwrap(), 0);
    assert_eq!(k.set_iommu(&c, VFIO_TYPE1v2_IOMMU).unwrap_err(), Errno::ENODEV);
    k.set_iommu(&c, VFIO_NOIOMMU_IOMMU).unwrap();
    let mem = anon(PAGE as usize);
    assert_eq!(dma_map(&k, &c, mem.as_ptr() as u64, 0, PAGE).unwrap_err(), Errno::ENOTTY);
    let mut info = vec![0u8; 24];
    info[0..4].copy_from_slice(&24u32.to_le_bytes());
    assert_eq!(k.iommu_get_info(&c, &mut info).unwrap_err(), Errno::ENOTTY);
    let d = dev_fd(&k, &g, EDU).unwrap();
    k.close(d);
}
