//! The facts `info` shows about a device opened through VFIO: regions, interrupts, reset
//! support and the IOMMU of the address space it was opened in.

use serde::Serialize;
use vfio_core::info::{IovaRange, MmapArea, RegionFlags, RegionInfo};
use vfio_core::irq::IrqFlags;
use vfio_core::kernel::Errno;
use vfio_core::{
    AddressSpace, Device, Interface, IommuType, IrqIndex, PciAddress, RegionIndex, Vfio,
};

use crate::format::{interface_name, irq_name};
use crate::open::open_live;

/// One VFIO region of the device.
#[derive(Debug, Clone, Serialize)]
pub struct VfioRegion {
    /// Region index.
    pub index: RegionIndex,
    /// `BAR0`..`BAR5`, `ROM`, `CONFIG`, `VGA`, or `REGION<n>` for device-specific ones.
    pub name: String,
    /// Size in bytes (0: the device lacks it).
    pub size: u64,
    /// Readable with pread.
    pub read: bool,
    /// Writable with pwrite.
    pub write: bool,
    /// Can be mmap'd.
    pub mmap: bool,
    /// The areas that may be mmap'd.
    pub mmap_areas: Vec<MmapArea>,
    /// The MSI-X table may be mmap'd along with the rest of the BAR.
    pub msix_mappable: bool,
    /// Device-specific `[type, subtype]`, when the region has one.
    pub region_type: Option<(u32, u32)>,
}

/// One IRQ index of the device.
#[derive(Debug, Clone, Serialize)]
pub struct VfioIrq {
    /// `INTx`, `MSI`, `MSI-X`, `ERR` or `REQ`.
    pub name: &'static str,
    /// Kernel index.
    pub index: u32,
    /// Vectors offered (0: none).
    pub count: u32,
    /// `eventfd`, `maskable`, `automasked`, `noresize`.
    pub flags: Vec<&'static str>,
    /// Why the info could not be read (the index does not exist on this device).
    pub error: Option<String>,
}

/// Reset support as VFIO reports it.
#[derive(Debug, Clone, Serialize)]
pub struct VfioReset {
    /// `VFIO_DEVICE_RESET` works (function-level, PM or slot reset of this device alone).
    pub can_reset: bool,
    /// The devices a bus or slot hot reset would reset too (the device itself included);
    /// `null` when unavailable (see `hot_reset_error`).
    pub hot_reset_affects: Option<Vec<String>>,
    /// Why the hot-reset information is unavailable.
    pub hot_reset_error: Option<String>,
}

/// One device feature the device offers (`VFIO_DEVICE_FEATURE` with `PROBE`).
#[derive(Debug, Clone, Serialize)]
pub struct VfioFeature {
    /// `vfio.h`'s name, lower case (`low_power_entry`).
    pub name: String,
    /// A `GET` probe succeeds.
    pub get: bool,
    /// A `SET` probe succeeds.
    pub set: bool,
}

/// The device features the device offers, or why they could not be probed.
#[derive(Debug, Clone, Serialize)]
pub struct VfioFeatures {
    /// The features that probe, by index.
    pub supported: Vec<VfioFeature>,
    /// Why probing failed (then `supported` is empty).
    pub error: Option<String>,
}

/// The IOMMU as seen through the address space the device was opened in.
#[derive(Debug, Clone, Serialize)]
pub struct VfioIommu {
    /// Page sizes the IOMMU maps, in bytes; `null` when the interface does not say
    /// (iommufd).
    pub page_sizes: Option<Vec<u64>>,
    /// Usable IOVA ranges (inclusive), `[]` when unrestricted.
    pub iova_ranges: Vec<IovaRange>,
    /// Why the information is unavailable (no-IOMMU mode, an error).
    pub error: Option<String>,
}

/// The device as VFIO shows it (only for devices bound to vfio-pci).
#[derive(Debug, Clone, Serialize)]
pub struct VfioSection {
    /// Whether the device could be opened.
    pub opened: bool,
    /// Why it could not (one line), when it could not.
    pub error: Option<String>,
    /// `"container (Type1v2)"`, `"container (Type1)"`, `"container (NoIommu)"` or
    /// `"iommufd"`.
    pub interface: Option<String>,
    /// Regions by index.
    pub regions: Vec<VfioRegion>,
    /// IRQ indexes.
    pub irqs: Vec<VfioIrq>,
    /// Reset support.
    pub reset: Option<VfioReset>,
    /// IOMMU page sizes and IOVA ranges.
    pub iommu: Option<VfioIommu>,
    /// Device features (`VFIO_DEVICE_FEATURE` probes).
    pub features: Option<VfioFeatures>,
}

/// The name of region `index` of a vfio-pci device: vfio-pci's name of the region, or
/// `REGION<n>` for a device-specific one.
pub fn region_name(index: RegionIndex) -> String {
    index.name().map_or_else(|| format!("REGION{index}"), str::to_string)
}

fn irq_flag_names(f: IrqFlags) -> Vec<&'static str> {
    [
        (IrqFlags::EVENTFD, "eventfd"),
        (IrqFlags::MASKABLE, "maskable"),
        (IrqFlags::AUTOMASKED, "automasked"),
        (IrqFlags::NORESIZE, "noresize"),
    ]
    .into_iter()
    .filter(|(b, _)| f.contains(*b))
    .map(|(_, n)| n)
    .collect()
}

/// Bits of a page-size bitmap as sizes in bytes, smallest first.
pub fn page_sizes(bitmap: u64) -> Vec<u64> {
    (0..64).filter(|b| bitmap & (1u64 << b) != 0).map(|b| 1u64 << b).collect()
}

fn region(r: &RegionInfo) -> VfioRegion {
    VfioRegion {
        index: r.index,
        name: region_name(r.index),
        size: r.size,
        read: r.flags.contains(RegionFlags::READ),
        write: r.flags.contains(RegionFlags::WRITE),
        mmap: r.flags.contains(RegionFlags::MMAP),
        mmap_areas: r.mmap_areas.clone(),
        msix_mappable: r.msix_mappable,
        region_type: r.region_type,
    }
}

fn irq(dev: &Device, i: IrqIndex) -> VfioIrq {
    let mut irq =
        VfioIrq { name: irq_name(i), index: i.raw(), count: 0, flags: Vec::new(), error: None };
    match dev.irq_info(i) {
        Ok(info) => {
            irq.count = info.count;
            irq.flags = irq_flag_names(info.flags);
        }
        // vfio-pci answers EINVAL for an index the device cannot have (ERR on a
        // conventional PCI device): none.
        Err(e) if e.errno() == Some(Errno::EINVAL) => {}
        Err(e) => irq.error = Some(e.to_string()),
    }
    irq
}

fn reset(dev: &Device) -> VfioReset {
    let (affects, hot_err) = match dev.hot_reset_info() {
        Ok(list) => (Some(list.iter().map(|a| a.address.to_string()).collect()), None),
        Err(e) => (None, Some(e.to_string())),
    };
    VfioReset { can_reset: dev.can_reset(), hot_reset_affects: affects, hot_reset_error: hot_err }
}

fn iommu(space: &AddressSpace) -> VfioIommu {
    let failed =
        |error: String| VfioIommu { page_sizes: None, iova_ranges: Vec::new(), error: Some(error) };
    match space {
        AddressSpace::Container(c) if c.iommu_type() == Some(IommuType::NoIommu) => {
            failed("no-IOMMU mode: no translation, the device uses physical addresses".into())
        }
        AddressSpace::Container(c) => match c.iommu_info() {
            Ok(i) => VfioIommu {
                page_sizes: Some(page_sizes(i.page_sizes)),
                iova_ranges: i.iova_ranges,
                error: None,
            },
            Err(e) => failed(e.to_string()),
        },
        AddressSpace::Ioas(ioas) => match ioas.iova_ranges() {
            Ok(r) => VfioIommu { page_sizes: None, iova_ranges: r, error: None },
            Err(e) => failed(e.to_string()),
        },
    }
}

/// Opens `addr` through VFIO and reads what the kernel reports about it. Never fails: a
/// device that cannot be opened gives a section with `opened: false` and the reason.
pub fn vfio_section(vfio: &Vfio, addr: PciAddress, interface: Interface) -> VfioSection {
    let dev = match open_live(vfio, addr, interface) {
        Ok(d) => d,
        Err(e) => {
            return VfioSection {
                opened: false,
                error: Some(e.to_string()),
                interface: None,
                regions: Vec::new(),
                irqs: Vec::new(),
                reset: None,
                iommu: None,
                features: None,
            }
        }
    };
    let space = dev.address_space();
    let num_irqs = dev.info().num_irqs;
    VfioSection {
        opened: true,
        error: None,
        interface: Some(interface_name(&space)),
        regions: dev.regions().iter().map(region).collect(),
        irqs: IrqIndex::ALL
            .into_iter()
            .filter(|i| i.raw() < num_irqs)
            .map(|i| irq(&dev, i))
            .collect(),
        reset: Some(reset(&dev)),
        iommu: Some(iommu(&space)),
        features: Some(features(&dev)),
    }
}

fn features(dev: &Device) -> VfioFeatures {
    match dev.supported_features() {
        Ok(list) => VfioFeatures {
            supported: list
                .into_iter()
                .map(|f| VfioFeature { name: f.feature.name().into(), get: f.get, set: f.set })
                .collect(),
            error: None,
        },
        Err(e) => VfioFeatures { supported: Vec::new(), error: Some(e.to_string()) },
    }
}
