//! Fault injection at the calls' gate, call and leak counters, and handles on one kernel.

use std::os::fd::AsRawFd;

use super::*;

#[test]
fn fault_injection_next_nth_always() {
    let (h, k) = edu_host();
    h.inject(Fault::kernel(KernelOp::OpenContainer).errno(Errno::EMFILE));
    assert_eq!(k.open_container().unwrap_err(), Errno::EMFILE);
    let c = k.open_container().unwrap();
    h.inject(Fault::kernel(KernelOp::GetApiVersion).errno(Errno::EIO).nth(3));
    assert_eq!(k.get_api_version(&c).unwrap(), 0);
    assert_eq!(k.get_api_version(&c).unwrap(), 0);
    assert_eq!(k.get_api_version(&c).unwrap_err(), Errno::EIO);
    assert_eq!(k.get_api_version(&c).unwrap(), 0);
    h.inject(Fault::kernel(KernelOp::CheckExtension).errno(Errno::ENOTTY).always());
    assert_eq!(k.check_extension(&c, VFIO_TYPE1v2_IOMMU).unwrap_err(), Errno::ENOTTY);
    assert_eq!(k.check_extension(&c, VFIO_TYPE1v2_IOMMU).unwrap_err(), Errno::ENOTTY);
    h.clear_faults();
    assert_eq!(k.check_extension(&c, VFIO_TYPE1v2_IOMMU).unwrap(), 1);
    assert_eq!(k.calls(KernelOp::OpenContainer), 2);
    assert_eq!(k.calls(KernelOp::GetApiVersion), 4);
    assert_eq!(k.calls(KernelOp::CheckExtension), 3);
    assert_eq!(k.open_fds(), 1);
    k.close(c);
    assert_eq!(k.open_fds(), 0);
    assert_eq!(k.calls(KernelOp::Close), 1);
}

#[test]
fn every_handle_is_the_same_kernel() {
    let (host, k) = edu_host();
    let k2 = host.kernel();
    let c = k.open_container().unwrap();
    assert_eq!(k2.open_fds(), 1);
    assert_eq!(k2.get_api_version(&c).unwrap(), 0);
    k2.close(c);
    assert_eq!(k.open_fds(), 0);
    let e = k.eventfd().unwrap();
    assert!(e.as_raw_fd() < MOCK_FD_BASE, "eventfds are real");
    assert_eq!(k.calls(KernelOp::EventFd), 1);
}
