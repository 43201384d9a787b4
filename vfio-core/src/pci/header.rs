//! The 64-byte header: command and status, class, and the layout-specific part (type 0
//! endpoint, type 1 PCI-to-PCI bridge, type 2 CardBus bridge) with BARs and windows.

use super::space::{decode_bar_at, ConfigSpace, DecodedBar, Diagnostic, DiagnosticKind};

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

/// Type 2 (CardBus bridge) header fields. Its capabilities pointer is at 0x14.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Type2 {
    /// The CardBus socket / ExCa registers BAR (0x10), when implemented.
    pub bars: Vec<DecodedBar>,
    /// Secondary status (0x16, raw).
    pub secondary_status: u16,
    /// PCI bus number (0x18).
    pub primary_bus: u8,
    /// CardBus bus number (0x19).
    pub cardbus_bus: u8,
    /// Subordinate bus number (0x1a).
    pub subordinate_bus: u8,
    /// CardBus latency timer (0x1b).
    pub cardbus_latency: u8,
    /// Memory windows 0 and 1 (0x1c-0x2b); `prefetchable` from the bridge control.
    pub memory_windows: Vec<CardBusWindow>,
    /// I/O windows 0 and 1 (0x2c-0x3b).
    pub io_windows: Vec<CardBusWindow>,
    /// Interrupt pin and line.
    pub interrupt: Interrupt,
    /// Bridge control (0x3e, raw).
    pub bridge_control: u16,
    /// Bridge control: CardBus reset asserted.
    pub cardbus_reset: bool,
    /// Subsystem vendor id (0x40), when the image holds it.
    pub subsystem_vendor_id: Option<u16>,
    /// Subsystem id (0x42), when the image holds it.
    pub subsystem_id: Option<u16>,
    /// 16-bit legacy mode base address (0x44), when the image holds it.
    pub legacy_mode_base: Option<u32>,
}

/// One CardBus bridge window.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CardBusWindow {
    /// First address.
    pub base: u32,
    /// Last address.
    pub limit: u32,
    /// Whether the window is open (base <= limit).
    pub enabled: bool,
    /// Prefetchable (memory windows only).
    pub prefetchable: bool,
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
    /// Type 2: a CardBus bridge.
    #[cfg_attr(feature = "serde", serde(rename = "cardbus"))]
    CardBus(Type2),
    /// An undefined layout (3-127): not decoded.
    Other {
        /// The layout number.
        header_type: u8,
    },
}

/// Where the layout of header type `ht` keeps its capabilities pointer: 0x14 for a
/// CardBus bridge, 0x34 for the others.
pub fn capabilities_pointer(header_type: u8) -> u16 {
    if header_type & 0x7f == 2 {
        0x14
    } else {
        0x34
    }
}

/// The BARs of a header with `slots` BAR slots (6, 2 or 1), diagnosing a 64-bit BAR in
/// the last slot.
fn bars(
    cs: &ConfigSpace<'_>,
    slots: u8,
    sizes: &[Option<u64>; 6],
    diags: &mut Vec<Diagnostic>,
) -> Vec<DecodedBar> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < slots {
        let off = 0x10 + u16::from(i) * 4;
        let v = cs.read_u32(off).unwrap_or(0);
        if v & 1 == 0 && (v >> 1) & 3 == 2 && i + 1 == slots {
            diags.push(Diagnostic {
                kind: DiagnosticKind::BadRegister,
                offset: Some(off),
                message: format!("BAR{i} says 64-bit but is the last BAR slot; decoded as 32-bit"),
            });
        }
        let (bar, used) = decode_bar_at(cs, 0x10, i, slots, sizes[usize::from(i)]);
        out.extend(bar);
        i += used;
    }
    out
}

/// The expansion ROM BAR at `off`: listed when the register is not zero (a ROM BAR of
/// 0x1 is implemented but unassigned, as lspci lists it) or a size is known.
fn rom(cs: &ConfigSpace<'_>, off: u16, size: Option<u64>) -> Option<RomBar> {
    let v = cs.read_u32(off).unwrap_or(0);
    let size = size.filter(|s| *s > 0);
    (v != 0 || size.is_some()).then(|| RomBar {
        address: u64::from(v & 0xffff_f800),
        enabled: v & 1 != 0,
        size,
    })
}

/// Decodes the layout-specific part of the header. Undefined layouts are listed in
/// `not_decoded`.
pub(crate) fn decode_header(
    cs: &ConfigSpace<'_>,
    bar_sizes: &[Option<u64>; 6],
    rom_size: Option<u64>,
    diagnostics: &mut Vec<Diagnostic>,
    not_decoded: &mut Vec<String>,
) -> Header {
    let r8 = |o| cs.read_u8(o).unwrap_or(0);
    let r16 = |o| cs.read_u16(o).unwrap_or(0);
    match r8(0x0e) & 0x7f {
        0 => Header::Endpoint(Type0 {
            bars: bars(cs, 6, bar_sizes, diagnostics),
            subsystem_vendor_id: r16(0x2c),
            subsystem_id: r16(0x2e),
            expansion_rom: rom(cs, 0x30, rom_size),
            interrupt: interrupt(cs),
            min_gnt: r8(0x3e),
            max_lat: r8(0x3f),
        }),
        1 => Header::Bridge(type1(cs, bars(cs, 2, bar_sizes, diagnostics), rom_size)),
        2 => Header::CardBus(type2(cs, bars(cs, 1, bar_sizes, diagnostics))),
        n => {
            not_decoded.push(format!("header type {n} (only types 0, 1 and 2 are defined)"));
            Header::Other { header_type: n }
        }
    }
}

/// A PCI-to-PCI bridge's windows, buses and bridge control.
fn type1(cs: &ConfigSpace<'_>, bars: Vec<DecodedBar>, rom_size: Option<u64>) -> Type1 {
    let r8 = |o| cs.read_u8(o).unwrap_or(0);
    let r16 = |o| cs.read_u16(o).unwrap_or(0);
    let r32 = |o| cs.read_u32(o).unwrap_or(0);
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
    let window = |base, limit, width| Window { base, limit, enabled: base <= limit, width };
    Type1 {
        bars,
        primary_bus: r8(0x18),
        secondary_bus: r8(0x19),
        subordinate_bus: r8(0x1a),
        secondary_latency: r8(0x1b),
        io_window: window(io_base, io_limit, if io32 { 32 } else { 16 }),
        memory_window: window(mem_base, mem_limit, 32),
        prefetchable_window: window(pf_base, pf_limit, if pf64 { 64 } else { 32 }),
        secondary_status: r16(0x1e),
        expansion_rom: rom(cs, 0x38, rom_size),
        interrupt: interrupt(cs),
        bridge_control: bctl,
        secondary_bus_reset: bctl & (1 << 6) != 0,
        vga_enable: bctl & (1 << 3) != 0,
    }
}

/// A CardBus bridge's buses, windows and bridge control (and, when the image holds
/// them, the subsystem ids and legacy base above the 64-byte header).
fn type2(cs: &ConfigSpace<'_>, bars: Vec<DecodedBar>) -> Type2 {
    let r8 = |o| cs.read_u8(o).unwrap_or(0);
    let r16 = |o| cs.read_u16(o).unwrap_or(0);
    let r32 = |o| cs.read_u32(o).unwrap_or(0);
    let bctl = r16(0x3e);
    let memory_windows = (0..2u16)
        .map(|i| {
            let base = r32(0x1c + 8 * i);
            let limit = r32(0x20 + 8 * i).wrapping_add(0xfff);
            let prefetchable = bctl & (0x100 << i) != 0;
            CardBusWindow { base, limit, enabled: base <= limit, prefetchable }
        })
        .collect();
    let io_windows = (0..2u16)
        .map(|i| {
            let (mut base, mut limit) = (r32(0x2c + 8 * i), r32(0x30 + 8 * i));
            if base & 1 == 0 {
                base &= 0xffff;
                limit &= 0xffff;
            }
            let (base, limit) = (base & !3, (limit & !3).wrapping_add(3));
            CardBusWindow { base, limit, enabled: base <= limit, prefetchable: false }
        })
        .collect();
    Type2 {
        bars,
        secondary_status: r16(0x16),
        primary_bus: r8(0x18),
        cardbus_bus: r8(0x19),
        subordinate_bus: r8(0x1a),
        cardbus_latency: r8(0x1b),
        memory_windows,
        io_windows,
        interrupt: interrupt(cs),
        bridge_control: bctl,
        cardbus_reset: bctl & (1 << 6) != 0,
        subsystem_vendor_id: cs.read_u16(0x40),
        subsystem_id: cs.read_u16(0x42),
        legacy_mode_base: cs.read_u32(0x44),
    }
}
