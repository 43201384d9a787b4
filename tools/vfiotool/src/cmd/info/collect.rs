//! The facts `info` shows about a device from the host's sysfs: config space, driver,
//! IOMMU group, reset methods, SR-IOV and the ROM. Every attribute is read through the
//! library ([`SysfsDevice`], [`group_members`]); this module only gathers them into a
//! [`DeviceReport`].

use serde::Serialize;
use vfio_core::host::devices::group_members;
use vfio_core::host::pci_ids::PciIds;
use vfio_core::hostfs::{HostFs, SysfsDevice};
use vfio_core::pci::config::{decode_with, DecodeOptions, DecodedConfig, Header};
use vfio_core::rom::{self, RomReport};
use vfio_core::{PciAddress, Result};

use super::vfio::VfioSection;
use crate::format::rom_summary;
use crate::open::existing_device;

/// The `schema` value of `info --json`.
pub const SCHEMA: &str = "vfiotool.info/1";

/// Names for the numeric ids, from a pci.ids lookup when one is plugged in. Every field
/// may be absent; the output then shows the numbers only.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Names<'a> {
    /// Vendor name.
    pub vendor: Option<&'a str>,
    /// Device name.
    pub device: Option<&'a str>,
    /// Subsystem name.
    pub subsystem: Option<&'a str>,
    /// Class name (the sub class, else the base class).
    pub class: Option<&'a str>,
    /// Programming-interface name, when pci.ids has one.
    pub prog_if: Option<&'a str>,
}

impl<'a> Names<'a> {
    /// Looks the ids of a decoded config space up in `ids`.
    pub fn lookup(ids: &'a PciIds, c: &DecodedConfig) -> Self {
        let (sv, sd) = match &c.header {
            Header::Endpoint(h) => (Some(h.subsystem_vendor_id), Some(h.subsystem_id)),
            _ => (None, None),
        };
        Names {
            vendor: ids.vendor(c.vendor_id),
            device: ids.device(c.vendor_id, c.device_id),
            subsystem: sv.zip(sd).and_then(|(sv, sd)| {
                ids.subsystem(c.vendor_id, c.device_id, sv, sd).or_else(|| ids.vendor(sv))
            }),
            class: ids.class(c.class.code),
            prog_if: ids.prog_if(c.class.code),
        }
    }
}

/// Another member of the device's IOMMU group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupMember {
    /// Its address.
    pub address: String,
    /// Its driver, `null` when none is bound.
    pub driver: Option<String>,
}

/// The IOMMU group of a device as `info` shows it: its number and the other members
/// (the library's `IommuGroup` is the whole group with its viability).
#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    /// The group number.
    pub id: u32,
    /// The other devices in the group (the device itself is left out).
    pub others: Vec<GroupMember>,
}

/// The SR-IOV counts from sysfs, each `null` when its attribute is missing (the library's
/// `SriovState` needs both and lists the VFs).
#[derive(Debug, Clone, Serialize)]
pub struct SriovReport {
    /// `sriov_totalvfs`.
    pub total_vfs: Option<u32>,
    /// `sriov_numvfs`.
    pub num_vfs: Option<u32>,
}

/// The ROM as far as `info` looked at it.
#[derive(Debug, Clone, Serialize)]
pub struct RomInfo {
    /// Whether sysfs has a `rom` file (the device has an expansion ROM BAR).
    pub present: bool,
    /// Whether it was read (only with `-v`).
    pub read: bool,
    /// One line, when read.
    pub summary: Option<String>,
    /// The full report, when read.
    pub report: Option<RomReport>,
    /// Why the read failed, when it did.
    pub error: Option<String>,
}

/// Everything `info` shows. Serialized as the `info --json` document.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport<'a> {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// The device's address.
    pub address: String,
    /// Names for the ids (all `null` until a pci.ids lookup is plugged in).
    pub names: Names<'a>,
    /// Bound driver, `null` when none.
    pub driver: Option<String>,
    /// `driver_override`, `null` when unset.
    pub driver_override: Option<String>,
    /// IOMMU group, `null` when the device has none (no IOMMU active).
    pub iommu_group: Option<GroupReport>,
    /// `reset_method` entries in the kernel's order; `[]` when resets are disabled,
    /// `null` when the kernel has no such file.
    pub reset_methods: Option<Vec<String>>,
    /// SR-IOV state, `null` when the device is not an SR-IOV physical function.
    pub sriov: Option<SriovReport>,
    /// The ROM, `null` when the device has no ROM BAR.
    pub rom: Option<RomInfo>,
    /// The decoded config space.
    pub config: DecodedConfig,
    /// The device as VFIO shows it; `null` unless it is bound to vfio-pci (or with
    /// `--no-vfio`).
    pub vfio: Option<VfioSection>,
    /// The config-space image as read (shown by `-vv`, not in JSON).
    #[serde(skip)]
    pub config_bytes: Vec<u8>,
}

/// The IOMMU group of `sysfs` and the other devices in it, with their drivers.
fn iommu_group(fs: &dyn HostFs, sysfs: &SysfsDevice<'_>) -> Option<GroupReport> {
    let id = sysfs.iommu_group()?;
    let others = group_members(fs, id)
        .into_iter()
        .filter(|m| *m != sysfs.address())
        .map(|m| GroupMember { driver: SysfsDevice::new(fs, m).driver(), address: m.to_string() })
        .collect();
    Some(GroupReport { id, others })
}

/// The ROM's presence, and with `read` its report (checked against the device's ids).
fn rom_info(sysfs: &SysfsDevice<'_>, config: &DecodedConfig, read: bool) -> Option<RomInfo> {
    if !sysfs.has_rom() {
        return None;
    }
    let mut info = RomInfo { present: true, read: false, summary: None, report: None, error: None };
    if read {
        match sysfs.read_rom() {
            Ok(data) => {
                let mut r = rom::parse(&data);
                r.check_ids(config.vendor_id, config.device_id);
                info.read = true;
                info.summary = Some(rom_summary(&r));
                info.report = Some(r);
            }
            Err(e) => info.error = Some(e.to_string()),
        }
    }
    Some(info)
}

/// Gathers everything about `addr`. With `read_rom`, the ROM is read (this enables the
/// ROM BAR for a moment).
pub fn collect<'a>(fs: &dyn HostFs, addr: PciAddress, read_rom: bool) -> Result<DeviceReport<'a>> {
    existing_device(fs, addr, "see `vfiotool list` for the devices of this host")?;
    let sysfs = SysfsDevice::new(fs, addr);
    let bytes = sysfs.config()?;
    let opts = sysfs.resources().map(|l| DecodeOptions::from_resource(&l)).unwrap_or_default();
    let config = decode_with(&bytes, &opts)?;
    let total = sysfs.sriov_totalvfs().map(u32::from);
    let num = sysfs.sriov_numvfs().map(u32::from);
    let sriov = (total.is_some() || num.is_some())
        .then_some(SriovReport { total_vfs: total, num_vfs: num });
    Ok(DeviceReport {
        schema: SCHEMA,
        address: addr.to_string(),
        names: Names::default(),
        driver: sysfs.driver(),
        driver_override: sysfs.driver_override(),
        iommu_group: iommu_group(fs, &sysfs),
        reset_methods: sysfs.reset_methods(),
        sriov,
        rom: rom_info(&sysfs, &config, read_rom),
        config,
        vfio: None,
        config_bytes: bytes,
    })
}
