//! Groups and containers: group viability and nodes, container ordering and extensions
//! (`group.c`, `container.c`).

use super::*;

#[test]
fn group_node_exists_only_while_a_member_is_on_vfio_pci() {
    let host = MockHost::new([DeviceSpec::edu(EDU).group(3).driver("edu-host")]);
    let k = host.kernel();
    assert_eq!(k.open_group(GroupNode::Iommu(3)).unwrap_err(), Errno::ENOENT);
    host.set_driver(pa(EDU), Some("vfio-pci"));
    let g = k.open_group(GroupNode::Iommu(3)).unwrap();
    // One open at a time.
    assert_eq!(k.open_group(GroupNode::Iommu(3)).unwrap_err(), Errno::EBUSY);
    k.close(g);
    let g = k.open_group(GroupNode::Iommu(3)).unwrap();
    assert!(
        std::fs::read_link(format!("/proc/self/fd/{}", g.raw())).is_ok(),
        "mock fds are real descriptors of the process"
    );
    k.close(g);
    assert_eq!(k.open_fds(), 0);
}

#[test]
fn group_viability_follows_member_drivers() {
    let host = MockHost::new([
        DeviceSpec::edu("0000:02:00.0").group(5).driver("vfio-pci"),
        DeviceSpec::edu("0000:02:00.1").group(5).driver("e1000e"),
        DeviceSpec::bridge("0000:00:1c.0").group(5),
    ]);
    let k = host.kernel();
    let c = k.open_container().unwrap();
    let g = k.open_group(GroupNode::Iommu(5)).unwrap();
    assert_eq!(k.group_get_status(&g).unwrap(), 0);
    // iommu_group_claim_dma_owner refuses while a host driver owns DMA.
    assert_eq!(k.group_set_container(&g, &c).unwrap_err(), Errno::EPERM);
    host.set_driver(pa("0000:02:00.1"), None);
    assert_eq!(k.group_get_status(&g).unwrap(), VFIO_GROUP_FLAGS_VIABLE);
    // pcieport claims no DMA ownership either.
    host.set_driver(pa("0000:00:1c.0"), Some("pcieport"));
    assert_eq!(k.group_get_status(&g).unwrap(), VFIO_GROUP_FLAGS_VIABLE);
    k.group_set_container(&g, &c).unwrap();
    assert_eq!(
        k.group_get_status(&g).unwrap(),
        VFIO_GROUP_FLAGS_VIABLE | VFIO_GROUP_FLAGS_CONTAINER_SET
    );
    // A second SET_CONTAINER on the same group.
    assert_eq!(k.group_set_container(&g, &c).unwrap_err(), Errno::EINVAL);
}

#[test]
fn container_ordering_and_extensions() {
    let (_h, k) = edu_host();
    let c = k.open_container().unwrap();
    assert_eq!(k.get_api_version(&c).unwrap(), 0);
    assert_eq!(k.check_extension(&c, VFIO_TYPE1_IOMMU).unwrap(), 1);
    assert_eq!(k.check_extension(&c, VFIO_TYPE1v2_IOMMU).unwrap(), 1);
    assert_eq!(k.check_extension(&c, VFIO_NOIOMMU_IOMMU).unwrap(), 0);
    assert_eq!(k.check_extension(&c, 0xdead).unwrap(), 0);
    // SET_IOMMU before any group is in.
    assert_eq!(k.set_iommu(&c, VFIO_TYPE1v2_IOMMU).unwrap_err(), Errno::EINVAL);
    let g = k.open_group(GroupNode::Iommu(1)).unwrap();
    // GET_DEVICE_FD without a container, then without an IOMMU.
    assert_eq!(dev_fd(&k, &g, EDU).unwrap_err(), Errno::EINVAL);
    k.group_set_container(&g, &c).unwrap();
    assert_eq!(dev_fd(&k, &g, EDU).unwrap_err(), Errno::EINVAL);
    // An unknown type finds no driver.
    assert_eq!(k.set_iommu(&c, VFIO_NOIOMMU_IOMMU).unwrap_err(), Errno::ENODEV);
    k.set_iommu(&c, VFIO_TYPE1v2_IOMMU).unwrap();
    assert_eq!(k.set_iommu(&c, VFIO_TYPE1v2_IOMMU).unwrap_err(), Errno::EINVAL);
    // A name not in the group.
    assert_eq!(dev_fd(&k, &g, "0000:00:05.0").unwrap_err(), Errno::ENODEV);
    let d = dev_fd(&k, &g, EDU).unwrap();
    // cdev-only ioctls on a group-opened device.
    let mut at = vfio_device_attach_iommufd_pt { argsz: 16, pt_id: 1, ..Default::default() };
    assert_eq!(k.device_attach_iommufd_pt(&d, &mut at).unwrap_err(), Errno::ENOTTY);
    let mut bind = vfio_device_bind_iommufd { argsz: 24, iommufd: 0, ..Default::default() };
    assert_eq!(k.device_bind_iommufd(&d, &mut bind).unwrap_err(), Errno::EINVAL);
    k.close(d);
}

#[test]
fn type1_missing_or_interrupt_remapping_absent() {
    let (host, k) = edu_host();
    host.set_kernel_config(MockKernelConfig { type1v2: false, ..Default::default() });
    let c = k.open_container().unwrap();
    assert_eq!(k.check_extension(&c, VFIO_TYPE1v2_IOMMU).unwrap(), 0);
    let g = k.open_group(GroupNode::Iommu(1)).unwrap();
    k.group_set_container(&g, &c).unwrap();
    assert_eq!(k.set_iommu(&c, VFIO_TYPE1v2_IOMMU).unwrap_err(), Errno::ENODEV);
    host.set_kernel_config(MockKernelConfig { interrupt_remapping: false, ..Default::default() });
    assert_eq!(k.set_iommu(&c, VFIO_TYPE1v2_IOMMU).unwrap_err(), Errno::EPERM);
    host.set_kernel_config(MockKernelConfig {
        interrupt_remapping: false,
        allow_unsafe_interrupts: true,
        ..Default::default()
    });
    k.set_iommu(&c, VFIO_TYPE1v2_IOMMU).unwrap();
}

#[test]
fn groups_share_a_container_and_the_last_close_drops_the_iommu() {
    let host = MockHost::new([
        DeviceSpec::edu("0000:00:04.0").group(1).driver("vfio-pci"),
        DeviceSpec::edu("0000:00:05.0").group(2).driver("vfio-pci"),
    ]);
    let k = host.kernel();
    let (c, g1) = legacy(&k, 1);
    let g2 = k.open_group(GroupNode::Iommu(2)).unwrap();
    k.group_set_container(&g2, &c).unwrap();
    let d2 = dev_fd(&k, &g2, "0000:00:05.0").unwrap();
    let mem = anon(2 * PAGE as usize);
    dma_map(&k, &c, mem.as_ptr() as u64, 0x10_0000, 2 * PAGE).unwrap();
    assert_eq!(k.dma_mappings(), 1);
    k.close(g1);
    assert_eq!(k.dma_mappings(), 1, "group 2 still holds the container");
    // The device fd holds group 2 even after its fd is closed.
    k.close(g2);
    assert_eq!(k.dma_mappings(), 1);
    assert_eq!(k.open_group(GroupNode::Iommu(2)).unwrap_err(), Errno::EBUSY);
    assert_eq!(k.locked_bytes(), 2 * PAGE);
    k.close(d2);
    assert_eq!(k.dma_mappings(), 0);
    assert_eq!(k.locked_bytes(), 0);
    // The container is back to no IOMMU: map calls fail, SET_IOMMU needs a group again.
    assert_eq!(dma_map(&k, &c, mem.as_ptr() as u64, 0, PAGE).unwrap_err(), Errno::EINVAL);
    assert_eq!(k.set_iommu(&c, VFIO_TYPE1v2_IOMMU).unwrap_err(), Errno::EINVAL);
    k.close(c);
    assert_eq!(k.open_fds(), 0);
}

#[test]
fn unset_container_is_busy_while_a_device_is_open() {
    let (_h, k) = edu_host();
    let (_c, g) = legacy(&k, 1);
    let d = dev_fd(&k, &g, EDU).unwrap();
    assert_eq!(k.group_unset_container(&g).unwrap_err(), Errno::EBUSY);
    k.close(d);
    k.group_unset_container(&g).unwrap();
    assert_eq!(k.group_unset_container(&g).unwrap_err(), Errno::EINVAL);
    assert_eq!(k.group_get_status(&g).unwrap(), VFIO_GROUP_FLAGS_VIABLE);
}

#[test]
fn set_container_needs_a_container_fd() {
    let (_h, k) = edu_host();
    let g = k.open_group(GroupNode::Iommu(1)).unwrap();
    let io = k.open_iommufd().unwrap();
    assert_eq!(k.group_set_container(&g, &io).unwrap_err(), Errno::EBADFD);
    assert_eq!(
        k.group_set_container(&g, &KernelFd::from_raw(MOCK_FD_BASE + 999)).unwrap_err(),
        Errno::EBADF
    );
}
