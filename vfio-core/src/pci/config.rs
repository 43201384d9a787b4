//! PCI configuration space: a typed view over an image ([`ConfigSpace`]) and a full
//! decode of the header and both capability chains ([`decode`], [`DecodedConfig`]).
//!
//! Images may be short: sysfs gives 64 bytes of `config` to a non-root reader, 256 bytes
//! for conventional PCI devices and 4096 for PCI Express devices with extended config
//! access. The decoder decodes what the image holds and lists what it could not decode.
//! BAR sizes are not in config space (sizing needs writes); they are passed in, from
//! sysfs `resource` ([`parse_sysfs_resource`]) or VFIO region info.

use super::caps::{decode_capability, id, Capability, CapabilityFields, RawCapability};
use super::error::DecodeError;
pub use super::resource::{parse_sysfs_resource, ResourceLine};
use super::space::decode_bar_at;
pub use super::space::{BarKind, ConfigSpace, DecodedBar, Diagnostic, DiagnosticKind};

/// Decoded command register (0x04).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Command {
    /// Raw value.
    pub raw: u16,
    /// I/O space enable.
    pub io: bool,
    /// Memory space enable.
    pub memory: bool,
    /// Bus master enable (the device may DMA).
    pub bus_master: bool,
    /// Special cycles.
    pub special_cycles: bool,
    /// Memory write and invalidate.
    pub mem_write_invalidate: bool,
    /// VGA palette snoop.
    pub vga_palette_snoop: bool,
    /// Parity error response.
    pub parity_error_response: bool,
    /// Stepping (IDSEL).
    pub stepping: bool,
    /// SERR# enable.
    pub serr: bool,
    /// Fast back-to-back enable.
    pub fast_back_to_back: bool,
    /// INTx disabled.
    pub interrupt_disable: bool,
}

impl Command {
    /// Decodes a command register value.
    pub fn from_raw(v: u16) -> Self {
        let bit = |n: u32| v & (1 << n) != 0;
        Command {
            raw: v,
            io: bit(0),
            memory: bit(1),
            bus_master: bit(2),
            special_cycles: bit(3),
            mem_write_invalidate: bit(4),
            vga_palette_snoop: bit(5),
            parity_error_response: bit(6),
            stepping: bit(7),
            serr: bit(8),
            fast_back_to_back: bit(9),
            interrupt_disable: bit(10),
        }
    }
}

/// Decoded status register (0x06).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Status {
    /// Raw value.
    pub raw: u16,
    /// INTx asserted.
    pub interrupt_status: bool,
    /// Capability list present.
    pub capabilities_list: bool,
    /// 66 MHz capable.
    pub mhz66: bool,
    /// User-defined features.
    pub udf: bool,
    /// Fast back-to-back capable.
    pub fast_back_to_back: bool,
    /// Master data parity error.
    pub master_data_parity_error: bool,
    /// DEVSEL timing: "fast", "medium", "slow" or "reserved".
    pub devsel: &'static str,
    /// Signalled target abort.
    pub signaled_target_abort: bool,
    /// Received target abort.
    pub received_target_abort: bool,
    /// Received master abort.
    pub received_master_abort: bool,
    /// Signalled system error.
    pub signaled_system_error: bool,
    /// Detected parity error.
    pub detected_parity_error: bool,
}

impl Status {
    /// Decodes a status register value.
    pub fn from_raw(v: u16) -> Self {
        let bit = |n: u32| v & (1 << n) != 0;
        Status {
            raw: v,
            interrupt_status: bit(3),
            capabilities_list: bit(4),
            mhz66: bit(5),
            udf: bit(6),
            fast_back_to_back: bit(7),
            master_data_parity_error: bit(8),
            devsel: ["fast", "medium", "slow", "reserved"][usize::from((v >> 9) & 3)],
            signaled_target_abort: bit(11),
            received_target_abort: bit(12),
            received_master_abort: bit(13),
            signaled_system_error: bit(14),
            detected_parity_error: bit(15),
        }
    }
}

/// Class code (0x09-0x0b).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ClassCode {
    /// The 24-bit code (`0x020000`).
    pub code: u32,
    /// Base class.
    pub base: u8,
    /// Sub class.
    pub sub: u8,
    /// Programming interface.
    pub prog_if: u8,
}

/// The expansion ROM BAR.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RomBar {
    /// Address programmed.
    pub address: u64,
    /// Decode enabled (bit 0).
    pub enabled: bool,
    /// Size in bytes when known from outside config space.
    pub size: Option<u64>,
}

/// Interrupt pin and line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Interrupt {
    /// Pin: `null` for none, else "A".."D" (or "invalid").
    pub pin: Option<&'static str>,
    /// Line (the legacy IRQ routing the firmware wrote).
    pub line: u8,
}

fn interrupt(cs: &ConfigSpace<'_>) -> Interrupt {
    let pin = match cs.read_u8(0x3d).unwrap_or(0) {
        0 => None,
        1 => Some("A"),
        2 => Some("B"),
        3 => Some("C"),
        4 => Some("D"),
        _ => Some("invalid"),
    };
    Interrupt { pin, line: cs.read_u8(0x3c).unwrap_or(0) }
}

/// Type 0 (endpoint) header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Type0 {
    /// Implemented BARs.
    pub bars: Vec<DecodedBar>,
    /// Subsystem vendor id.
    pub subsystem_vendor_id: u16,
    /// Subsystem id.
    pub subsystem_id: u16,
    /// Expansion ROM BAR, when implemented.
    pub expansion_rom: Option<RomBar>,
    /// Interrupt pin and line.
    pub interrupt: Interrupt,
    /// Min_Gnt.
    pub min_gnt: u8,
    /// Max_Lat.
    pub max_lat: u8,
}

/// A bridge forwarding window.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Window {
    /// First address.
    pub base: u64,
    /// Last address.
    pub limit: u64,
    /// Whether the window is open (base <= limit).
    pub enabled: bool,
    /// Address width: 16, 32 or 64.
    pub width: u8,
}

/// Type 1 (PCI-to-PCI bridge) header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Type1 {
    /// Implemented BARs (0-1).
    pub bars: Vec<DecodedBar>,
    /// Primary bus number.
    pub primary_bus: u8,
    /// Secondary bus number.
    pub secondary_bus: u8,
    /// Subordinate bus number.
    pub subordinate_bus: u8,
    /// Secondary latency timer.
    pub secondary_latency: u8,
    /// I/O window.
    pub io_window: Window,
    /// Non-prefetchable memory window.
    pub memory_window: Window,
    /// Prefetchable memory window.
    pub prefetchable_window: Window,
    /// Secondary status (raw).
    pub secondary_status: u16,
    /// Expansion ROM BAR, when implemented.
    pub expansion_rom: Option<RomBar>,
    /// Interrupt pin and line.
    pub interrupt: Interrupt,
    /// Bridge control (raw).
    pub bridge_control: u16,
    /// Bridge control: secondary bus reset asserted.
    pub secondary_bus_reset: bool,
    /// Bridge control: VGA forwarding enabled.
    pub vga_enable: bool,
}

/// The layout-specific part of the header.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "layout", rename_all = "snake_case"))]
pub enum Header {
    /// Type 0: an endpoint.
    Endpoint(Type0),
    /// Type 1: a PCI-to-PCI bridge.
    Bridge(Type1),
    /// Type 2 (CardBus) or an undefined layout: not decoded.
    Other {
        /// The layout number.
        header_type: u8,
    },
}

/// Sizes for BARs and the ROM BAR, from outside config space.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeOptions {
    /// BAR sizes by index (0-5).
    pub bar_sizes: [Option<u64>; 6],
    /// Expansion ROM size.
    pub rom_size: Option<u64>,
}

/// Everything decoded from a config-space image. This is part of `vfiotool info --json`;
/// fields are only ever added.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DecodedConfig {
    /// Bytes in the image.
    pub image_length: usize,
    /// Vendor id.
    pub vendor_id: u16,
    /// Device id.
    pub device_id: u16,
    /// Command register.
    pub command: Command,
    /// Status register.
    pub status: Status,
    /// Revision id.
    pub revision: u8,
    /// Class code.
    pub class: ClassCode,
    /// Cache line size (dwords).
    pub cache_line_size: u8,
    /// Latency timer.
    pub latency_timer: u8,
    /// Header type number (0x0e bits 0-6).
    pub header_type: u8,
    /// Multi-function device (0x0e bit 7).
    pub multi_function: bool,
    /// BIST register.
    pub bist: u8,
    /// Layout-specific fields.
    pub header: Header,
    /// Standard capabilities in chain order.
    pub capabilities: Vec<Capability>,
    /// Extended capabilities in chain order.
    pub extended_capabilities: Vec<Capability>,
    /// Damage found (broken chains, odd registers).
    pub diagnostics: Vec<Diagnostic>,
    /// Parts that could not be decoded because the image is short, one line each.
    pub not_decoded: Vec<String>,
}

impl DecodedConfig {
    /// The first capability (standard or extended) whose fields match.
    pub fn find_fields<T>(&self, f: impl Fn(&CapabilityFields) -> Option<&T>) -> Option<&T> {
        self.capabilities
            .iter()
            .chain(self.extended_capabilities.iter())
            .filter_map(|c| c.fields.as_ref())
            .find_map(f)
    }

    /// Whether the device has a PCI Express capability.
    pub fn is_pcie(&self) -> bool {
        self.capabilities.iter().any(|c| c.id == u16::from(id::PCIE))
    }
}

/// Decodes an image without BAR sizes.
pub fn decode(bytes: &[u8]) -> Result<DecodedConfig, DecodeError> {
    decode_with(bytes, &DecodeOptions::default())
}

/// Decodes an image; BAR and ROM sizes come from `opts`. Fails only when the image is
/// shorter than the 64-byte header.
pub fn decode_with(bytes: &[u8], opts: &DecodeOptions) -> Result<DecodedConfig, DecodeError> {
    let cs = ConfigSpace::new(bytes);
    if cs.len() < 64 {
        return Err(DecodeError {
            what: "config space image",
            input: format!("{} bytes", bytes.len()),
            reason: "shorter than the 64-byte header; read the whole sysfs `config` file".into(),
        });
    }
    let r8 = |o| cs.read_u8(o).unwrap_or(0);
    let r16 = |o| cs.read_u16(o).unwrap_or(0);
    let r32 = |o| cs.read_u32(o).unwrap_or(0);
    let mut diagnostics = Vec::new();
    let mut not_decoded = Vec::new();
    let ht = r8(0x0e);
    if r16(0x00) == 0xffff {
        diagnostics.push(Diagnostic {
            kind: DiagnosticKind::AllOnes,
            offset: Some(0),
            message: "vendor id reads 0xffff: the device is absent, powered off (D3cold) or in \
                      reset; the rest of the image is meaningless"
                .into(),
        });
    }
    let bars = |slots: u8, diags: &mut Vec<Diagnostic>| {
        let mut out = Vec::new();
        let mut i = 0;
        while i < slots {
            let v = r32(0x10 + u16::from(i) * 4);
            if v & 1 == 0 && (v >> 1) & 3 == 2 && i + 1 == slots {
                diags.push(Diagnostic {
                    kind: DiagnosticKind::BadRegister,
                    offset: Some(0x10 + u16::from(i) * 4),
                    message: format!(
                        "BAR{i} says 64-bit but is the last BAR slot; decoded as 32-bit"
                    ),
                });
            }
            let (bar, used) = decode_bar_at(&cs, 0x10, i, slots, opts.bar_sizes[usize::from(i)]);
            out.extend(bar);
            i += used;
        }
        out
    };
    let rom = |off: u16| {
        let v = r32(off);
        let size = opts.rom_size.filter(|s| *s > 0);
        (v & !1 != 0 || size.is_some()).then(|| RomBar {
            address: u64::from(v & 0xffff_f800),
            enabled: v & 1 != 0,
            size,
        })
    };
    let header = match ht & 0x7f {
        0 => Header::Endpoint(Type0 {
            bars: bars(6, &mut diagnostics),
            subsystem_vendor_id: r16(0x2c),
            subsystem_id: r16(0x2e),
            expansion_rom: rom(0x30),
            interrupt: interrupt(&cs),
            min_gnt: r8(0x3e),
            max_lat: r8(0x3f),
        }),
        1 => {
            let io_lo = r8(0x1c);
            let io_hi = r8(0x1d);
            let io32 = io_lo & 0xf == 1;
            let (mut io_base, mut io_limit) =
                (u64::from(io_lo & 0xf0) << 8, (u64::from(io_hi & 0xf0) << 8) | 0xfff);
            if io32 {
                io_base |= u64::from(r16(0x30)) << 16;
                io_limit |= u64::from(r16(0x32)) << 16;
            }
            let mem_base = u64::from(r16(0x20) & 0xfff0) << 16;
            let mem_limit = (u64::from(r16(0x22) & 0xfff0) << 16) | 0xf_ffff;
            let pf_lo = r16(0x24);
            let pf64 = pf_lo & 0xf == 1;
            let mut pf_base = u64::from(pf_lo & 0xfff0) << 16;
            let mut pf_limit = (u64::from(r16(0x26) & 0xfff0) << 16) | 0xf_ffff;
            if pf64 {
                pf_base |= u64::from(r32(0x28)) << 32;
                pf_limit |= u64::from(r32(0x2c)) << 32;
            }
            let bctl = r16(0x3e);
            Header::Bridge(Type1 {
                bars: bars(2, &mut diagnostics),
                primary_bus: r8(0x18),
                secondary_bus: r8(0x19),
                subordinate_bus: r8(0x1a),
                secondary_latency: r8(0x1b),
                io_window: Window {
                    base: io_base,
                    limit: io_limit,
                    enabled: io_base <= io_limit,
                    width: if io32 { 32 } else { 16 },
                },
                memory_window: Window {
                    base: mem_base,
                    limit: mem_limit,
                    enabled: mem_base <= mem_limit,
                    width: 32,
                },
                prefetchable_window: Window {
                    base: pf_base,
                    limit: pf_limit,
                    enabled: pf_base <= pf_limit,
                    width: if pf64 { 64 } else { 32 },
                },
                secondary_status: r16(0x1e),
                expansion_rom: rom(0x38),
                interrupt: interrupt(&cs),
                bridge_control: bctl,
                secondary_bus_reset: bctl & (1 << 6) != 0,
                vga_enable: bctl & (1 << 3) != 0,
            })
        }
        n => {
            not_decoded.push(format!("header type {n} (only types 0 and 1 are decoded)"));
            Header::Other { header_type: n }
        }
    };

    let status = Status::from_raw(r16(0x06));
    let mut capabilities = Vec::new();
    for item in cs.capabilities() {
        match item {
            Ok(raw) => capabilities.push(decode_capability(&cs, &raw)),
            Err(d) if d.kind == DiagnosticKind::Truncated && capabilities.is_empty() => {
                not_decoded.push(format!(
                    "capabilities: the image has only {} bytes (sysfs gives 64 bytes of config \
                     to non-root readers; run as root for the full image)",
                    cs.len()
                ));
            }
            Err(d) => diagnostics.push(d),
        }
    }
    let mut extended_capabilities = Vec::new();
    for item in cs.extended_capabilities() {
        match item {
            Ok(raw) => extended_capabilities.push(decode_capability(&cs, &raw)),
            Err(d) => diagnostics.push(d),
        }
    }
    for c in capabilities.iter().chain(extended_capabilities.iter()) {
        if let Some(CapabilityFields::Truncated { needed, available }) = &c.fields {
            not_decoded.push(format!(
                "{} at {:#x}: needs {needed} bytes, the image holds {available}",
                c.name.unwrap_or("capability"),
                c.offset
            ));
        }
    }
    let is_pcie = capabilities.iter().any(|c| c.id == u16::from(id::PCIE));
    if is_pcie && cs.len() <= 256 {
        not_decoded.push(format!(
            "extended capabilities: the image has {} bytes, extended config space (0x100-0xfff) \
             is missing{}",
            cs.len(),
            if cs.len() < 256 {
                " (read as root)"
            } else {
                " (the kernel has no extended config access to this device, e.g. no MMCONFIG)"
            }
        ));
    }

    Ok(DecodedConfig {
        image_length: cs.len(),
        vendor_id: r16(0x00),
        device_id: r16(0x02),
        command: Command::from_raw(r16(0x04)),
        status,
        revision: r8(0x08),
        class: ClassCode {
            code: (u32::from(r8(0x0b)) << 16) | (u32::from(r8(0x0a)) << 8) | u32::from(r8(0x09)),
            base: r8(0x0b),
            sub: r8(0x0a),
            prog_if: r8(0x09),
        },
        cache_line_size: r8(0x0c),
        latency_timer: r8(0x0d),
        header_type: ht & 0x7f,
        multi_function: ht & 0x80 != 0,
        bist: r8(0x0f),
        header,
        capabilities,
        extended_capabilities,
        diagnostics,
        not_decoded,
    })
}

impl DecodeOptions {
    /// BAR and ROM sizes from parsed sysfs `resource` lines.
    pub fn from_resource(lines: &[ResourceLine]) -> Self {
        let mut o = DecodeOptions::default();
        for (i, l) in lines.iter().take(6).enumerate() {
            o.bar_sizes[i] = Some(l.size()).filter(|s| *s > 0);
        }
        o.rom_size = lines.get(6).map(|l| l.size()).filter(|s| *s > 0);
        o
    }
}

/// The raw capability headers of both chains plus the diagnostics, without field decode.
pub fn walk_chains(cs: &ConfigSpace<'_>) -> (Vec<RawCapability>, Vec<Diagnostic>) {
    let mut caps = Vec::new();
    let mut diags = Vec::new();
    for item in cs.capabilities().chain(cs.extended_capabilities()) {
        match item {
            Ok(c) => caps.push(c),
            Err(d) => diags.push(d),
        }
    }
    (caps, diags)
}
