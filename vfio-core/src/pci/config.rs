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
use super::header::decode_header;
pub use super::header::{
    capabilities_pointer, CardBusWindow, ClassCode, Command, Header, Interrupt, RomBar, Status,
    Type0, Type1, Type2, Window,
};
pub use super::resource::{parse_sysfs_resource, ResourceLine};
pub use super::space::{BarKind, ConfigSpace, DecodedBar, Diagnostic, DiagnosticKind};

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
    let header =
        decode_header(&cs, &opts.bar_sizes, opts.rom_size, &mut diagnostics, &mut not_decoded);

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
    let has_ext = cs.has_extended_space();
    let extended = cs.extended_capabilities().filter(|_| has_ext);
    for item in extended {
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

/// The raw capability headers of both chains plus the diagnostics, without field decode
/// (the extended chain only when [`ConfigSpace::has_extended_space`]).
pub fn walk_chains(cs: &ConfigSpace<'_>) -> (Vec<RawCapability>, Vec<Diagnostic>) {
    let mut caps = Vec::new();
    let mut diags = Vec::new();
    let has_ext = cs.has_extended_space();
    let extended = cs.extended_capabilities().filter(|_| has_ext);
    for item in cs.capabilities().chain(extended) {
        match item {
            Ok(c) => caps.push(c),
            Err(d) => diags.push(d),
        }
    }
    (caps, diags)
}
