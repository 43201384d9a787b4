//! The text of `info`: a screenful by default, a line per capability with `-v`, every
//! field and a hex dump with `-vv`. (`--json` is the serialized [`DeviceReport`].)

use vfio_core::pci::caps::{Acs, CapabilityFields};
use vfio_core::pci::config::{BarKind, DecodedBar, DecodedConfig, Header, RomBar};
use vfio_core::pci::Capability;

use super::caps::{cap_summary, pm};
use super::collect::{DeviceReport, GroupReport, Names};
use super::vfio::{VfioRegion, VfioSection};
use crate::format::{hexdump, human_size, id_pair};

/// Renders the human output. Verbosity 0 fits one screen; 1 adds a line per capability,
/// the command/status bits, bridge windows and the ROM; 2 adds every field and a hex
/// dump of the image.
pub fn render(info: &DeviceReport<'_>, verbose: u8) -> String {
    let c = &info.config;
    let mut lines = vec![headline(info), header_line(c, &info.names), driver_line(info)];
    lines.push(group_line(info.iommu_group.as_ref()));
    match &info.reset_methods {
        Some(m) if m.is_empty() => lines.push("  Reset: disabled (reset_method is empty)".into()),
        Some(m) => lines.push(format!("  Reset: {}", m.join(" "))),
        None => {}
    }
    if let Some(s) = &info.sriov {
        let f = |v: Option<u32>| v.map(|x| x.to_string()).unwrap_or_else(|| "?".into());
        lines.push(format!("  SR-IOV: {} of {} VFs enabled", f(s.num_vfs), f(s.total_vfs)));
    }
    lines.extend(bar_lines(info, verbose));
    if verbose >= 1 {
        lines.extend(bridge_windows(c));
    }
    lines.extend(interrupts_line(c));
    lines.extend(pcie_line(c));
    if verbose == 0 {
        lines.extend(capability_lists(c));
    } else {
        lines.extend(details(info, verbose));
    }
    if let Some(v) = &info.vfio {
        lines.extend(render_vfio(v, verbose));
    }
    lines.extend(c.diagnostics.iter().map(|d| format!("  Damaged: {}", d.message)));
    lines.extend(c.not_decoded.iter().map(|s| format!("  Not decoded: {s}")));
    if verbose >= 2 {
        lines.push(format!("  Config space ({} bytes):", c.image_length));
    }
    let mut o: String = lines.into_iter().map(|l| l + "\n").collect();
    if verbose >= 2 {
        o.push_str(&hexdump(&info.config_bytes));
    }
    o
}

/// `ADDRESS CLASS: VVVV:DDDD NAMES (rev RR)`.
fn headline(info: &DeviceReport<'_>) -> String {
    let (c, n) = (&info.config, &info.names);
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
    format!(
        "{} {class}: {}{names} (rev {:02x}){}",
        info.address,
        id_pair(c.vendor_id, c.device_id),
        c.revision,
        if c.multi_function { ", multi-function" } else { "" }
    )
}

/// The subsystem of an endpoint, the buses of a bridge.
fn header_line(c: &DecodedConfig, n: &Names<'_>) -> String {
    match &c.header {
        Header::Endpoint(h) => format!(
            "  Subsystem: {}{}",
            id_pair(h.subsystem_vendor_id, h.subsystem_id),
            n.subsystem.map(|s| format!(" {s}")).unwrap_or_default()
        ),
        Header::Bridge(b) => format!(
            "  Bridge: buses {:02x} -> {:02x}..{:02x}{}",
            b.primary_bus,
            b.secondary_bus,
            b.subordinate_bus,
            if b.secondary_bus_reset { ", secondary bus reset asserted" } else { "" }
        ),
        Header::CardBus(b) => format!(
            "  CardBus bridge: buses {:02x} -> {:02x}..{:02x}{}{}",
            b.primary_bus,
            b.cardbus_bus,
            b.subordinate_bus,
            b.subsystem_vendor_id
                .zip(b.subsystem_id)
                .map(|(v, d)| format!(", subsystem {}", id_pair(v, d)))
                .unwrap_or_default(),
            if b.cardbus_reset { ", CardBus reset asserted" } else { "" }
        ),
        Header::Other { header_type } => format!("  Header type {header_type} (not decoded)"),
    }
}

fn driver_line(info: &DeviceReport<'_>) -> String {
    format!(
        "  Driver: {}{}",
        info.driver.as_deref().unwrap_or("none"),
        info.driver_override
            .as_ref()
            .map(|d| format!(" (driver_override: {d})"))
            .unwrap_or_default()
    )
}

fn group_line(group: Option<&GroupReport>) -> String {
    match group {
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
    }
}

fn bar_line(b: &DecodedBar) -> String {
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
    let at = match b.address {
        0 => "<unassigned>".to_string(),
        a => format!("{a:#x}"),
    };
    format!("BAR{}: {kind} at {at}{size}{pf}", b.index)
}

/// The BARs, the ROM BAR (with `-v`, or when sysfs shows no ROM) and the ROM.
fn bar_lines(info: &DeviceReport<'_>, verbose: u8) -> Vec<String> {
    let (bars, rom_bar): (&[DecodedBar], Option<&RomBar>) = match &info.config.header {
        Header::Endpoint(h) => (h.bars.as_slice(), h.expansion_rom.as_ref()),
        Header::Bridge(b) => (b.bars.as_slice(), b.expansion_rom.as_ref()),
        Header::CardBus(b) => (b.bars.as_slice(), None),
        Header::Other { .. } => (&[][..], None),
    };
    let mut lines: Vec<String> = bars.iter().map(|b| format!("  {}", bar_line(b))).collect();
    if let Some(r) = rom_bar.filter(|_| verbose >= 1 || info.rom.is_none()) {
        lines.push(format!(
            "  ROM BAR: at {}{}, {}",
            match r.address {
                0 => "<unassigned>".to_string(),
                a => format!("{a:#x}"),
            },
            r.size.map(|s| format!(" [{}]", human_size(s))).unwrap_or_default(),
            if r.enabled { "enabled" } else { "disabled" }
        ));
    }
    if let Some(r) = &info.rom {
        lines.push(match (&r.summary, &r.error) {
            (Some(s), _) => format!("  ROM: {s}"),
            (None, Some(e)) => format!("  ROM: could not be read: {e}"),
            (None, None) => {
                "  ROM: present, not read (-v reads it; reading enables the ROM BAR for a moment)"
                    .into()
            }
        });
    }
    lines
}

fn bridge_windows(c: &DecodedConfig) -> Vec<String> {
    if let Header::CardBus(b) = &c.header {
        let windows = b.memory_windows.iter().map(|w| ("memory", w));
        return (windows.chain(b.io_windows.iter().map(|w| ("I/O", w))))
            .enumerate()
            .map(|(i, (name, w))| {
                format!(
                    "  Window {name} {}: {}",
                    i % 2,
                    if w.enabled {
                        format!(
                            "{:#x}-{:#x}{}",
                            w.base,
                            w.limit,
                            if w.prefetchable { " (prefetchable)" } else { "" }
                        )
                    } else {
                        "closed".into()
                    }
                )
            })
            .collect();
    }
    let Header::Bridge(b) = &c.header else { return Vec::new() };
    [("I/O", &b.io_window), ("memory", &b.memory_window), ("prefetchable", &b.prefetchable_window)]
        .into_iter()
        .map(|(name, w)| {
            format!(
                "  Window {name}: {}",
                if w.enabled {
                    format!("{:#x}-{:#x} ({}-bit)", w.base, w.limit, w.width)
                } else {
                    "closed".into()
                }
            )
        })
        .collect()
}

/// INTx, MSI and MSI-X in one line.
fn interrupts_line(c: &DecodedConfig) -> Option<String> {
    let mut irq = Vec::new();
    let interrupt = match &c.header {
        Header::Endpoint(h) => Some(&h.interrupt),
        Header::Bridge(b) => Some(&b.interrupt),
        Header::CardBus(b) => Some(&b.interrupt),
        Header::Other { .. } => None,
    };
    if let Some(i) = interrupt {
        if let Some(p) = i.pin {
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
    (!irq.is_empty()).then(|| format!("  Interrupts: {}", irq.join(", ")))
}

/// Port type, link, FLR and ACS of a PCI Express device.
fn pcie_line(c: &DecodedConfig) -> Option<String> {
    let e = c.capabilities.iter().find_map(|cap| match &cap.fields {
        Some(CapabilityFields::PciExpress(e)) => Some(e),
        _ => None,
    })?;
    let link = match (&e.link_status, &e.link_capabilities) {
        (Some(ls), Some(lc)) => {
            format!(", link {} x{} (max {} x{})", ls.speed, ls.width, lc.max_speed, lc.max_width)
        }
        _ => String::new(),
    };
    let acs: Option<&Acs> = c.extended_capabilities.iter().find_map(|cap| match &cap.fields {
        Some(CapabilityFields::Acs(a)) => Some(a),
        _ => None,
    });
    Some(format!(
        "  PCIe: {}{link}, FLR {}{}",
        e.port_type,
        if e.device_capabilities.flr_capable { "capable" } else { "not capable" },
        match acs {
            Some(a) if a.control.sv && a.control.rr && a.control.cr && a.control.uf =>
                ", ACS enabled",
            Some(_) => ", ACS present (not all of SV RR CR UF enabled)",
            None => "",
        }
    ))
}

/// The capabilities as two short lists (verbosity 0).
fn capability_lists(c: &DecodedConfig) -> Vec<String> {
    let list = |caps: &[Capability]| {
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
    let mut lines = Vec::new();
    if !c.capabilities.is_empty() {
        lines.push(format!("  Capabilities: {}", list(&c.capabilities)));
    }
    if !c.extended_capabilities.is_empty() {
        lines.push(format!("  Extended: {}", list(&c.extended_capabilities)));
    }
    lines
}

/// Command and status bits, a line per capability (and its fields with `-vv`), and the
/// ROM's problems (verbosity 1 and up).
fn details(info: &DeviceReport<'_>, verbose: u8) -> Vec<String> {
    let c = &info.config;
    let cmd = &c.command;
    let st = &c.status;
    let mut lines = vec![
        format!(
            "  Command: I/O{} Mem{} BusMaster{} SERR{} DisINTx{}",
            pm(cmd.io),
            pm(cmd.memory),
            pm(cmd.bus_master),
            pm(cmd.serr),
            pm(cmd.interrupt_disable)
        ),
        format!(
            "  Status: Cap{} INTx{} DEVSEL={} >TAbort{} <TAbort{} <MAbort{} >SERR{} <PERR{}",
            pm(st.capabilities_list),
            pm(st.interrupt_status),
            st.devsel,
            pm(st.signaled_target_abort),
            pm(st.received_target_abort),
            pm(st.received_master_abort),
            pm(st.signaled_system_error),
            pm(st.detected_parity_error)
        ),
    ];
    for k in c.capabilities.iter().chain(c.extended_capabilities.iter()) {
        let name = k.name.map(str::to_string).unwrap_or_else(|| format!("unknown id {:#x}", k.id));
        let ver = if k.extended { format!(" v{}", k.version) } else { String::new() };
        let fields = k.fields.as_ref().map(|f| format!(": {}", cap_summary(f))).unwrap_or_default();
        lines.push(format!("  Capability [{:x}{ver}] {name}{fields}", k.offset));
        if let Some(f) = k.fields.as_ref().filter(|_| verbose >= 2) {
            lines.push(format!("      {}", serde_json::to_string(f).unwrap_or_default()));
        }
    }
    if let Some(report) = info.rom.as_ref().and_then(|r| r.report.as_ref()) {
        lines.extend(report.all_problems().map(|p| format!("  ROM problem: {}", p.message)));
    }
    lines
}

fn region_line(r: &VfioRegion) -> String {
    if r.size == 0 {
        return format!("    Region {} {}: absent", r.index, r.name);
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
    l
}

/// The human lines of the VFIO section. Regions the device lacks are listed only with
/// `-v`.
pub fn render_vfio(v: &VfioSection, verbose: u8) -> Vec<String> {
    if !v.opened {
        return vec![format!(
            "  VFIO: not opened: {}",
            v.error.as_deref().unwrap_or("unknown reason")
        )];
    }
    let mut out = vec![format!("  VFIO: opened through {}", v.interface.as_deref().unwrap_or("?"))];
    out.extend(v.regions.iter().filter(|r| r.size > 0 || verbose > 0).map(region_line));
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
    if let Some(f) = &v.features {
        out.push(match &f.error {
            Some(e) => format!("    Features: unavailable: {e}"),
            None if f.supported.is_empty() => "    Features: none".into(),
            None => format!(
                "    Features: {}",
                f.supported
                    .iter()
                    .map(|f| {
                        let ops = match (f.get, f.set) {
                            (true, true) => " (get, set)",
                            (true, false) => " (get)",
                            (false, true) => " (set)",
                            (false, false) => "",
                        };
                        format!("{}{ops}", f.name)
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
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
