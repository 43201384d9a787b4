//! Parsing of `lspci -vvv` text and comparison with the config-space decoder, shared by
//! the tests of vfio-core and vfiotool.

#![allow(dead_code)]

use vfio_core::pci::caps::CapabilityFields;
use vfio_core::pci::config::DecodedConfig;

/// One capability as lspci prints it.
#[derive(Debug)]
pub struct LspciCap {
    pub offset: u16,
    pub version: Option<u8>,
    pub extended: bool,
    /// The text after `Capabilities: [..] `.
    pub title: String,
    /// The indented lines under it.
    pub body: Vec<String>,
}

/// Why a comparison with the live `lspci` cannot run here (`None`: it can): lspci must be
/// installed, and the process root (otherwise sysfs `config` shows only 64 bytes and lspci
/// hides capabilities).
pub fn live_skip_reason() -> Option<&'static str> {
    if std::process::Command::new("lspci").arg("--version").output().is_err() {
        return Some("lspci is not installed (package pciutils)");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root, sysfs config shows only 64 bytes and lspci hides capabilities");
    }
    None
}

pub fn parse_lspci(text: &str) -> Vec<LspciCap> {
    let mut caps: Vec<LspciCap> = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("Capabilities: [") {
            let (inside, title) = rest.split_once("] ").unwrap_or((rest.trim_end_matches(']'), ""));
            let mut parts = inside.split_whitespace();
            let off = u16::from_str_radix(parts.next().unwrap(), 16).unwrap();
            let version = parts.next().map(|v| v.trim_start_matches('v').parse().unwrap());
            caps.push(LspciCap {
                offset: off,
                version,
                extended: off >= 0x100,
                title: title.to_string(),
                body: Vec::new(),
            });
        } else if line.starts_with("\t\t") {
            if let Some(c) = caps.last_mut() {
                c.body.push(t.to_string());
            }
        } else if line.starts_with('\t') && !caps.is_empty() {
            // A header line after the capabilities ("Kernel driver in use"): stop collecting.
            if let Some(c) = caps.last_mut() {
                c.body.push(String::new());
            }
        }
    }
    caps
}

/// The capability id lspci's title names.
fn lspci_id(c: &LspciCap) -> Option<u16> {
    let t = c.title.as_str();
    if let Some(h) = t.strip_prefix('#') {
        return u16::from_str_radix(h.trim(), 16).ok();
    }
    if let Some(h) = t.strip_prefix("Extended Capability ID 0x") {
        return u16::from_str_radix(h.trim(), 16).ok();
    }
    let std: &[(&str, u16)] = &[
        ("Power Management", 0x01),
        ("AGP version", 0x02),
        ("Vital Product Data", 0x03),
        ("Slot ID", 0x04),
        ("MSI-X:", 0x11),
        ("MSI:", 0x05),
        ("CompactPCI hot-swap", 0x06),
        ("PCI-X", 0x07),
        ("HyperTransport", 0x08),
        ("Vendor Specific Information", 0x09),
        ("Debug port", 0x0a),
        ("CompactPCI central resource control", 0x0b),
        ("Hot-plug capable", 0x0c),
        ("Subsystem:", 0x0d),
        ("AGP3", 0x0e),
        ("Secure device", 0x0f),
        ("Express", 0x10),
        ("SATA HBA", 0x12),
        ("PCI Advanced Features", 0x13),
        ("Enhanced Allocation", 0x14),
    ];
    let ext: &[(&str, u16)] = &[
        ("Advanced Error Reporting", 0x01),
        ("Virtual Channel", 0x02),
        ("Device Serial Number", 0x03),
        ("Power Budgeting", 0x04),
        ("Root Complex Link", 0x05),
        ("Root Complex Internal Link", 0x06),
        ("Root Complex Event Collector", 0x07),
        ("Multi-Function Virtual Channel", 0x08),
        ("Root Complex Register Block", 0x0a),
        ("Vendor Specific Information", 0x0b),
        ("Access Control Services", 0x0d),
        ("Alternative Routing-ID Interpretation", 0x0e),
        ("Address Translation Service", 0x0f),
        ("Single Root I/O Virtualization", 0x10),
        ("Multicast", 0x12),
        ("Page Request Interface", 0x13),
        ("Physical Resizable BAR", 0x15),
        ("Transaction Processing Hints", 0x17),
        ("Latency Tolerance Reporting", 0x18),
        ("Secondary PCI Express", 0x19),
        ("Process Address Space ID", 0x1b),
        ("Downstream Port Containment", 0x1d),
        ("L1 PM Substates", 0x1e),
        ("Precision Time Measurement", 0x1f),
        ("Designated Vendor-Specific", 0x23),
        ("Data Link Feature", 0x25),
        ("Physical Layer 16.0 GT/s", 0x26),
        ("Lane Margining at the Receiver", 0x27),
        ("Physical Layer 32.0 GT/s", 0x2a),
        ("Data Object Exchange", 0x2e),
    ];
    let table = if c.extended { ext } else { std };
    table.iter().find(|(p, _)| t.starts_with(p)).map(|(_, id)| *id)
}

/// The value after `key` in `s`, up to the next space or comma.
fn after<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    let i = s.find(key)? + key.len();
    let rest = &s[i..];
    let end = rest.find([' ', ',']).unwrap_or(rest.len());
    Some(&rest[..end])
}

fn body_line<'a>(c: &'a LspciCap, prefix: &str) -> Option<&'a str> {
    c.body.iter().find(|l| l.starts_with(prefix)).map(String::as_str)
}

fn flag(s: &str, name: &str) -> Option<bool> {
    let i = s.find(name)? + name.len();
    match s[i..].chars().next()? {
        '+' => Some(true),
        '-' => Some(false),
        _ => None,
    }
}

/// `+` or `-`, as lspci writes a flag.
pub fn pm(b: bool) -> char {
    if b {
        '+'
    } else {
        '-'
    }
}

/// Compares a decode with lspci's text; returns every disagreement.
pub fn compare(dec: &DecodedConfig, lspci: &str) -> Vec<String> {
    let mut errs = compare_header(dec, lspci);
    let ours: Vec<_> = dec.capabilities.iter().chain(dec.extended_capabilities.iter()).collect();
    // lspci's own damage markers ("<chain looped>", "<chain broken>") are not capabilities.
    let theirs: Vec<LspciCap> =
        parse_lspci(lspci).into_iter().filter(|c| !c.title.starts_with('<')).collect();
    if ours.len() != theirs.len() {
        errs.push(format!(
            "capability count: decoder {:?}, lspci {:?}",
            ours.iter().map(|c| c.offset).collect::<Vec<_>>(),
            theirs.iter().map(|c| c.offset).collect::<Vec<_>>()
        ));
    }
    for (o, t) in ours.iter().zip(theirs.iter()) {
        let at = format!("cap [{:x}] {:?}", t.offset, t.title);
        if o.offset != t.offset || o.extended != t.extended {
            errs.push(format!("{at}: decoder has offset {:#x}", o.offset));
            continue;
        }
        match lspci_id(t) {
            Some(id) if id == o.id || (o.extended && id == 2 && o.id == 9) => {}
            other => errs.push(format!("{at}: decoder id {:#x}, lspci {:?}", o.id, other)),
        }
        if let Some(v) = t.version {
            if v != o.version {
                errs.push(format!("{at}: version {} vs v{v}", o.version));
            }
        }
        let title = t.title.as_str();
        match &o.fields {
            Some(CapabilityFields::Msi(m)) => {
                let count = after(title, "Count=").unwrap_or("");
                let want = format!("{}/{}", m.vectors_enabled, m.vectors_capable);
                if count != want {
                    errs.push(format!("{at}: MSI count {want} vs {count}"));
                }
                if flag(title, "64bit") != Some(m.address_64bit) {
                    errs.push(format!("{at}: MSI 64bit {}", m.address_64bit));
                }
                if flag(title, "Maskable") != Some(m.per_vector_masking) {
                    errs.push(format!("{at}: MSI maskable {}", m.per_vector_masking));
                }
                if flag(title, "Enable") != Some(m.enabled) {
                    errs.push(format!("{at}: MSI enable {}", m.enabled));
                }
            }
            Some(CapabilityFields::Msix(m)) => {
                if after(title, "Count=") != Some(&m.table_size.to_string()) {
                    errs.push(format!("{at}: MSI-X table size {}", m.table_size));
                }
                if flag(title, "Enable") != Some(m.enabled)
                    || flag(title, "Masked") != Some(m.function_mask)
                {
                    errs.push(format!("{at}: MSI-X enable/mask {} {}", m.enabled, m.function_mask));
                }
                let vt = body_line(t, "Vector table:").unwrap_or("");
                let pba = body_line(t, "PBA:").unwrap_or("");
                let want_vt =
                    format!("Vector table: BAR={} offset={:08x}", m.table_bir, m.table_offset);
                let want_pba = format!("PBA: BAR={} offset={:08x}", m.pba_bir, m.pba_offset);
                if vt != want_vt || pba != want_pba {
                    errs.push(format!("{at}: {want_vt} / {want_pba} vs {vt} / {pba}"));
                }
            }
            Some(CapabilityFields::PowerManagement(p)) => {
                if after(title, "version ") != Some(&p.version.to_string()) {
                    errs.push(format!("{at}: PM version {}", p.version));
                }
                let st = body_line(t, "Status:").unwrap_or("");
                if !st.starts_with(&format!("Status: {} ", p.power_state.replace("hot", "")))
                    || flag(st, "NoSoftRst") != Some(p.no_soft_reset)
                {
                    errs.push(format!(
                        "{at}: PM {} NoSoftRst {} vs {st}",
                        p.power_state, p.no_soft_reset
                    ));
                }
                let fl = body_line(t, "Flags:").unwrap_or("");
                if flag(fl, "D1") != Some(p.d1) || flag(fl, "D2") != Some(p.d2) {
                    errs.push(format!("{at}: PM D1 {} D2 {} vs {fl}", p.d1, p.d2));
                }
            }
            Some(CapabilityFields::PciExpress(e)) => {
                let want = format!("Express (v{}) ", e.version);
                if !title.starts_with(&want) {
                    errs.push(format!("{at}: wanted {want}"));
                }
                let lspci_type = match e.port_type_code {
                    0 => "Endpoint",
                    1 => "Legacy Endpoint",
                    4 => "Root Port",
                    5 => "Upstream Port",
                    6 => "Downstream Port",
                    7 => "PCI-Express to PCI/PCI-X Bridge",
                    8 => "PCI/PCI-X to PCI-Express Bridge",
                    9 => "Root Complex Integrated Endpoint",
                    10 => "Root Complex Event Collector",
                    _ => "Unknown",
                };
                if !title[want.len().min(title.len())..].starts_with(lspci_type) {
                    errs.push(format!("{at}: port type {lspci_type}"));
                }
                if let Some(ls) = &e.link_status {
                    let l = body_line(t, "LnkSta:").unwrap_or("");
                    let w = format!("LnkSta:\tSpeed {}, Width x{}", ls.speed, ls.width);
                    let w2 = format!("LnkSta: Speed {}, Width x{}", ls.speed, ls.width);
                    if !l.starts_with(&w) && !l.replace('\t', " ").starts_with(&w2) {
                        errs.push(format!("{at}: {w2:?} vs {l:?}"));
                    }
                }
                if let Some(lc) = &e.link_capabilities {
                    let l = body_line(t, "LnkCap:").unwrap_or("").replace('\t', " ");
                    let w = format!("Speed {}, Width x{}", lc.max_speed, lc.max_width);
                    if !l.contains(&w) {
                        errs.push(format!("{at}: {w:?} vs {l:?}"));
                    }
                }
                let dc = body_line(t, "DevCap:").unwrap_or("");
                if after(dc, "MaxPayload ") != Some(&e.device_capabilities.max_payload.to_string())
                {
                    errs.push(format!(
                        "{at}: DevCap MaxPayload {}",
                        e.device_capabilities.max_payload
                    ));
                }
                let dc2 = t.body.iter().skip_while(|l| !l.starts_with("DevCap:")).nth(1);
                if let Some(fl) = dc2.and_then(|l| flag(l, "FLReset")) {
                    if fl != e.device_capabilities.flr_capable {
                        errs.push(format!("{at}: FLReset {}", e.device_capabilities.flr_capable));
                    }
                }
            }
            Some(CapabilityFields::Acs(a)) => {
                for (line, bits) in [("ACSCap:", &a.capabilities), ("ACSCtl:", &a.control)] {
                    let l = body_line(t, line).unwrap_or("");
                    let pairs = [
                        ("SrcValid", bits.sv),
                        ("TransBlk", bits.tb),
                        ("ReqRedir", bits.rr),
                        ("CmpltRedir", bits.cr),
                        ("UpstreamFwd", bits.uf),
                        ("EgressCtrl", bits.ec),
                        ("DirectTrans", bits.dt),
                    ];
                    for (n, v) in pairs {
                        if flag(l, n) != Some(v) {
                            errs.push(format!("{at}: {line} {n} {v}"));
                        }
                    }
                }
            }
            Some(CapabilityFields::Ari(a)) => {
                let l = body_line(t, "ARICap:").unwrap_or("");
                if after(l, "Next Function: ") != Some(&a.next_function.to_string())
                    || flag(l, "MFVC") != Some(a.mfvc)
                {
                    errs.push(format!("{at}: ARI next {} vs {l}", a.next_function));
                }
            }
            Some(CapabilityFields::Ats(a)) => {
                let l = body_line(t, "ATSCtl:").unwrap_or("");
                if flag(l, "Enable") != Some(a.enabled) {
                    errs.push(format!("{at}: ATS enable {}", a.enabled));
                }
            }
            Some(CapabilityFields::Sriov(s)) => {
                let l = body_line(t, "Initial VFs:").unwrap_or("");
                let w = format!(
                    "Initial VFs: {}, Total VFs: {}, Number of VFs: {}",
                    s.initial_vfs, s.total_vfs, s.num_vfs
                );
                if !l.starts_with(&w) {
                    errs.push(format!("{at}: {w:?} vs {l:?}"));
                }
                let l = body_line(t, "VF offset:").unwrap_or("");
                let w = format!(
                    "VF offset: {}, stride: {}, Device ID: {:04x}",
                    s.first_vf_offset, s.vf_stride, s.vf_device_id
                );
                if l != w {
                    errs.push(format!("{at}: {w:?} vs {l:?}"));
                }
                let regions = t.body.iter().filter(|l| l.starts_with("Region ")).count();
                if regions != s.vf_bars.len() {
                    errs.push(format!("{at}: {} VF BARs vs {regions}", s.vf_bars.len()));
                }
            }
            Some(CapabilityFields::VendorSpecific(v)) => {
                let lspci_virtio = title.split_once("VirtIO: ").map(|(_, n)| n);
                match (&v.virtio, lspci_virtio) {
                    (None, None) => {}
                    (Some(c), Some(name)) => {
                        let known = (1..=4).contains(&c.cfg_type);
                        if name != if known { c.type_name } else { "<unknown>" } {
                            errs.push(format!("{at}: VirtIO {} vs {name}", c.type_name));
                        }
                        let mut want =
                            format!("BAR={} offset={:08x} size={:08x}", c.bar, c.offset, c.length);
                        if let Some(m) = c.notify_off_multiplier {
                            want += &format!(" multiplier={m:08x}");
                        }
                        if t.body.first().map(String::as_str) != Some(want.as_str()) {
                            errs.push(format!("{at}: {want:?} vs {:?}", t.body.first()));
                        }
                    }
                    (ours, theirs) => errs.push(format!("{at}: VirtIO {ours:?} vs {theirs:?}")),
                }
            }
            Some(CapabilityFields::AdvancedFeatures(a)) => {
                let want = [
                    format!("AFCap: TP{} FLR{}", pm(a.tp_capable), pm(a.flr_capable)),
                    format!("AFCtrl: FLR{}", pm(a.initiate_flr)),
                    format!("AFStatus: TP{}", pm(a.transactions_pending)),
                ];
                if t.body.get(..3) != Some(&want[..]) {
                    errs.push(format!("{at}: {want:?} vs {:?}", t.body));
                }
            }
            Some(CapabilityFields::BridgeSubsystem(b)) => {
                // lspci names the ids from pci.ids; the device id ends the text when unnamed.
                let dev = format!("{:04x}", b.subsystem_id);
                if !title.starts_with("Subsystem: ") || !title.ends_with(&dev) {
                    errs.push(format!("{at}: subsystem {:04x}:{dev}", b.subsystem_vendor_id));
                }
            }
            Some(CapabilityFields::DebugPort(d))
                if title != format!("Debug port: BAR={} offset={:04x}", d.bar, d.offset) =>
            {
                errs.push(format!("{at}: {d:?}"));
            }
            Some(CapabilityFields::Sata(s)) => {
                let loc = match s.bar {
                    Some(b) => format!("BAR{b} Offset={:08x}", s.offset),
                    None if s.in_config_space => "InCfgSpace".into(),
                    None => format!("BAR??{}", s.bar_location),
                };
                if title != format!("SATA HBA v{}.{} {loc}", s.major, s.minor) {
                    errs.push(format!("{at}: {s:?}"));
                }
            }
            Some(CapabilityFields::DeviceSerialNumber(d)) if !title.ends_with(&d.text) => {
                errs.push(format!("{at}: serial {}", d.text));
            }
            Some(CapabilityFields::Aer(a)) => {
                let l = body_line(t, "AERCap:").unwrap_or("");
                if after(l, "First Error Pointer: ")
                    != Some(&format!("{:02x}", a.first_error_pointer))
                    || flag(l, "ECRCGenCap") != Some(a.ecrc_generation_capable)
                    || flag(l, "ECRCChkCap") != Some(a.ecrc_check_capable)
                {
                    errs.push(format!("{at}: AER {a:?} vs {l}"));
                }
            }
            _ => {}
        }
    }
    errs
}

/// lspci's damage markers in a listing: "<chain looped>" and "<chain broken>".
pub fn damage_markers(lspci: &str) -> Vec<String> {
    parse_lspci(lspci).into_iter().filter(|c| c.title.starts_with('<')).map(|c| c.title).collect()
}

/// The lines of lspci's device header (one tab deep, before the capabilities).
fn header_lines(lspci: &str) -> Vec<&str> {
    lspci
        .lines()
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with("Capabilities:") && !l.is_empty())
        .filter(|l| l.starts_with('\t') && !l.starts_with("\t\t"))
        .map(str::trim)
        .collect()
}

/// Compares the header with lspci's: the BARs (index, I/O or memory, unassigned), the
/// expansion ROM, the interrupt pin and, on a CardBus bridge, the buses.
pub fn compare_header(dec: &DecodedConfig, lspci: &str) -> Vec<String> {
    use vfio_core::pci::config::{BarKind, Header};
    let mut errs = Vec::new();
    let lines = header_lines(lspci);
    let (bars, rom, irq) = match &dec.header {
        Header::Endpoint(h) => (&h.bars[..], h.expansion_rom.as_ref(), Some(&h.interrupt)),
        Header::Bridge(b) => (&b.bars[..], b.expansion_rom.as_ref(), Some(&b.interrupt)),
        Header::CardBus(c) => (&c.bars[..], None, Some(&c.interrupt)),
        Header::Other { .. } => (&[][..], None, None),
    };
    let regions: Vec<&str> = lines.iter().filter(|l| l.starts_with("Region ")).copied().collect();
    if regions.len() != bars.len() {
        errs.push(format!("header: {} BARs vs lspci {regions:?}", bars.len()));
    }
    for (b, l) in bars.iter().zip(regions.iter()) {
        let want = format!("Region {}: ", b.index);
        let io = matches!(b.kind, BarKind::Io);
        let unassigned = l.contains("<unassigned>");
        if !l.starts_with(&want) || l.contains("I/O ports") != io || unassigned != (b.address == 0)
        {
            errs.push(format!("header: BAR{} {:?} at {:#x} vs {l:?}", b.index, b.kind, b.address));
        }
    }
    let lrom = lines.iter().find(|l| l.starts_with("Expansion ROM at "));
    match (rom, lrom) {
        (None, None) => {}
        (Some(r), Some(l)) if l.contains("<unassigned>") == (r.address == 0) => {}
        (r, l) => errs.push(format!("header: ROM {r:?} vs lspci {l:?}")),
    }
    let lpin = lines
        .iter()
        .find_map(|l| l.strip_prefix("Interrupt: pin "))
        .and_then(|r| r.split_whitespace().next());
    if let Some(i) = irq {
        if i.pin != lpin {
            errs.push(format!("header: interrupt pin {:?} vs lspci {lpin:?}", i.pin));
        }
    }
    if let Header::CardBus(c) = &dec.header {
        let want = format!(
            "Bus: primary={:02x}, secondary={:02x}, subordinate={:02x}, sec-latency={}",
            c.primary_bus, c.cardbus_bus, c.subordinate_bus, c.cardbus_latency
        );
        if !lines.contains(&want.as_str()) {
            errs.push(format!("header: {want:?} not in lspci's header"));
        }
        for (i, w) in c.memory_windows.iter().enumerate() {
            let want = format!("Memory window {i}: {:08x}-{:08x}", w.base, w.limit);
            if !lines.iter().any(|l| l.starts_with(&want)) {
                errs.push(format!("header: {want:?} not in lspci's header"));
            }
        }
        for (i, w) in c.io_windows.iter().enumerate() {
            let want = format!("I/O window {i}: {:08x}-{:08x}", w.base, w.limit);
            if !lines.iter().any(|l| l.starts_with(&want)) {
                errs.push(format!("header: {want:?} not in lspci's header"));
            }
        }
    }
    errs
}
