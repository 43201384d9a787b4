//! Device features (`VFIO_DEVICE_FEATURE`, drivers/vfio/vfio_main.c
//! `vfio_ioctl_device_feature` and pci_core's `vfio_pci_core_ioctl_feature`) as vfio-pci
//! answers them for a plain PCI function: no migration and no dirty-page logging (ENOTTY
//! before any flag check), low power entry, entry with wake-up and exit, the PF's VF
//! token (SET only, on an SR-IOV PF), and the dma-buf export where the kernel has it
//! (probed only: the mock creates no dma-bufs).
//!
//! The VF token's other half is here too: `vfio_pci_core_match` (the device name of
//! `VFIO_GROUP_GET_DEVICE_FD` with its `vf_token=<uuid>` option) and
//! `vfio_pci_core_match_token_uuid` (shared with the cdev's `BIND_IOMMUFD`).

use super::fds::device_fd;
use super::irq::{dup_eventfd, signal};
use super::le::rd32;
use crate::kernel::{Errno, KResult, KernelFd};
use crate::mock::HostState;
use crate::pci::PciAddress;

const MASK: u32 = 0xffff;
const GET: u32 = 1 << 16;
const SET: u32 = 1 << 17;
const PROBE: u32 = 1 << 18;

const PCI_VF_TOKEN: u32 = 0;
const MIGRATION: u32 = 1;
const MIG_DEVICE_STATE: u32 = 2;
const LOW_POWER_ENTRY: u32 = 3;
const LOW_POWER_ENTRY_WITH_WAKEUP: u32 = 4;
const LOW_POWER_EXIT: u32 = 5;
const DMA_LOGGING_START: u32 = 6;
const DMA_LOGGING_REPORT: u32 = 8;
const MIG_DATA_SIZE: u32 = 9;
const DMA_BUF: u32 = 11;
const MIG_PRECOPY_INFO_V2: u32 = 12;

/// `vfio_check_feature`: EINVAL for a GET/SET the feature lacks; `false` for a probe
/// (answered 0), EINVAL without GET or SET or with too little data; `true` to go on.
fn check_feature(flags: u32, argsz: usize, supported: u32, minsz: usize) -> KResult<bool> {
    if flags & (GET | SET) & !supported != 0 {
        return Err(Errno::EINVAL);
    }
    if flags & PROBE != 0 {
        return Ok(false);
    }
    if flags & (GET | SET) == 0 || argsz < minsz {
        return Err(Errno::EINVAL);
    }
    Ok(true)
}

pub(super) fn device_feature(
    st: &mut HostState,
    device: &KernelFd,
    buf: &mut [u8],
) -> KResult<i32> {
    let d = device_fd(&st.kernel, device)?;
    // vfio_ioctl_device_feature: the header, then the flags.
    if buf.len() < 8 {
        return Err(Errno::EFAULT);
    }
    let (argsz, flags) = (rd32(buf, 0) as usize, rd32(buf, 4));
    if argsz < 8 {
        return Err(Errno::EINVAL);
    }
    if argsz > buf.len() {
        return Err(Errno::EFAULT);
    }
    if flags & !(MASK | GET | SET | PROBE) != 0 {
        return Err(Errno::EINVAL);
    }
    if flags & PROBE == 0 && flags & GET != 0 && flags & SET != 0 {
        return Err(Errno::EINVAL);
    }
    // vfio_device_fops_unl_ioctl: the device is resumed for the ioctl.
    resume(st, d.addr);
    let data = &buf[8..argsz];
    let config = &st.kernel.config;
    match flags & MASK {
        // No mig_ops, no log_ops on vfio-pci: ENOTTY before the flags are looked at.
        MIGRATION | MIG_DEVICE_STATE | DMA_LOGGING_START..=DMA_LOGGING_REPORT | MIG_DATA_SIZE => {
            Err(Errno::ENOTTY)
        }
        // vfio_main.c (7.2): no VFIO_MIGRATION_PRE_COPY, EINVAL.
        MIG_PRECOPY_INFO_V2 if config.precopy_info_v2 => Err(Errno::EINVAL),
        LOW_POWER_ENTRY => {
            if !check_feature(flags, data.len(), SET, 0)? {
                return Ok(0);
            }
            pm_entry(st, d.addr, None).map(|()| 0)
        }
        LOW_POWER_ENTRY_WITH_WAKEUP => {
            if !check_feature(flags, data.len(), SET, 8)? {
                return Ok(0);
            }
            let fd = rd32(data, 0) as i32;
            if fd < 0 {
                return Err(Errno::EINVAL);
            }
            let wake = dup_eventfd(fd)?;
            pm_entry(st, d.addr, Some(wake)).map(|()| 0)
        }
        LOW_POWER_EXIT => {
            if !check_feature(flags, data.len(), SET, 0)? {
                return Ok(0);
            }
            if let Some(ds) = st.kernel.devs.get_mut(&d.addr) {
                ds.pm_engaged = false;
                ds.pm_wake = None;
            }
            Ok(0)
        }
        // vfio_pci_core_feature_token: only an SR-IOV PF has a token; SET only.
        PCI_VF_TOKEN => {
            if !is_pf(st, d.addr) {
                return Err(Errno::ENOTTY);
            }
            if !check_feature(flags, data.len(), SET, 16)? {
                return Ok(0);
            }
            let token: [u8; 16] = data[..16].try_into().map_err(|_| Errno::EINVAL)?;
            st.kernel.devs.entry(d.addr).or_default().vf_token = Some(token);
            Ok(0)
        }
        // vfio_pci_core_feature_dma_buf (CONFIG_VFIO_PCI_DMABUF): GET only.
        DMA_BUF if config.dma_buf => {
            if !check_feature(flags, data.len(), GET, 16)? {
                return Ok(0);
            }
            Err(Errno::EOPNOTSUPP)
        }
        _ => Err(Errno::ENOTTY),
    }
}

/// `vfio_pci_runtime_pm_entry`: EINVAL when low power is already allowed.
fn pm_entry(
    st: &mut HostState,
    addr: PciAddress,
    wake: Option<std::os::fd::OwnedFd>,
) -> KResult<()> {
    let ds = st.kernel.devs.entry(addr).or_default();
    if ds.pm_engaged {
        return Err(Errno::EINVAL);
    }
    ds.pm_engaged = true;
    ds.pm_wake = wake;
    Ok(())
}

/// An access through the device file (a region read or write, a feature ioctl) while low
/// power is allowed: the mock's device suspends at once, so the access resumes it
/// (`pm_runtime_resume_and_get`), and with a wake-up eventfd
/// (`vfio_pci_core_runtime_resume`) the eventfd is signalled and low power stays off
/// until the next entry. Only where the kernel has runtime PM
/// (`MockKernelConfig::runtime_pm`); the real device suspends asynchronously, so on a
/// real kernel an access right after the entry may find it awake.
pub(super) fn resume(st: &mut HostState, addr: PciAddress) {
    if !st.kernel.config.runtime_pm {
        return;
    }
    if let Some(ds) = st.kernel.devs.get_mut(&addr) {
        if let Some(wake) = ds.pm_wake.take() {
            signal(&wake);
            ds.pm_engaged = false;
        }
    }
}

/// A PCI function with an SR-IOV capability (`pdev->is_physfn`).
fn is_pf(st: &HostState, addr: PciAddress) -> bool {
    st.devices.get(&addr).is_some_and(|d| d.spec.sriov.is_some())
}

/// `vfio_pci_core_match`: whether `name` names the device at `addr` (its PCI address,
/// optionally followed by ` vf_token=<uuid>`), checking the token as
/// [`match_token`] does. An mdev is matched by its name alone.
pub(super) fn match_name(st: &mut HostState, addr: PciAddress, name: &str) -> KResult<bool> {
    let own = st.device_name(addr);
    if !st.devices.contains_key(&addr) {
        return Ok(own == name);
    }
    let Some(rest) = name.strip_prefix(own.as_str()) else { return Ok(false) };
    let mut token = None;
    if !rest.is_empty() {
        if !rest.starts_with(' ') {
            return Ok(false);
        }
        let mut s = rest;
        while !s.is_empty() {
            if let Some(t) = s.strip_prefix(' ') {
                s = t;
                continue;
            }
            match s.strip_prefix("vf_token=") {
                Some(t) if token.is_none() => {
                    let uuid = t.get(..36).ok_or(Errno::EINVAL)?;
                    token = Some(parse_uuid(uuid).ok_or(Errno::EINVAL)?);
                    s = &t[36..];
                }
                _ => return Err(Errno::EINVAL),
            }
        }
    }
    match_token(st, addr, token.as_ref())?;
    Ok(true)
}

/// `uuid_parse`: 8-4-4-4-12 hex digits, bytes in text order.
fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let hex: Vec<u8> = b.iter().copied().filter(|&c| c != b'-').collect();
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        *out.get_mut(i)? = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// `vfio_pci_core_match_token_uuid`: a VF of a PF on vfio-pci needs its PF's token
/// (EACCES without it or with another); a PF whose VFs are open needs it too, and a PF
/// with none open takes the token given as its new one; a token given to any other
/// device is EINVAL, as is one given to a VF whose PF is not on vfio-pci.
pub(super) fn match_token(
    st: &mut HostState,
    addr: PciAddress,
    token: Option<&[u8; 16]>,
) -> KResult<()> {
    if let Some(pf) = st.vf_parent(addr) {
        let pf_vfio = st.devices.get(&pf).is_some_and(|d| d.driver.as_deref() == Some("vfio-pci"));
        if !pf_vfio {
            return if token.is_some() { Err(Errno::EINVAL) } else { Ok(()) };
        }
        let Some(token) = token else { return Err(Errno::EACCES) };
        let pf_token = st.kernel.devs.get(&pf).and_then(|d| d.vf_token);
        return if pf_token.as_ref() == Some(token) { Ok(()) } else { Err(Errno::EACCES) };
    }
    if is_pf(st, addr) {
        let users = st
            .kernel
            .devs
            .iter()
            .filter(|(a, d)| d.open_count > 0 && st.vf_parent(**a) == Some(addr))
            .count();
        let ds = st.kernel.devs.entry(addr).or_default();
        if users > 0 {
            let Some(token) = token else { return Err(Errno::EACCES) };
            return if ds.vf_token.as_ref() == Some(token) { Ok(()) } else { Err(Errno::EACCES) };
        }
        if let Some(token) = token {
            ds.vf_token = Some(*token);
        }
        return Ok(());
    }
    if token.is_some() {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_parse_in_text_order() {
        let u = parse_uuid("bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3").unwrap();
        assert_eq!(u[0], 0xbd);
        assert_eq!(u[15], 0xf3);
        assert!(parse_uuid("bd8d9d2b-5a5f-4f5a-a211-f591514ba1f").is_none());
        assert!(parse_uuid("bd8d9d2b_5a5f-4f5a-a211-f591514ba1f3").is_none());
        assert!(parse_uuid("zd8d9d2b-5a5f-4f5a-a211-f591514ba1f3").is_none());
    }

    #[test]
    fn probes_follow_vfio_check_feature() {
        assert_eq!(check_feature(PROBE, 0, SET, 0), Ok(false));
        assert_eq!(check_feature(PROBE | GET, 0, SET, 0), Err(Errno::EINVAL));
        assert_eq!(check_feature(0, 0, SET, 0), Err(Errno::EINVAL));
        assert_eq!(check_feature(SET, 4, SET, 8), Err(Errno::EINVAL));
        assert_eq!(check_feature(SET, 8, SET, 8), Ok(true));
    }
}
