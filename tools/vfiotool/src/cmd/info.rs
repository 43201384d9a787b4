//! `vfiotool info`: one device through sysfs (config space, BAR sizes, driver, IOMMU
//! group, reset methods, SR-IOV, ROM), as text or JSON.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use vfio_core::host::pci_ids::PciIds;
use vfio_core::hostfs::{HostFs, NodeKind, SysfsDevice};
use vfio_core::info::RegionFlags;
use vfio_core::irq::IrqFlags;
use vfio_core::pci::caps::CapabilityFields;
use vfio_core::pci::config::{
    decode_with, parse_sysfs_resource, Bar, BarKind, DecodeOptions, DecodedConfig, Header,
};
use vfio_core::rom::{self, RomReport};
use vfio_core::{AddressSpace, Device, Error, Interface, IrqIndex, PciAddress, Result, Vfio};

use crate::cli::{Context, InfoArgs};
use crate::cmd::rom::{read_sysfs_rom, summary};

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

/// One VFIO region of the device.
#[derive(Debug, Clone, Serialize)]
pub struct VfioRegion {
    /// Region index.
    pub index: u32,
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
    pub mmap_areas: Vec<vfio_core::info::MmapArea>,
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

/// The IOMMU as seen through the address space the device was opened in.
#[derive(Debug, Clone, Serialize)]
pub struct VfioIommu {
    /// Page sizes the IOMMU maps, in bytes; `null` when the interface does not say
    /// (iommufd).
    pub page_sizes: Option<Vec<u64>>,
    /// Usable IOVA ranges (inclusive), `[]` when unrestricted.
    pub iova_ranges: Vec<vfio_core::info::IovaRange>,
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
}

/// The name of region `index` of a vfio-pci device.
pub fn region_name(index: u32) -> String {
    match index {
        0..=5 => format!("BAR{index}"),
        6 => "ROM".into(),
        7 => "CONFIG".into(),
        8 => "VGA".into(),
        n => format!("REGION{n}"),
    }
}

/// The usual name of an IRQ index: `INTx`, `MSI`, `MSI-X`, `ERR`, `REQ`.
pub fn irq_name(i: IrqIndex) -> &'static str {
    match i {
        IrqIndex::Intx => "INTx",
        IrqIndex::Msi => "MSI",
        IrqIndex::Msix => "MSI-X",
        IrqIndex::Err => "ERR",
        IrqIndex::Req => "REQ",
    }
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

/// Checks that the host view has live VFIO device nodes (`/dev/vfio/vfio` or
/// `/dev/iommu` as character devices). A captured tree (`--sysfs-root`) holds empty files
/// in their place: opening a device through it would reach this machine's kernel with
/// another machine's group numbers, so it is refused.
pub fn check_live_vfio(fs: &dyn HostFs) -> Result<()> {
    let live = ["/dev/vfio/vfio", "/dev/iommu"]
        .iter()
        .any(|p| fs.metadata(Path::new(p)).is_ok_and(|m| m.kind == NodeKind::CharDevice));
    if live {
        return Ok(());
    }
    Err(Error::Unsupported {
        what: "VFIO through this host view (/dev/vfio/vfio and /dev/iommu are not device nodes)"
            .into(),
        hint: Some(
            "on a captured tree (--sysfs-root) only sysfs is read; on a live host load VFIO: \
             modprobe vfio-pci"
                .into(),
        ),
    })
}

/// Opens a device through VFIO after [`check_live_vfio`]; a device not bound to
/// vfio-pci gets the "bind it first" error without the kernel being asked.
pub fn open_live(vfio: &Vfio, addr: PciAddress, interface: Interface) -> Result<Device> {
    if vfio.locate(addr)?.driver.as_deref() == Some("vfio-pci") {
        check_live_vfio(vfio.fs().as_ref())?;
    }
    vfio.open(addr, interface)
}

/// Opens `addr` through VFIO and reads what the kernel reports about it. Never fails: a
/// device that cannot be opened gives a section with `opened: false` and the reason.
pub fn vfio_section(vfio: &Vfio, addr: PciAddress, interface: Interface) -> VfioSection {
    let mut sec = VfioSection {
        opened: false,
        error: None,
        interface: None,
        regions: Vec::new(),
        irqs: Vec::new(),
        reset: None,
        iommu: None,
    };
    let dev = match open_live(vfio, addr, interface) {
        Ok(d) => d,
        Err(e) => {
            sec.error = Some(e.to_string());
            return sec;
        }
    };
    sec.opened = true;
    let space = dev.address_space();
    sec.interface = Some(match &space {
        AddressSpace::Container(c) => match c.iommu_type() {
            Some(t) => format!("container ({t:?})"),
            None => "container".into(),
        },
        AddressSpace::Ioas(_) => "iommufd".into(),
    });
    sec.regions = dev
        .regions()
        .iter()
        .map(|r| VfioRegion {
            index: r.index,
            name: region_name(r.index),
            size: r.size,
            read: r.flags.contains(RegionFlags::READ),
            write: r.flags.contains(RegionFlags::WRITE),
            mmap: r.flags.contains(RegionFlags::MMAP),
            mmap_areas: r.mmap_areas.clone(),
            msix_mappable: r.msix_mappable,
            region_type: r.region_type,
        })
        .collect();
    let num_irqs = dev.info().num_irqs;
    sec.irqs = IrqIndex::ALL
        .into_iter()
        .filter(|i| i.raw() < num_irqs)
        .map(|i| match dev.irq_info(i) {
            // vfio-pci answers EINVAL for an index the device cannot have (ERR on a
            // conventional PCI device): none.
            Err(e) if e.errno() == Some(vfio_core::kernel::Errno::EINVAL) => VfioIrq {
                name: irq_name(i),
                index: i.raw(),
                count: 0,
                flags: Vec::new(),
                error: None,
            },
            Ok(info) => VfioIrq {
                name: irq_name(i),
                index: i.raw(),
                count: info.count,
                flags: irq_flag_names(info.flags),
                error: None,
            },
            Err(e) => VfioIrq {
                name: irq_name(i),
                index: i.raw(),
                count: 0,
                flags: Vec::new(),
                error: Some(e.to_string()),
            },
        })
        .collect();
    let (affects, hot_err) = match dev.hot_reset_info() {
        Ok(list) => (Some(list.iter().map(|a| a.address.to_string()).collect()), None),
        Err(e) => (None, Some(e.to_string())),
    };
    sec.reset = Some(VfioReset {
        can_reset: dev.can_reset(),
        hot_reset_affects: affects,
        hot_reset_error: hot_err,
    });
    sec.iommu = Some(match &space {
        AddressSpace::Container(c) if c.iommu_type() == Some(vfio_core::IommuType::NoIommu) => {
            VfioIommu {
                page_sizes: None,
                iova_ranges: Vec::new(),
                error: Some(
                    "no-IOMMU mode: no translation, the device uses physical addresses".into(),
                ),
            }
        }
        AddressSpace::Container(c) => match c.iommu_info() {
            Ok(i) => VfioIommu {
                page_sizes: Some(page_sizes(i.page_sizes)),
                iova_ranges: i.iova_ranges,
                error: None,
            },
            Err(e) => {
                VfioIommu { page_sizes: None, iova_ranges: Vec::new(), error: Some(e.to_string()) }
            }
        },
        AddressSpace::Ioas(ioas) => match ioas.iova_ranges() {
            Ok(r) => VfioIommu { page_sizes: None, iova_ranges: r, error: None },
            Err(e) => {
                VfioIommu { page_sizes: None, iova_ranges: Vec::new(), error: Some(e.to_string()) }
            }
        },
    });
    sec
}

/// Another member of the device's IOMMU group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupMember {
    /// Its address.
    pub address: String,
    /// Its driver, `null` when none is bound.
    pub driver: Option<String>,
}

/// The IOMMU group of a device.
#[derive(Debug, Clone, Serialize)]
pub struct IommuGroup {
    /// The group number.
    pub id: u32,
    /// The other devices in the group (the device itself is left out).
    pub others: Vec<GroupMember>,
}

/// SR-IOV state from sysfs.
#[derive(Debug, Clone, Serialize)]
pub struct SriovState {
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
pub struct DeviceInfo<'a> {
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
    pub iommu_group: Option<IommuGroup>,
    /// `reset_method` entries in the kernel's order; `[]` when resets are disabled,
    /// `null` when the kernel has no such file.
    pub reset_methods: Option<Vec<String>>,
    /// SR-IOV state, `null` when the device is not an SR-IOV physical function.
    pub sriov: Option<SriovState>,
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

fn dev_path(addr: PciAddress, attr: &str) -> PathBuf {
    PathBuf::from(format!("/sys/bus/pci/devices/{addr}/{attr}"))
}

/// Gathers everything about `addr`. With `read_rom`, the ROM is read (this enables the
/// ROM BAR for a moment).
pub fn collect<'a>(fs: &dyn HostFs, addr: PciAddress, read_rom: bool) -> Result<DeviceInfo<'a>> {
    let dev = PathBuf::from(format!("/sys/bus/pci/devices/{addr}"));
    if !fs.exists(&dev) {
        return Err(Error::NotFound {
            what: format!("PCI device {addr}"),
            hint: Some("see `vfiotool list` for the devices of this host".into()),
        });
    }
    let cfg_path = dev_path(addr, "config");
    let bytes = fs.read(&cfg_path).map_err(|e| {
        Error::host("read", &cfg_path, e).with_hint("run as root to read config space")
    })?;
    let opts = fs
        .read_string(&dev_path(addr, "resource"))
        .ok()
        .and_then(|t| parse_sysfs_resource(&t).ok())
        .map(|l| DecodeOptions::from_resource(&l))
        .unwrap_or_default();
    let config = decode_with(&bytes, &opts)?;

    let sysfs = SysfsDevice::new(fs, addr);
    let driver = sysfs.driver();
    let driver_override = sysfs.driver_override();
    let iommu_group = sysfs.iommu_group().map(|id| {
        let others = vfio_core::host::devices::group_members(fs, id)
            .into_iter()
            .filter(|m| *m != addr)
            .map(|m| GroupMember {
                driver: SysfsDevice::new(fs, m).driver(),
                address: m.to_string(),
            })
            .collect();
        IommuGroup { id, others }
    });
    let reset_methods =
        sysfs.text("reset_method").map(|s| s.split_whitespace().map(str::to_string).collect());
    let total = sysfs.text("sriov_totalvfs").and_then(|s| s.parse().ok());
    let num = sysfs.sriov_numvfs().map(u32::from);
    let sriov =
        (total.is_some() || num.is_some()).then_some(SriovState { total_vfs: total, num_vfs: num });
    let rom = fs.exists(&dev_path(addr, "rom")).then(|| {
        let mut info =
            RomInfo { present: true, read: false, summary: None, report: None, error: None };
        if read_rom {
            match read_sysfs_rom(fs, addr) {
                Ok(data) => {
                    let mut r = rom::parse(&data);
                    r.check_ids(config.vendor_id, config.device_id);
                    info.read = true;
                    info.summary = Some(summary(&r));
                    info.report = Some(r);
                }
                Err(e) => info.error = Some(e.to_string()),
            }
        }
        info
    });
    Ok(DeviceInfo {
        schema: SCHEMA,
        address: addr.to_string(),
        names: Names::default(),
        driver,
        driver_override,
        iommu_group,
        reset_methods,
        sriov,
        rom,
        config,
        vfio: None,
        config_bytes: bytes,
    })
}

/// Runs `info`.
pub fn run(args: &InfoArgs, ctx: &mut Context) -> Result<i32> {
    let addr = PciAddress::parse(&args.address)?;
    let ids = crate::cmd::ids(ctx);
    let mut info = collect(ctx.fs.as_ref(), addr, args.verbose >= 1)?;
    info.names = Names::lookup(&ids, &info.config);
    if !args.no_vfio && info.driver.as_deref() == Some("vfio-pci") {
        let vfio = Vfio::new(ctx.kernel.clone(), ctx.fs.clone());
        info.vfio = Some(vfio_section(&vfio, addr, args.interface.into()));
    }
    let text = if args.json {
        serde_json::to_string_pretty(&info).unwrap_or_default() + "\n"
    } else {
        render(&info, args.verbose)
    };
    ctx.out.write_all(text.as_bytes()).map_err(|e| Error::host("write output", "<stdout>", e))?;
    Ok(0)
}

/// A size in bytes as `512K`, `16M`, `8G`.
pub fn human_size(n: u64) -> String {
    const UNITS: [(&str, u64); 4] =
        [("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)];
    for (u, s) in UNITS {
        if n >= s && n % s == 0 {
            return format!("{}{u}", n / s);
        }
    }
    format!("{n}")
}

fn bar_line(b: &Bar) -> String {
    let kind = match b.kind {
        BarKind::Io => "I/O ports",
        BarKind::Memory32 => "32-bit memory",
        BarKind::Memory1M => "memory below 1M",
        BarKind::Memory64 => "64-bit memory",
    };
    let size = b.size.map(|s| format!(" [{}]", human_size(s))).unwrap_or_default();
    let pf = match b.kind {
        BarKind::Io => "",
        _ if b.prefetchable => ", prefetchable",
        _ => ", non-prefetchable",
    };
    format!("BAR{}: {kind} at {:#x}{size}{pf}", b.index, b.address)
}

fn pm(b: bool) -> char {
    if b {
        '+'
    } else {
        '-'
    }
}

/// One line describing a capability's decoded fields.
pub fn cap_summary(f: &CapabilityFields) -> String {
    match f {
        CapabilityFields::PowerManagement(p) => format!(
            "version {}, D1{} D2{}, state {}, NoSoftRst{}{}",
            p.version,
            pm(p.d1),
            pm(p.d2),
            p.power_state,
            pm(p.no_soft_reset),
            if p.no_soft_reset { " (a PM reset does not reset the device)" } else { "" }
        ),
        CapabilityFields::Msi(m) => format!(
            "{}/{} vectors enabled/capable, 64-bit{}, per-vector masking{}, enabled{}",
            m.vectors_enabled,
            m.vectors_capable,
            pm(m.address_64bit),
            pm(m.per_vector_masking),
            pm(m.enabled)
        ),
        CapabilityFields::Msix(m) => format!(
            "{} vectors, table BAR{}+{:#x}, PBA BAR{}+{:#x}, enabled{}, function mask{}",
            m.table_size,
            m.table_bir,
            m.table_offset,
            m.pba_bir,
            m.pba_offset,
            pm(m.enabled),
            pm(m.function_mask)
        ),
        CapabilityFields::PciExpress(e) => {
            let mut s = format!(
                "v{} {}, MaxPayload {}/{} bytes, FLR{}",
                e.version,
                e.port_type,
                e.device_control.max_payload,
                e.device_capabilities.max_payload,
                pm(e.device_capabilities.flr_capable)
            );
            if let (Some(ls), Some(lc)) = (&e.link_status, &e.link_capabilities) {
                s += &format!(
                    ", link {} x{} (max {} x{}), ASPM {}",
                    ls.speed, ls.width, lc.max_speed, lc.max_width, lc.aspm_support
                );
            }
            s
        }
        CapabilityFields::VendorSpecific(v) => format!("length {}", v.length),
        CapabilityFields::Aer(a) => format!(
            "uncorrectable status {:#x} (mask {:#x}), correctable status {:#x} (mask {:#x})",
            a.uncorrectable_status, a.uncorrectable_mask, a.correctable_status, a.correctable_mask
        ),
        CapabilityFields::Acs(a) => {
            let bits = |b: &vfio_core::pci::caps::AcsBits| {
                format!(
                    "SV{} TB{} RR{} CR{} UF{} EC{} DT{}",
                    pm(b.sv),
                    pm(b.tb),
                    pm(b.rr),
                    pm(b.cr),
                    pm(b.uf),
                    pm(b.ec),
                    pm(b.dt)
                )
            };
            format!("capable {}; enabled {}", bits(&a.capabilities), bits(&a.control))
        }
        CapabilityFields::Ari(a) => {
            format!("next function {}, MFVC{} ACS{}", a.next_function, pm(a.mfvc), pm(a.acs))
        }
        CapabilityFields::Ats(a) => format!(
            "enabled{}, invalidate queue depth {}, smallest translation unit {}",
            pm(a.enabled),
            a.invalidate_queue_depth,
            a.smallest_translation_unit
        ),
        CapabilityFields::Pri(p) => format!(
            "enabled{}, outstanding requests {} (allocated {})",
            pm(p.enabled),
            p.outstanding_capacity,
            p.outstanding_allocation
        ),
        CapabilityFields::Pasid(p) => format!(
            "max width {} bits, exec{} privileged{}, enabled{}",
            p.max_pasid_width,
            pm(p.exec_permission),
            pm(p.privileged_mode),
            pm(p.enabled)
        ),
        CapabilityFields::Sriov(s) => format!(
            "VFs {} enabled of {} (initial {}), VF enable{}, first VF offset {}, stride {}, \
             VF device {:04x}, {} VF BAR(s)",
            s.num_vfs,
            s.total_vfs,
            s.initial_vfs,
            pm(s.vf_enabled),
            s.first_vf_offset,
            s.vf_stride,
            s.vf_device_id,
            s.vf_bars.len()
        ),
        CapabilityFields::ResizableBar(r) => r
            .entries
            .iter()
            .map(|e| {
                format!(
                    "BAR{} {} (supports {})",
                    e.bar,
                    human_size(e.current_size),
                    e.supported_sizes.iter().map(|s| human_size(*s)).collect::<Vec<_>>().join(" ")
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        CapabilityFields::DeviceSerialNumber(d) => d.text.clone(),
        CapabilityFields::VendorSpecificExtended(v) => {
            format!("VSEC id {:#x} rev {} length {}", v.vsec_id, v.vsec_revision, v.vsec_length)
        }
        CapabilityFields::Dvsec(v) => format!(
            "vendor {:04x} DVSEC id {:#x} rev {} length {}",
            v.vendor_id, v.dvsec_id, v.revision, v.length
        ),
        CapabilityFields::Truncated { needed, available } => {
            format!("not decoded: needs {needed} bytes, the image holds {available}")
        }
    }
}

/// Renders the human output. Verbosity 0 fits one screen; 1 adds a line per capability,
/// the command/status bits, bridge windows and the ROM; 2 adds every field and a hex
/// dump of the image.
pub fn render(info: &DeviceInfo<'_>, verbose: u8) -> String {
    let c = &info.config;
    let mut o = String::new();
    let mut line = |s: String| {
        o.push_str(&s);
        o.push('\n');
    };
    let n = &info.names;
    let class = match n.class {
        Some(name) => match n.prog_if {
            Some(p) => format!("{name} ({p}) [{:06x}]", c.class.code),
            None => format!("{name} [{:06x}]", c.class.code),
        },
        None => format!("class {:06x}", c.class.code),
    };
    let names = match (n.vendor, n.device) {
        (None, None) => String::new(),
        (v, d) => format!(" {} {}", v.unwrap_or("?"), d.unwrap_or("?")),
    };
    line(format!(
        "{} {class}: {:04x}:{:04x}{names} (rev {:02x}){}",
        info.address,
        c.vendor_id,
        c.device_id,
        c.revision,
        if c.multi_function { ", multi-function" } else { "" }
    ));
    match &c.header {
        Header::Endpoint(h) => line(format!(
            "  Subsystem: {:04x}:{:04x}{}",
            h.subsystem_vendor_id,
            h.subsystem_id,
            n.subsystem.map(|s| format!(" {s}")).unwrap_or_default()
        )),
        Header::Bridge(b) => line(format!(
            "  Bridge: buses {:02x} -> {:02x}..{:02x}{}",
            b.primary_bus,
            b.secondary_bus,
            b.subordinate_bus,
            if b.secondary_bus_reset { ", secondary bus reset asserted" } else { "" }
        )),
        Header::Other { header_type } => line(format!("  Header type {header_type} (not decoded)")),
    }
    line(format!(
        "  Driver: {}{}",
        info.driver.as_deref().unwrap_or("none"),
        info.driver_override
            .as_ref()
            .map(|d| format!(" (driver_override: {d})"))
            .unwrap_or_default()
    ));
    line(match &info.iommu_group {
        None => "  IOMMU group: none (no IOMMU active: intel_iommu=on / amd_iommu=on, VT-d/AMD-Vi)"
            .into(),
        Some(g) if g.others.is_empty() => {
            format!("  IOMMU group: {} (alone: can be passed through by itself)", g.id)
        }
        Some(g) => format!(
            "  IOMMU group: {} shared with {} (all must go to the VM or be unbound)",
            g.id,
            g.others
                .iter()
                .map(|m| format!("{} [{}]", m.address, m.driver.as_deref().unwrap_or("no driver")))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    });
    match &info.reset_methods {
        Some(m) if m.is_empty() => line("  Reset: disabled (reset_method is empty)".into()),
        Some(m) => line(format!("  Reset: {}", m.join(" "))),
        None => {}
    }
    if let Some(s) = &info.sriov {
        let f = |v: Option<u32>| v.map(|x| x.to_string()).unwrap_or_else(|| "?".into());
        line(format!("  SR-IOV: {} of {} VFs enabled", f(s.num_vfs), f(s.total_vfs)));
    }
    let (bars, rom_bar) = match &c.header {
        Header::Endpoint(h) => (h.bars.as_slice(), h.expansion_rom.as_ref()),
        Header::Bridge(b) => (b.bars.as_slice(), b.expansion_rom.as_ref()),
        Header::Other { .. } => (&[][..], None),
    };
    for b in bars {
        line(format!("  {}", bar_line(b)));
    }
    if let Some(r) = rom_bar {
        if verbose >= 1 || info.rom.is_none() {
            line(format!(
                "  ROM BAR: at {:#x}{}, {}",
                r.address,
                r.size.map(|s| format!(" [{}]", human_size(s))).unwrap_or_default(),
                if r.enabled { "enabled" } else { "disabled" }
            ));
        }
    }
    if let Some(r) = &info.rom {
        line(match (&r.summary, &r.error) {
            (Some(s), _) => format!("  ROM: {s}"),
            (None, Some(e)) => format!("  ROM: could not be read: {e}"),
            (None, None) => {
                "  ROM: present, not read (-v reads it; reading enables the ROM BAR for a moment)"
                    .into()
            }
        });
    }
    if let Header::Bridge(b) = &c.header {
        if verbose >= 1 {
            for (name, w) in [
                ("I/O", &b.io_window),
                ("memory", &b.memory_window),
                ("prefetchable", &b.prefetchable_window),
            ] {
                line(format!(
                    "  Window {name}: {}",
                    if w.enabled {
                        format!("{:#x}-{:#x} ({}-bit)", w.base, w.limit, w.width)
                    } else {
                        "closed".into()
                    }
                ));
            }
        }
    }
    // Interrupts in one line.
    let mut irq = Vec::new();
    if let Header::Endpoint(h) = &c.header {
        if let Some(p) = h.interrupt.pin {
            irq.push(format!(
                "INTx pin {p}{}",
                if c.command.interrupt_disable { " (disabled)" } else { "" }
            ));
        }
    }
    for cap in &c.capabilities {
        match &cap.fields {
            Some(CapabilityFields::Msi(m)) => irq.push(format!(
                "MSI {} vector(s){}{}",
                m.vectors_capable,
                if m.address_64bit { " 64-bit" } else { "" },
                if m.enabled { " enabled" } else { "" }
            )),
            Some(CapabilityFields::Msix(m)) => irq.push(format!(
                "MSI-X {} vector(s) (table BAR{}+{:#x}){}",
                m.table_size,
                m.table_bir,
                m.table_offset,
                if m.enabled { " enabled" } else { "" }
            )),
            _ => {}
        }
    }
    if !irq.is_empty() {
        line(format!("  Interrupts: {}", irq.join(", ")));
    }
    if let Some(CapabilityFields::PciExpress(e)) = c.capabilities.iter().find_map(|cap| {
        matches!(cap.fields, Some(CapabilityFields::PciExpress(_)))
            .then_some(cap.fields.as_ref())
            .flatten()
    }) {
        let link = match (&e.link_status, &e.link_capabilities) {
            (Some(ls), Some(lc)) => {
                format!(
                    ", link {} x{} (max {} x{})",
                    ls.speed, ls.width, lc.max_speed, lc.max_width
                )
            }
            _ => String::new(),
        };
        let acs = c.extended_capabilities.iter().find_map(|cap| match &cap.fields {
            Some(CapabilityFields::Acs(a)) => Some(a),
            _ => None,
        });
        line(format!(
            "  PCIe: {}{link}, FLR {}{}",
            e.port_type,
            if e.device_capabilities.flr_capable { "capable" } else { "not capable" },
            match acs {
                Some(a) if a.control.sv && a.control.rr && a.control.cr && a.control.uf =>
                    ", ACS enabled".to_string(),
                Some(_) => ", ACS present (not all of SV RR CR UF enabled)".to_string(),
                None => String::new(),
            }
        ));
    }
    if verbose == 0 {
        let list = |caps: &[vfio_core::pci::Capability]| {
            caps.iter()
                .map(|k| {
                    format!(
                        "[{:x}] {}",
                        k.offset,
                        k.name.map(str::to_string).unwrap_or_else(|| format!("id {:#x}", k.id))
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !c.capabilities.is_empty() {
            line(format!("  Capabilities: {}", list(&c.capabilities)));
        }
        if !c.extended_capabilities.is_empty() {
            line(format!("  Extended: {}", list(&c.extended_capabilities)));
        }
    } else {
        let cmd = &c.command;
        line(format!(
            "  Command: I/O{} Mem{} BusMaster{} SERR{} DisINTx{}",
            pm(cmd.io),
            pm(cmd.memory),
            pm(cmd.bus_master),
            pm(cmd.serr),
            pm(cmd.interrupt_disable)
        ));
        let st = &c.status;
        line(format!(
            "  Status: Cap{} INTx{} DEVSEL={} >TAbort{} <TAbort{} <MAbort{} >SERR{} <PERR{}",
            pm(st.capabilities_list),
            pm(st.interrupt_status),
            st.devsel,
            pm(st.signaled_target_abort),
            pm(st.received_target_abort),
            pm(st.received_master_abort),
            pm(st.signaled_system_error),
            pm(st.detected_parity_error)
        ));
        for k in c.capabilities.iter().chain(c.extended_capabilities.iter()) {
            let name =
                k.name.map(str::to_string).unwrap_or_else(|| format!("unknown id {:#x}", k.id));
            let ver = if k.extended { format!(" v{}", k.version) } else { String::new() };
            let fields =
                k.fields.as_ref().map(|f| format!(": {}", cap_summary(f))).unwrap_or_default();
            line(format!("  Capability [{:x}{ver}] {name}{fields}", k.offset));
            if verbose >= 2 {
                if let Some(f) = &k.fields {
                    line(format!("      {}", serde_json::to_string(f).unwrap_or_default()));
                }
            }
        }
        if let Some(report) = info.rom.as_ref().and_then(|r| r.report.as_ref()) {
            for p in report.all_problems() {
                line(format!("  ROM problem: {}", p.message));
            }
        }
    }
    if let Some(v) = &info.vfio {
        for l in render_vfio(v, verbose) {
            line(l);
        }
    }
    for d in &c.diagnostics {
        line(format!("  Damaged: {}", d.message));
    }
    for s in &c.not_decoded {
        line(format!("  Not decoded: {s}"));
    }
    if verbose >= 2 {
        line(format!("  Config space ({} bytes):", c.image_length));
        o.push_str(&hexdump(&info.config_bytes));
    }
    o
}

/// The human lines of the VFIO section. Regions the device lacks are listed only with
/// `-v`.
pub fn render_vfio(v: &VfioSection, verbose: u8) -> Vec<String> {
    let mut out = Vec::new();
    if !v.opened {
        out.push(format!("  VFIO: not opened: {}", v.error.as_deref().unwrap_or("unknown reason")));
        return out;
    }
    out.push(format!("  VFIO: opened through {}", v.interface.as_deref().unwrap_or("?")));
    for r in &v.regions {
        if r.size == 0 && verbose == 0 {
            continue;
        }
        if r.size == 0 {
            out.push(format!("    Region {} {}: absent", r.index, r.name));
            continue;
        }
        let mut access = String::new();
        if r.read {
            access.push('r');
        }
        if r.write {
            access.push('w');
        }
        if access.is_empty() {
            access.push('-');
        }
        let size = match human_size(r.size) {
            s if s.ends_with(char::is_numeric) => format!("{s} bytes"),
            s => s,
        };
        let mut l = format!("    Region {} {}: {size}, {access}", r.index, r.name);
        if r.mmap {
            let whole = r.mmap_areas.len() == 1
                && r.mmap_areas[0].offset == 0
                && r.mmap_areas[0].size == r.size;
            if whole {
                l += ", mmap";
            } else {
                let areas: Vec<String> = r
                    .mmap_areas
                    .iter()
                    .map(|a| format!("{:#x}+{}", a.offset, human_size(a.size)))
                    .collect();
                l += &format!(", mmap [{}]", areas.join(", "));
            }
        }
        if r.msix_mappable {
            l += ", MSI-X table mappable";
        }
        if let Some((t, st)) = r.region_type {
            l += &format!(", type {t:#x}/{st:#x}");
        }
        out.push(l);
    }
    for i in &v.irqs {
        out.push(match &i.error {
            Some(e) => format!("    IRQ {}: unavailable: {e}", i.name),
            None if i.count == 0 => format!("    IRQ {}: none", i.name),
            None => format!(
                "    IRQ {}: {} vector(s), {}",
                i.name,
                i.count,
                if i.flags.is_empty() { "-".to_string() } else { i.flags.join(" ") }
            ),
        });
    }
    if let Some(r) = &v.reset {
        out.push(format!(
            "    Reset: {}",
            if r.can_reset {
                "VFIO_DEVICE_RESET available"
            } else {
                "no VFIO_DEVICE_RESET (no function-level, PM or slot reset)"
            }
        ));
        out.push(match (&r.hot_reset_affects, &r.hot_reset_error) {
            (Some(list), _) => format!("    Hot reset resets: {}", list.join(", ")),
            (None, Some(e)) => format!("    Hot reset: unavailable: {e}"),
            (None, None) => "    Hot reset: unavailable".into(),
        });
    }
    if let Some(m) = &v.iommu {
        if let Some(e) = &m.error {
            out.push(format!("    IOMMU: {e}"));
        } else {
            let pages = match &m.page_sizes {
                Some(p) => p.iter().map(|s| human_size(*s)).collect::<Vec<_>>().join(" "),
                None => "not reported by this interface".into(),
            };
            out.push(format!("    IOMMU page sizes: {pages}"));
            let ranges = if m.iova_ranges.is_empty() {
                "unrestricted".to_string()
            } else {
                m.iova_ranges
                    .iter()
                    .map(|r| format!("{:#x}-{:#x}", r.start, r.last))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out.push(format!("    IOVA ranges: {ranges}"));
        }
    }
    out
}

/// A hex dump in the `lspci -x` layout.
pub fn hexdump(bytes: &[u8]) -> String {
    let mut s = String::new();
    let w = if bytes.len() > 256 { 3 } else { 2 };
    for (i, chunk) in bytes.chunks(16).enumerate() {
        s += &format!("{:0w$x}:", i * 16);
        for b in chunk {
            s += &format!(" {b:02x}");
        }
        s.push('\n');
    }
    s
}
