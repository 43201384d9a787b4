//! Device features (`VFIO_DEVICE_FEATURE`): probing which a device offers, getting and
//! setting them, and the typed ones vfio-pci offers: the PF's VF token
//! ([`Device::set_vf_token`], [`VfToken`]) and low power
//! ([`Device::low_power_entry`], [`Device::low_power_entry_with_wakeup`],
//! [`Device::low_power_exit`]). All are methods of [`Device`].
//!
//! A request is one buffer: the `vfio_device_feature` header (`argsz`, `flags` with the
//! feature's index and `PROBE`, `GET` or `SET`) followed by the feature's data.

use std::fmt;
use std::os::fd::AsRawFd;

use vmm_sys_util::eventfd::EventFd;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::kernel::{Errno, KernelOp};

/// `VFIO_DEVICE_FEATURE_GET`.
pub const FEATURE_GET: u32 = 1 << 16;
/// `VFIO_DEVICE_FEATURE_SET`.
pub const FEATURE_SET: u32 = 1 << 17;
/// `VFIO_DEVICE_FEATURE_PROBE`.
pub const FEATURE_PROBE: u32 = 1 << 18;

/// The device features of Linux 7.2's `vfio.h`, by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Feature {
    /// `PCI_VF_TOKEN` (0): an SR-IOV PF's VF token (SET, a UUID).
    PciVfToken,
    /// `MIGRATION` (1): the migration flags (GET).
    Migration,
    /// `MIG_DEVICE_STATE` (2): the migration state (GET, SET).
    MigDeviceState,
    /// `LOW_POWER_ENTRY` (3): allow low power (SET, no data).
    LowPowerEntry,
    /// `LOW_POWER_ENTRY_WITH_WAKEUP` (4): allow low power once, with a wake-up eventfd.
    LowPowerEntryWithWakeup,
    /// `LOW_POWER_EXIT` (5): disallow low power (SET, no data).
    LowPowerExit,
    /// `DMA_LOGGING_START` (6): start dirty-page tracking (SET).
    DmaLoggingStart,
    /// `DMA_LOGGING_STOP` (7): stop dirty-page tracking (SET).
    DmaLoggingStop,
    /// `DMA_LOGGING_REPORT` (8): read and clear the dirty bitmap (GET).
    DmaLoggingReport,
    /// `MIG_DATA_SIZE` (9): the estimated stop-copy size (GET).
    MigDataSize,
    /// `BUS_MASTER` (10): bus mastering of a non-PCI (CDX) device (SET).
    BusMaster,
    /// `DMA_BUF` (11): a dma-buf of a BAR's ranges (GET), since 6.19.
    DmaBuf,
    /// `MIG_PRECOPY_INFOv2` (12): opt in to pre-copy info v2 (SET).
    MigPrecopyInfoV2,
}

impl Feature {
    /// Every feature, by index.
    pub const ALL: [Feature; 13] = [
        Feature::PciVfToken,
        Feature::Migration,
        Feature::MigDeviceState,
        Feature::LowPowerEntry,
        Feature::LowPowerEntryWithWakeup,
        Feature::LowPowerExit,
        Feature::DmaLoggingStart,
        Feature::DmaLoggingStop,
        Feature::DmaLoggingReport,
        Feature::MigDataSize,
        Feature::BusMaster,
        Feature::DmaBuf,
        Feature::MigPrecopyInfoV2,
    ];

    /// The feature's index (`VFIO_DEVICE_FEATURE_*`).
    pub fn index(self) -> u16 {
        Feature::ALL.iter().position(|f| *f == self).unwrap_or(0) as u16
    }

    /// The feature of an index, if `vfio.h` names it.
    pub fn from_index(index: u16) -> Option<Feature> {
        Feature::ALL.get(index as usize).copied()
    }

    /// The name `vfio.h` gives it, lower case (`low_power_entry`).
    pub fn name(self) -> &'static str {
        use Feature::*;
        match self {
            PciVfToken => "pci_vf_token",
            Migration => "migration",
            MigDeviceState => "mig_device_state",
            LowPowerEntry => "low_power_entry",
            LowPowerEntryWithWakeup => "low_power_entry_with_wakeup",
            LowPowerExit => "low_power_exit",
            DmaLoggingStart => "dma_logging_start",
            DmaLoggingStop => "dma_logging_stop",
            DmaLoggingReport => "dma_logging_report",
            MigDataSize => "mig_data_size",
            BusMaster => "bus_master",
            DmaBuf => "dma_buf",
            MigPrecopyInfoV2 => "mig_precopy_info_v2",
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a device answers to probes of one feature: offered at all, and with GET and SET.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureSupport {
    /// The feature.
    pub feature: Feature,
    /// A `GET` probe succeeds.
    pub get: bool,
    /// A `SET` probe succeeds.
    pub set: bool,
}

/// A VF token: the UUID an SR-IOV PF on vfio-pci and the users of its VFs share
/// (`VFIO_DEVICE_FEATURE_PCI_VF_TOKEN`, and `vf_token=` when a VF is opened).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VfToken(pub [u8; 16]);

impl VfToken {
    /// Parses a UUID (`bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3`, any case).
    pub fn parse(s: &str) -> Result<VfToken> {
        let bad = |reason: &str| Error::Invalid {
            what: "VF token",
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let b = s.as_bytes();
        if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
            return Err(bad("a UUID is 8-4-4-4-12 hex digits"));
        }
        let hex: Vec<u8> = b.iter().copied().filter(|&c| c != b'-').collect();
        let mut out = [0u8; 16];
        for (o, pair) in out.iter_mut().zip(hex.chunks(2)) {
            let digits = std::str::from_utf8(pair).map_err(|_| bad("not hex"))?;
            *o = u8::from_str_radix(digits, 16).map_err(|_| bad("not hex"))?;
        }
        Ok(VfToken(out))
    }

    /// A new random token (from `getrandom`), version 4.
    pub fn random() -> Result<VfToken> {
        let mut b = [0u8; 16];
        // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
        let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
        if n != b.len() as isize {
            return Err(Error::Unsupported {
                what: "a random VF token (getrandom failed)".into(),
                hint: Some("pass a token of your own (VfToken::parse)".into()),
            });
        }
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Ok(VfToken(b))
    }
}

impl fmt::Display for VfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for VfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VfToken({self})")
    }
}

/// The hint of an error the kernel gave to an open for a VF token: EACCES (missing or
/// wrong token) becomes [`Error::VfToken`]; EINVAL with a token given says when tokens
/// apply.
pub(crate) fn token_error(name: &str, token: Option<&VfToken>, err: Error) -> Error {
    match (err.errno(), token) {
        (Some(Errno::EACCES), None) => Error::VfToken {
            device: name.to_string(),
            reason: "the VF token of its PF is required".into(),
        },
        (Some(Errno::EACCES), Some(t)) => Error::VfToken {
            device: name.to_string(),
            reason: format!("the VF token {t} is not its PF's"),
        },
        (Some(Errno::EINVAL), Some(_)) => err.with_hint(
            "a VF token applies only to a VF whose PF is on vfio-pci, or to such a PF: \
             open it without one (a kernel before VFIO_DEVICE_BIND_FLAG_TOKEN, such as \
             6.12, takes a token only through the group)",
        ),
        _ => err,
    }
}

impl Device {
    /// `VFIO_DEVICE_FEATURE` as it is: `flags` (the feature index and `FEATURE_PROBE`,
    /// `FEATURE_GET`, `FEATURE_SET`) and `data` after the header, which a GET fills.
    /// Returns the ioctl's value. A feature that returns a descriptor (a dma-buf, a
    /// migration data fd) hands it to the caller, who must close it.
    pub fn feature_ioctl(&self, flags: u32, data: &mut [u8]) -> Result<i32> {
        let argsz = 8 + data.len();
        let mut buf = vec![0u8; argsz];
        buf[..4].copy_from_slice(&(argsz as u32).to_ne_bytes());
        buf[4..8].copy_from_slice(&flags.to_ne_bytes());
        buf[8..].copy_from_slice(data);
        let r = self
            .kernel()
            .device_feature(self.fd(), &mut buf)
            .map_err(|e| self.kerr(KernelOp::DeviceFeature, e))?;
        data.copy_from_slice(&buf[8..]);
        Ok(r)
    }

    /// Probes a feature with `PROBE` and the given `FEATURE_GET`/`FEATURE_SET` bits: the
    /// kernel's answer as it is (ENOTTY for a feature the driver lacks, EINVAL for an
    /// access it lacks).
    pub fn feature_probe_ops(&self, feature: Feature, ops: u32) -> Result<()> {
        let flags =
            u32::from(feature.index()) | FEATURE_PROBE | (ops & (FEATURE_GET | FEATURE_SET));
        self.feature_ioctl(flags, &mut []).map(drop)
    }

    /// Whether the device offers `feature` (a plain probe): ENOTTY, EOPNOTSUPP and EINVAL
    /// are `false`, other errors are errors.
    pub fn feature_probe(&self, feature: Feature) -> Result<bool> {
        match self.feature_probe_ops(feature, 0) {
            Ok(()) => Ok(true),
            Err(e)
                if matches!(e.errno(), Some(Errno::ENOTTY | Errno::EOPNOTSUPP | Errno::EINVAL)) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// The features the device offers, each with whether GET and SET probe.
    pub fn supported_features(&self) -> Result<Vec<FeatureSupport>> {
        let mut out = Vec::new();
        for feature in Feature::ALL {
            if !self.feature_probe(feature)? {
                continue;
            }
            let get = self.feature_probe_ops(feature, FEATURE_GET).is_ok();
            let set = self.feature_probe_ops(feature, FEATURE_SET).is_ok();
            out.push(FeatureSupport { feature, get, set });
        }
        Ok(out)
    }

    /// GETs a feature into `data` (its struct's bytes). [`Feature::DmaBuf`] and
    /// [`Feature::MigDeviceState`] create descriptors: use [`Device::feature_ioctl`] and
    /// own what it returns.
    pub fn feature_get(&self, feature: Feature, data: &mut [u8]) -> Result<()> {
        if matches!(feature, Feature::DmaBuf | Feature::MigDeviceState) {
            return Err(Error::Unsupported {
                what: format!("feature_get of {feature}"),
                hint: Some(
                    "it creates a descriptor: use Device::feature_ioctl and close it".into(),
                ),
            });
        }
        self.feature_ioctl(u32::from(feature.index()) | FEATURE_GET, data).map(drop)
    }

    /// SETs a feature from `data` (its struct's bytes; empty for the low power ones).
    pub fn feature_set(&self, feature: Feature, data: &[u8]) -> Result<()> {
        let mut d = data.to_vec();
        self.feature_ioctl(u32::from(feature.index()) | FEATURE_SET, &mut d).map(drop)
    }

    /// Sets the VF token of an SR-IOV PF on vfio-pci: its VFs then open only with this
    /// token ([`crate::Vfio::open_with_token`]). ENOTTY on a device that is no PF.
    pub fn set_vf_token(&self, token: &VfToken) -> Result<()> {
        self.feature_set(Feature::PciVfToken, &token.0).map_err(|e| match e.errno() {
            Some(Errno::ENOTTY) => {
                e.with_hint("only an SR-IOV PF bound to vfio-pci has a VF token")
            }
            _ => e,
        })
    }

    /// Allows the device to go to a low power state (D3hot through runtime PM) while
    /// idle; any access wakes it. Mappings of its BARs are revoked until
    /// [`Device::low_power_exit`]. EINVAL when already allowed.
    pub fn low_power_entry(&self) -> Result<()> {
        self.feature_set(Feature::LowPowerEntry, &[])
    }

    /// As [`Device::low_power_entry`], once: when the device wakes from low power, `wakeup`
    /// is signalled and low power stays disallowed until the next entry.
    pub fn low_power_entry_with_wakeup(&self, wakeup: &EventFd) -> Result<()> {
        let mut d = [0u8; 8];
        d[..4].copy_from_slice(&wakeup.as_raw_fd().to_ne_bytes());
        self.feature_set(Feature::LowPowerEntryWithWakeup, &d)
    }

    /// Disallows low power again (it may signal the wake-up eventfd).
    pub fn low_power_exit(&self) -> Result<()> {
        self.feature_set(Feature::LowPowerExit, &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_have_their_vfio_h_indices() {
        assert_eq!(Feature::PciVfToken.index(), 0);
        assert_eq!(Feature::LowPowerEntry.index(), 3);
        assert_eq!(Feature::MigDataSize.index(), 9);
        assert_eq!(Feature::MigPrecopyInfoV2.index(), 12);
        for f in Feature::ALL {
            assert_eq!(Feature::from_index(f.index()), Some(f));
        }
        assert_eq!(Feature::from_index(13), None);
    }

    #[test]
    fn tokens_print_and_parse_as_uuids() {
        let t = VfToken::parse("BD8D9D2B-5a5f-4f5a-a211-f591514ba1f3").unwrap();
        assert_eq!(t.0[0], 0xbd);
        assert_eq!(t.to_string(), "bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3");
        assert!(VfToken::parse("bd8d9d2b-5a5f-4f5a-a211-f591514ba1f").is_err());
        assert!(VfToken::parse("xd8d9d2b-5a5f-4f5a-a211-f591514ba1f3").is_err());
        let r = VfToken::random().unwrap();
        assert_eq!(VfToken::parse(&r.to_string()).unwrap(), r);
        assert_eq!(r.0[6] >> 4, 4);
    }
}
