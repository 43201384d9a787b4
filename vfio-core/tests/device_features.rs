//! Device features on the mock: probes as vfio-pci answers them for a plain function,
//! low power entry, entry with wake-up and exit, and VF tokens on the simulated igb
//! (set on the PF, required by its VF through the group and through the cdev).

use std::os::fd::AsRawFd;
use std::path::Path;

use vfio_core::feature::{FeatureSupport, FEATURE_GET, FEATURE_SET};
use vfio_core::hostfs::HostFs;
use vfio_core::kernel::Errno;
use vfio_core::mock::{DeviceSpec, MockHost, MockKernelConfig};
use vfio_core::{Error, Feature, Interface, PciAddress, VfToken, Vfio};

const EDU: &str = "0000:00:04.0";
const PF: &str = "0000:02:00.0";
const VF: &str = "0000:02:10.0";

fn a(s: &str) -> PciAddress {
    PciAddress::parse(s).unwrap()
}

fn host() -> MockHost {
    MockHost::new([
        DeviceSpec::edu(EDU).group(1).driver("vfio-pci"),
        DeviceSpec::igb(PF).group(2).driver("vfio-pci"),
    ])
    .with_sys(|s| s.load_vfio())
}

fn fired(fd: &vmm_sys_util::eventfd::EventFd) -> bool {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: a valid pollfd for the call.
    unsafe { libc::poll(&mut p, 1, 0) == 1 }
}

#[test]
fn a_plain_function_offers_low_power_only() {
    let h = host();
    let vfio = Vfio::new(h.kernel(), h.fs());
    for interface in [Interface::Container, Interface::Iommufd] {
        let d = vfio.open(a(EDU), interface).unwrap();
        let got = d.supported_features().unwrap();
        let lp = |feature| FeatureSupport { feature, get: false, set: true };
        let want = vec![
            lp(Feature::LowPowerEntry),
            lp(Feature::LowPowerEntryWithWakeup),
            lp(Feature::LowPowerExit),
            FeatureSupport { feature: Feature::DmaBuf, get: true, set: false },
        ];
        assert_eq!(got, want);
        let e = d.feature_probe_ops(Feature::Migration, FEATURE_GET).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::ENOTTY));
        assert_eq!(e.kernel_op(), Some(vfio_core::kernel::KernelOp::DeviceFeature));
        let e = d.feature_ioctl(3 | FEATURE_GET | FEATURE_SET, &mut []).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::EINVAL));
        assert!(matches!(d.feature_get(Feature::DmaBuf, &mut []), Err(Error::Unsupported { .. })));
        let e = d.set_vf_token(&VfToken::random().unwrap()).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::ENOTTY));
        assert!(e.to_string().contains("only an SR-IOV PF"), "{e}");
    }
    // 6.12: no dma-buf.
    h.set_kernel_config(MockKernelConfig::linux(6, 12));
    let d = vfio.open(a(EDU), Interface::Container).unwrap();
    assert!(!d.feature_probe(Feature::DmaBuf).unwrap());
    let e = d.feature_probe_ops(Feature::MigPrecopyInfoV2, 0).unwrap_err();
    assert_eq!(e.errno(), Some(Errno::ENOTTY));
}

#[test]
fn low_power_with_wakeup_fires_once_on_access() {
    let h = host();
    let vfio = Vfio::new(h.kernel(), h.fs());
    let d = vfio.open(a(EDU), Interface::Container).unwrap();
    d.low_power_entry().unwrap();
    assert_eq!(d.low_power_entry().unwrap_err().errno(), Some(Errno::EINVAL));
    assert_eq!(d.config_read_u16(0).unwrap(), 0x1234);
    // A plain entry stays allowed after an access.
    assert_eq!(d.low_power_entry().unwrap_err().errno(), Some(Errno::EINVAL));
    d.low_power_exit().unwrap();
    d.low_power_exit().unwrap();

    let ev = d.new_eventfds(1).unwrap();
    d.low_power_entry_with_wakeup(&ev[0]).unwrap();
    assert!(!fired(&ev[0]));
    d.config_read_u16(0).unwrap();
    assert!(fired(&ev[0]), "the access woke the device");
    // Single shot: low power is disallowed again, a new entry works.
    d.low_power_entry_with_wakeup(&ev[0]).unwrap();
    // The exit ioctl itself wakes the device first.
    d.low_power_exit().unwrap();
    assert!(fired(&ev[0]), "the exit woke the device");

    // Without runtime PM the device never suspends: nothing fires.
    h.set_kernel_config(MockKernelConfig { runtime_pm: false, ..MockKernelConfig::default() });
    let ev = d.new_eventfds(1).unwrap();
    d.low_power_entry_with_wakeup(&ev[0]).unwrap();
    d.config_read_u16(0).unwrap();
    assert!(!fired(&ev[0]));
    d.low_power_exit().unwrap();
}

#[test]
fn a_vf_opens_only_with_its_pfs_token() {
    for interface in [Interface::Container, Interface::Iommufd] {
        let h = host();
        let vfio = Vfio::new(h.kernel(), h.fs());
        let pf = vfio.open(a(PF), interface).unwrap();
        let token = VfToken::parse("bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3").unwrap();
        pf.set_vf_token(&token).unwrap();
        h.fs().write(Path::new(&format!("/sys/bus/pci/devices/{PF}/sriov_numvfs")), b"1").unwrap();
        // vfio-pci captured the VF.
        let drv = h.state().devices.get(&a(VF)).and_then(|d| d.driver.clone());
        assert_eq!(drv.as_deref(), Some("vfio-pci"));

        let e = vfio.open(a(VF), interface).unwrap_err();
        assert!(matches!(&e, Error::VfToken { device, .. } if device == VF), "{e}");
        assert!(e.to_string().contains("required"), "{e}");
        let wrong = VfToken::random().unwrap();
        let e = vfio.open_with_token(a(VF), interface, &wrong).unwrap_err();
        assert!(e.to_string().contains(&format!("the VF token {wrong} is not its PF's")), "{e}");
        assert!(e.to_string().contains("Device::set_vf_token"), "{e}");
        let vf = vfio.open_with_token(a(VF), interface, &token).unwrap();
        assert_eq!(
            (vf.config_read_u16(0).unwrap(), vf.config_read_u16(2).unwrap()),
            (0x8086, 0x10ca)
        );

        // A token for a device that is neither: EINVAL, with when tokens apply.
        let e = vfio.open_with_token(a(EDU), interface, &token).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::EINVAL), "{e}");
        assert!(e.to_string().contains("a VF token applies only"), "{e}");
    }
}

#[test]
fn before_the_bind_token_flag_the_cdev_takes_no_token_and_checks_none() {
    let h = host();
    h.set_kernel_config(MockKernelConfig::linux(6, 12));
    let vfio = Vfio::new(h.kernel(), h.fs());
    let pf = vfio.open(a(PF), Interface::Iommufd).unwrap();
    let token = VfToken::random().unwrap();
    pf.set_vf_token(&token).unwrap();
    h.fs().write(Path::new(&format!("/sys/bus/pci/devices/{PF}/sriov_numvfs")), b"1").unwrap();
    let e = vfio.open_with_token(a(VF), Interface::Iommufd, &token).unwrap_err();
    assert_eq!(e.errno(), Some(Errno::EINVAL), "{e}");
    assert!(e.to_string().contains("takes a token only through the group"), "{e}");
    drop(vfio.open(a(VF), Interface::Iommufd).unwrap());
    // The group still checks it.
    assert!(matches!(vfio.open(a(VF), Interface::Container), Err(Error::VfToken { .. })));
    drop(vfio.open_with_token(a(VF), Interface::Container, &token).unwrap());
}

#[test]
fn a_pf_whose_vfs_are_open_needs_the_token_and_a_pf_without_takes_it() {
    let h = host();
    let vfio = Vfio::new(h.kernel(), h.fs());
    let token = VfToken::random().unwrap();
    // Opening the PF with a token sets it while no VF is open.
    let pf = vfio.open_with_token(a(PF), Interface::Container, &token).unwrap();
    h.fs().write(Path::new(&format!("/sys/bus/pci/devices/{PF}/sriov_numvfs")), b"1").unwrap();
    drop(pf);
    let vf = vfio.open_with_token(a(VF), Interface::Container, &token).unwrap();
    let e = vfio.open(a(PF), Interface::Container).unwrap_err();
    assert!(matches!(e, Error::VfToken { .. }), "{e}");
    vfio.open_with_token(a(PF), Interface::Container, &token).unwrap();
    drop(vf);
}
