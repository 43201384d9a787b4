//! The config-space view ([`ConfigSpace`]) and what every decoder over it shares: the
//! diagnostics of a damaged image and the BAR decoder (used by the header and by SR-IOV's
//! VF BARs). The capability chains are walked in `caps`, the full decode is in `config`.

use crate::bytes::{le_u16, le_u32};

/// A read-only view over a config-space image.
#[derive(Debug, Clone, Copy)]
pub struct ConfigSpace<'a> {
    bytes: &'a [u8],
}

impl<'a> ConfigSpace<'a> {
    /// A view over `bytes` (any length; reads past the end give `None`).
    pub fn new(bytes: &'a [u8]) -> Self {
        // Config space is at most 4 KiB; anything after is not config space.
        ConfigSpace { bytes: &bytes[..bytes.len().min(4096)] }
    }

    /// The image's length in bytes (at most 4096).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the image is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The byte at `off`.
    pub fn read_u8(&self, off: u16) -> Option<u8> {
        self.bytes.get(usize::from(off)).copied()
    }

    /// The little-endian 16-bit value at `off`.
    pub fn read_u16(&self, off: u16) -> Option<u16> {
        le_u16(self.bytes, usize::from(off))
    }

    /// The little-endian 32-bit value at `off`.
    pub fn read_u32(&self, off: u16) -> Option<u32> {
        le_u32(self.bytes, usize::from(off))
    }

    /// Vendor id (0x00).
    pub fn vendor_id(&self) -> Option<u16> {
        self.read_u16(0x00)
    }

    /// Device id (0x02).
    pub fn device_id(&self) -> Option<u16> {
        self.read_u16(0x02)
    }
}

/// What kind of damage a diagnostic reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum DiagnosticKind {
    /// A capability pointer into the header (standard) or into the first 256 bytes
    /// (extended).
    PointerIntoHeader,
    /// A pointer beyond the end of a full-size image.
    PointerOutOfRange,
    /// Something lies beyond the end of a short image.
    Truncated,
    /// A pointer to a capability already visited.
    Loop,
    /// A standard capability with id 0xff.
    InvalidId,
    /// An extended capability header of 0xffffffff.
    BrokenHeader,
    /// A register that does not make sense (a 64-bit BAR in the last slot, ...).
    BadRegister,
    /// The header reads as all ones: the device is absent, powered off or in reset.
    AllOnes,
}

/// A problem found while decoding; decoding goes on as far as it can.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Diagnostic {
    /// What kind of problem.
    pub kind: DiagnosticKind,
    /// Where (the offset of the register or capability), when known.
    pub offset: Option<u16>,
    /// One line for a human.
    pub message: String,
}

/// What a BAR maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum BarKind {
    /// I/O ports.
    Io,
    /// 32-bit memory.
    Memory32,
    /// Memory below 1 MiB (legacy type 1).
    #[cfg_attr(feature = "serde", serde(rename = "memory_below_1m"))]
    Memory1M,
    /// 64-bit memory (takes two BAR slots).
    Memory64,
}

/// A decoded base address register.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DecodedBar {
    /// BAR index (0-5).
    pub index: u8,
    /// What it maps.
    pub kind: BarKind,
    /// Prefetchable memory.
    pub prefetchable: bool,
    /// The address programmed.
    pub address: u64,
    /// Size in bytes when known from outside config space (sysfs `resource`, VFIO).
    pub size: Option<u64>,
}

/// Decodes the BAR at slot `index` of a BAR array starting at `base`, with `slots` slots.
/// Returns the BAR (`None` when unimplemented: zero and no size; an I/O BAR reading 0x1
/// is implemented and unassigned, and listed) and how many slots it
/// uses (2 for a 64-bit BAR).
pub(crate) fn decode_bar_at(
    cs: &ConfigSpace<'_>,
    base: u16,
    index: u8,
    slots: u8,
    size: Option<u64>,
) -> (Option<DecodedBar>, u8) {
    let off = base + u16::from(index) * 4;
    let Some(v) = cs.read_u32(off) else { return (None, 1) };
    let size = size.filter(|s| *s > 0);
    if v & 1 == 1 {
        let bar = DecodedBar {
            index,
            kind: BarKind::Io,
            prefetchable: false,
            address: u64::from(v & !3),
            size,
        };
        // Bit 0 set: an implemented I/O BAR, listed even when unassigned (as lspci).
        return (Some(bar), 1);
    }
    let prefetchable = v & 8 != 0;
    let (kind, address, used) = match (v >> 1) & 3 {
        2 if index + 1 < slots => {
            let hi = cs.read_u32(off + 4).unwrap_or(0);
            (BarKind::Memory64, u64::from(v & !0xf) | (u64::from(hi) << 32), 2)
        }
        1 => (BarKind::Memory1M, u64::from(v & !0xf), 1),
        _ => (BarKind::Memory32, u64::from(v & !0xf), 1),
    };
    let bar = DecodedBar { index, kind, prefetchable, address, size };
    ((v != 0 || size.is_some()).then_some(bar), used)
}
