//! Interrupts: IRQ info, `SET_IRQS` validation, MSI-X, MSI and INTx delivery on eventfds
//! (`vfio_pci_intrs.c`).

use std::os::fd::AsRawFd;

use vmm_sys_util::eventfd::EventFd;

use super::*;

fn irq_set(flags: u32, index: u32, start: u32, count: u32, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&((20 + data.len()) as u32).to_le_bytes());
    for v in [flags, index, start, count] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn nb_eventfd() -> EventFd {
    EventFd::new(libc::EFD_NONBLOCK).unwrap()
}

/// The eventfd's counter (0 when it was not signalled).
fn fired(e: &EventFd) -> u64 {
    e.read().unwrap_or(0)
}

fn irq_info(k: &MockKernel, d: &KernelFd, index: u32) -> KResult<vfio_irq_info> {
    let mut i = vfio_irq_info { argsz: 16, index, ..Default::default() };
    k.device_get_irq_info(d, &mut i).map(|_| i)
}

#[test]
fn irq_info_counts_and_flags() {
    let (_h, k) = edu_host();
    let d = open_edu(&k);
    let intx = irq_info(&k, &d, 0).unwrap();
    assert_eq!(intx.count, 1);
    assert_eq!(
        intx.flags,
        VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED
    );
    let msi = irq_info(&k, &d, 1).unwrap();
    assert_eq!((msi.count, msi.flags), (1, VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE));
    assert_eq!(irq_info(&k, &d, 2).unwrap().count, 0);
    assert_eq!(irq_info(&k, &d, 3).unwrap_err(), Errno::EINVAL, "ERR only for PCIe");
    assert_eq!(irq_info(&k, &d, 4).unwrap().count, 1);
    assert_eq!(irq_info(&k, &d, 5).unwrap_err(), Errno::EINVAL);
    let (_h2, k2, d2) = nvme_host("0000:01:00.0");
    let msix = irq_info(&k2, &d2, 2).unwrap();
    assert_eq!((msix.count, msix.flags), (65, VFIO_IRQ_INFO_EVENTFD));
    assert_eq!(irq_info(&k2, &d2, 3).unwrap().count, 1);
}

#[test]
fn set_irqs_validation() {
    let (_h, k, d) = nvme_host("0000:01:00.0");
    let e = nb_eventfd();
    let ev = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    // Two data types, no data type, index out of range, start+count beyond the vectors.
    let two = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER;
    assert_eq!(k.device_set_irqs(&d, &irq_set(two, 2, 0, 1, &[1])).unwrap_err(), Errno::EINVAL);
    assert_eq!(
        k.device_set_irqs(&d, &irq_set(VFIO_IRQ_SET_ACTION_TRIGGER, 2, 0, 1, &[])).unwrap_err(),
        Errno::EINVAL
    );
    assert_eq!(
        k.device_set_irqs(&d, &irq_set(ev, 5, 0, 1, &fd_bytes(&[e.as_raw_fd()]))).unwrap_err(),
        Errno::EINVAL
    );
    assert_eq!(
        k.device_set_irqs(&d, &irq_set(ev, 2, 64, 2, &fd_bytes(&[-1, -1]))).unwrap_err(),
        Errno::EINVAL
    );
    // argsz too small for the data.
    let mut short = irq_set(ev, 2, 0, 2, &fd_bytes(&[-1, -1]));
    short[0..4].copy_from_slice(&24u32.to_le_bytes());
    assert_eq!(k.device_set_irqs(&d, &short).unwrap_err(), Errno::EINVAL);
    // Two actions: no handler.
    let two_actions =
        VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_ACTION_TRIGGER;
    assert_eq!(
        k.device_set_irqs(&d, &irq_set(two_actions, 2, 0, 1, &[])).unwrap_err(),
        Errno::ENOTTY
    );
    // MSI-X masking is not supported.
    let mask = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK;
    assert_eq!(k.device_set_irqs(&d, &irq_set(mask, 2, 0, 1, &[])).unwrap_err(), Errno::ENOTTY);
    // Not an eventfd / a closed descriptor.
    let file = std::fs::File::open("/dev/null").unwrap();
    assert_eq!(
        k.device_set_irqs(&d, &irq_set(ev, 2, 0, 1, &fd_bytes(&[file.as_raw_fd()]))).unwrap_err(),
        Errno::EINVAL
    );
    assert_eq!(
        k.device_set_irqs(&d, &irq_set(ev, 2, 0, 1, &fd_bytes(&[MOCK_FD_BASE - 7]))).unwrap_err(),
        Errno::EBADF
    );
    // Loopback trigger before enabling.
    let trig = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
    assert_eq!(k.device_set_irqs(&d, &irq_set(trig, 2, 0, 1, &[])).unwrap_err(), Errno::EINVAL);
}

#[test]
fn msix_triggers_signal_eventfds_and_exclude_msi_and_intx() {
    let (host, k, d) = nvme_host("0000:01:00.0");
    let (e0, e1) = (nb_eventfd(), nb_eventfd());
    let ev = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    k.device_set_irqs(&d, &irq_set(ev, 2, 0, 2, &fd_bytes(&[e0.as_raw_fd(), e1.as_raw_fd()])))
        .unwrap();
    // Software trigger of vector 1 only (DATA_BOOL), then all (DATA_NONE).
    let boolt = VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER;
    k.device_set_irqs(&d, &irq_set(boolt, 2, 0, 2, &[0, 1])).unwrap();
    assert_eq!((fired(&e0), fired(&e1)), (0, 1));
    let none = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
    k.device_set_irqs(&d, &irq_set(none, 2, 0, 2, &[])).unwrap();
    assert_eq!((fired(&e0), fired(&e1)), (1, 1));
    // A device model raises vector 0.
    assert!(host.raise_irq(pa("0000:01:00.0"), 2, 0));
    assert_eq!(fired(&e0), 1);
    // Dynamic MSI-X: a vector added later.
    let e5 = nb_eventfd();
    k.device_set_irqs(&d, &irq_set(ev, 2, 5, 1, &fd_bytes(&[e5.as_raw_fd()]))).unwrap();
    assert!(host.raise_irq(pa("0000:01:00.0"), 2, 5));
    assert_eq!(fired(&e5), 1);
    // eventfd -1 disables one vector.
    k.device_set_irqs(&d, &irq_set(ev, 2, 1, 1, &fd_bytes(&[-1]))).unwrap();
    assert!(!host.raise_irq(pa("0000:01:00.0"), 2, 1));
    // INTx while MSI-X is on.
    assert_eq!(
        k.device_set_irqs(&d, &irq_set(ev, 0, 0, 1, &fd_bytes(&[e0.as_raw_fd()]))).unwrap_err(),
        Errno::EINVAL
    );
    // Disable with count 0, then INTx works.
    k.device_set_irqs(&d, &irq_set(none, 2, 0, 0, &[])).unwrap();
    assert!(!host.raise_irq(pa("0000:01:00.0"), 2, 0));
    k.device_set_irqs(&d, &irq_set(ev, 0, 0, 1, &fd_bytes(&[e0.as_raw_fd()]))).unwrap();
}

#[test]
fn msi_vectors_are_fixed_at_enable() {
    let mut spec = DeviceSpec::edu(EDU).group(1).driver("vfio-pci");
    spec.msi_vectors = 4;
    let host = MockHost::new([spec]);
    let k = host.kernel();
    let d = open_edu(&k);
    assert_eq!(irq_info(&k, &d, 1).unwrap().count, 4);
    let (e0, e3) = (nb_eventfd(), nb_eventfd());
    let ev = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    // Enabling zero vectors: pci_alloc_irq_vectors refuses with ERANGE.
    assert_eq!(k.device_set_irqs(&d, &irq_set(ev, 1, 0, 0, &[])).unwrap_err(), Errno::ERANGE);
    k.device_set_irqs(&d, &irq_set(ev, 1, 0, 1, &fd_bytes(&[e0.as_raw_fd()]))).unwrap();
    assert_eq!(
        k.device_set_irqs(&d, &irq_set(ev, 1, 3, 1, &fd_bytes(&[e3.as_raw_fd()]))).unwrap_err(),
        Errno::EINVAL
    );
    // Tearing down a vector (fd -1) past those allocated is harmless.
    k.device_set_irqs(&d, &irq_set(ev, 1, 3, 1, &fd_bytes(&[-1]))).unwrap();
    assert!(host.raise_irq(pa(EDU), 1, 0));
    assert_eq!(fired(&e0), 1);
    // Closing the device disables interrupts.
    k.close(d);
    assert!(!host.raise_irq(pa(EDU), 1, 0));
}

#[test]
fn intx_automask_and_unmask() {
    let (host, k) = edu_host();
    let d = open_edu(&k);
    let e = nb_eventfd();
    let ev = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    let mask = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK;
    let unmask = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK;
    // Masking needs INTx enabled.
    assert_eq!(k.device_set_irqs(&d, &irq_set(mask, 0, 0, 1, &[])).unwrap_err(), Errno::EINVAL);
    k.device_set_irqs(&d, &irq_set(ev, 0, 0, 1, &fd_bytes(&[e.as_raw_fd()]))).unwrap();
    assert!(host.raise_irq(pa(EDU), 0, 0));
    assert_eq!(fired(&e), 1);
    // Automasked: the next one is held pending until unmask.
    assert!(!host.raise_irq(pa(EDU), 0, 0));
    assert_eq!(fired(&e), 0);
    k.device_set_irqs(&d, &irq_set(unmask, 0, 0, 1, &[])).unwrap();
    assert_eq!(fired(&e), 1);
    k.device_set_irqs(&d, &irq_set(unmask, 0, 0, 1, &[])).unwrap();
    assert!(host.raise_irq(pa(EDU), 0, 0));
    assert_eq!(fired(&e), 1);
    // An unmask eventfd unmasks when written.
    let u = nb_eventfd();
    let unmask_ev = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_UNMASK;
    k.device_set_irqs(&d, &irq_set(unmask_ev, 0, 0, 1, &fd_bytes(&[u.as_raw_fd()]))).unwrap();
    u.write(1).unwrap();
    assert!(host.raise_irq(pa(EDU), 0, 0));
    // MSI while INTx is on.
    assert_eq!(
        k.device_set_irqs(&d, &irq_set(ev, 1, 0, 1, &fd_bytes(&[e.as_raw_fd()]))).unwrap_err(),
        Errno::EINVAL
    );
}

#[test]
fn err_and_req_triggers() {
    let (host, k, d) = nvme_host("0000:01:00.0");
    let e = nb_eventfd();
    let none = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
    assert_eq!(k.device_set_irqs(&d, &irq_set(none, 4, 0, 1, &[])).unwrap_err(), Errno::EINVAL);
    let ev = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    k.device_set_irqs(&d, &irq_set(ev, 4, 0, 1, &fd_bytes(&[e.as_raw_fd()]))).unwrap();
    k.device_set_irqs(&d, &irq_set(none, 4, 0, 1, &[])).unwrap();
    assert_eq!(fired(&e), 1);
    assert!(host.raise_irq(pa("0000:01:00.0"), 4, 0));
    assert_eq!(fired(&e), 1);
    k.device_set_irqs(&d, &irq_set(ev, 3, 0, 1, &fd_bytes(&[e.as_raw_fd()]))).unwrap();
    assert!(host.raise_irq(pa("0000:01:00.0"), 3, 0));
    assert_eq!(fired(&e), 1);
}
