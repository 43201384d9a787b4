//! PCI capabilities: the standard chain (pointer at 0x34) and the PCI Express extended
//! chain (from 0x100), their names, and field decoders for the capabilities that matter
//! to passthrough (PM, MSI, MSI-X, PCIe, AER, ACS, ARI, ATS, PRI, PASID, SR-IOV,
//! Resizable BAR, DSN, vendor-specific and DVSEC headers).
//!
//! Walking never fails: a damaged chain ends with a [`Diagnostic`] item so that
//! everything before the damage still decodes.

use super::config::{decode_bar_at, Bar, ConfigSpace, Diagnostic, DiagnosticKind};

/// First offset of the extended capability chain.
pub const EXT_CAP_START: u16 = 0x100;
/// Size of the standard config header; capabilities live above it.
pub const HEADER_SIZE: u16 = 0x40;

/// Standard capability ids.
pub mod id {
    /// Power Management.
    pub const PM: u8 = 0x01;
    /// Message Signalled Interrupts.
    pub const MSI: u8 = 0x05;
    /// Vendor specific.
    pub const VENDOR: u8 = 0x09;
    /// PCI Express.
    pub const PCIE: u8 = 0x10;
    /// MSI-X.
    pub const MSIX: u8 = 0x11;
}

/// Extended capability ids.
pub mod ext_id {
    /// Advanced Error Reporting.
    pub const AER: u16 = 0x01;
    /// Device Serial Number.
    pub const DSN: u16 = 0x03;
    /// Vendor-specific extended capability.
    pub const VSEC: u16 = 0x0b;
    /// Access Control Services.
    pub const ACS: u16 = 0x0d;
    /// Alternative Routing-ID Interpretation.
    pub const ARI: u16 = 0x0e;
    /// Address Translation Services.
    pub const ATS: u16 = 0x0f;
    /// Single Root I/O Virtualization.
    pub const SRIOV: u16 = 0x10;
    /// Page Request Interface.
    pub const PRI: u16 = 0x13;
    /// Resizable BAR.
    pub const REBAR: u16 = 0x15;
    /// Process Address Space ID.
    pub const PASID: u16 = 0x1b;
    /// Designated vendor-specific extended capability.
    pub const DVSEC: u16 = 0x23;
}

/// The name of a standard capability id, `None` for ids the specification does not define.
pub fn cap_name(id: u8) -> Option<&'static str> {
    Some(match id {
        0x00 => "Null",
        0x01 => "Power Management",
        0x02 => "AGP",
        0x03 => "Vital Product Data",
        0x04 => "Slot Identification",
        0x05 => "MSI",
        0x06 => "CompactPCI Hot Swap",
        0x07 => "PCI-X",
        0x08 => "HyperTransport",
        0x09 => "Vendor Specific",
        0x0a => "Debug Port",
        0x0b => "CompactPCI Central Resource Control",
        0x0c => "Hot-plug",
        0x0d => "Bridge Subsystem Vendor/Device",
        0x0e => "AGP 3.0",
        0x0f => "Secure Device",
        0x10 => "PCI Express",
        0x11 => "MSI-X",
        0x12 => "SATA",
        0x13 => "Advanced Features (FLR)",
        0x14 => "Enhanced Allocation",
        _ => return None,
    })
}

/// The name of an extended capability id, `None` for ids the specification does not define.
pub fn ext_cap_name(id: u16) -> Option<&'static str> {
    Some(match id {
        0x00 => "Null",
        0x01 => "Advanced Error Reporting",
        0x02 | 0x09 => "Virtual Channel",
        0x03 => "Device Serial Number",
        0x04 => "Power Budgeting",
        0x05 => "Root Complex Link Declaration",
        0x06 => "Root Complex Internal Link Control",
        0x07 => "Root Complex Event Collector",
        0x08 => "Multi-Function Virtual Channel",
        0x0a => "Root Complex Register Block",
        0x0b => "Vendor Specific",
        0x0c => "Configuration Access Correlation",
        0x0d => "Access Control Services",
        0x0e => "Alternative Routing-ID Interpretation",
        0x0f => "Address Translation Services",
        0x10 => "SR-IOV",
        0x11 => "MR-IOV",
        0x12 => "Multicast",
        0x13 => "Page Request Interface",
        0x14 => "AMD Reserved",
        0x15 => "Resizable BAR",
        0x16 => "Dynamic Power Allocation",
        0x17 => "TPH Requester",
        0x18 => "Latency Tolerance Reporting",
        0x19 => "Secondary PCI Express",
        0x1a => "Protocol Multiplexing",
        0x1b => "PASID",
        0x1c => "LN Requester",
        0x1d => "Downstream Port Containment",
        0x1e => "L1 PM Substates",
        0x1f => "Precision Time Measurement",
        0x20 => "M-PCIe",
        0x21 => "FRS Queueing",
        0x22 => "Readiness Time Reporting",
        0x23 => "Designated Vendor-Specific",
        0x24 => "VF Resizable BAR",
        0x25 => "Data Link Feature",
        0x26 => "Physical Layer 16.0 GT/s",
        0x27 => "Lane Margining at the Receiver",
        0x28 => "Hierarchy ID",
        0x29 => "Native PCIe Enclosure Management",
        0x2a => "Physical Layer 32.0 GT/s",
        0x2e => "Data Object Exchange",
        0x2f => "Device 3",
        0x30 => "Integrity and Data Encryption",
        0x31 => "Physical Layer 64.0 GT/s",
        _ => return None,
    })
}

/// One capability header found in a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RawCapability {
    /// Offset of the capability in config space.
    pub offset: u16,
    /// Capability id (8 bits for standard, 16 bits for extended capabilities).
    pub id: u16,
    /// Capability version (extended capabilities only; 0 for standard ones).
    pub version: u8,
    /// The next pointer as read (already masked to a dword boundary), 0 at the end.
    pub next: u16,
    /// Whether this is an extended (PCIe, from 0x100) capability.
    pub extended: bool,
}

impl RawCapability {
    /// The capability's name, `None` for an id the specification does not define.
    pub fn name(&self) -> Option<&'static str> {
        if self.extended {
            ext_cap_name(self.id)
        } else {
            cap_name(self.id as u8)
        }
    }
}

/// Visited offsets, one bit per dword of a 4 KiB config space.
#[derive(Debug, Clone, Default)]
struct Seen([u64; 16]);

impl Seen {
    /// Marks `off`; returns whether it was marked before.
    fn visit(&mut self, off: u16) -> bool {
        let dw = usize::from(off / 4) & 0x3ff;
        let (w, b) = (dw / 64, dw % 64);
        let before = self.0[w] & (1 << b) != 0;
        self.0[w] |= 1 << b;
        before
    }
}

/// Iterator over the standard capability chain. Items are capabilities, or one final
/// diagnostic when the chain is damaged. Built by [`ConfigSpace::capabilities`].
#[derive(Debug, Clone)]
pub struct Capabilities<'a> {
    cs: ConfigSpace<'a>,
    next: u16,
    prev: Option<u16>,
    seen: Seen,
    done: bool,
}

impl<'a> Capabilities<'a> {
    pub(crate) fn new(cs: ConfigSpace<'a>) -> Self {
        let mut it = Capabilities { cs, next: 0, prev: None, seen: Seen::default(), done: true };
        let has_list = cs.read_u16(0x06).map(|s| s & (1 << 4) != 0).unwrap_or(false);
        if let (true, Some(p)) = (has_list, cs.read_u8(0x34)) {
            it.next = u16::from(p & !3);
            it.done = it.next == 0;
        }
        it
    }

    fn fail(
        &mut self,
        kind: DiagnosticKind,
        message: String,
    ) -> Option<Result<RawCapability, Diagnostic>> {
        self.done = true;
        let offset = Some(self.prev.unwrap_or(0x34));
        Some(Err(Diagnostic { kind, offset, message }))
    }
}

impl Iterator for Capabilities<'_> {
    type Item = Result<RawCapability, Diagnostic>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let ptr = self.next;
        let from = match self.prev {
            Some(p) => format!("capability at {p:#04x}"),
            None => "capabilities pointer (0x34)".to_string(),
        };
        if ptr < HEADER_SIZE {
            return self.fail(
                DiagnosticKind::PointerIntoHeader,
                format!("{from} points to {ptr:#04x}, inside the 64-byte header; chain ends here"),
            );
        }
        if usize::from(ptr) + 2 > self.cs.len() {
            let kind = if self.cs.len() < 256 {
                DiagnosticKind::Truncated
            } else {
                DiagnosticKind::PointerOutOfRange
            };
            return self.fail(
                kind,
                format!(
                    "{from} points to {ptr:#04x}, beyond the {} bytes of the image{}",
                    self.cs.len(),
                    if self.cs.len() < 256 {
                        " (sysfs gives only 64 bytes to non-root readers: run as root)"
                    } else {
                        ""
                    }
                ),
            );
        }
        if self.seen.visit(ptr) {
            return self.fail(
                DiagnosticKind::Loop,
                format!("{from} points back to {ptr:#04x}, already visited: the chain loops"),
            );
        }
        let id = self.cs.read_u8(ptr).unwrap_or(0xff);
        if id == 0xff {
            return self.fail(
                DiagnosticKind::InvalidId,
                format!(
                    "capability at {ptr:#04x} has id 0xff (the device reads as all ones: \
                     powered down, in reset or gone); chain ends here"
                ),
            );
        }
        let next = u16::from(self.cs.read_u8(ptr + 1).unwrap_or(0) & !3);
        self.prev = Some(ptr);
        self.next = next;
        self.done = next == 0;
        Some(Ok(RawCapability {
            offset: ptr,
            id: u16::from(id),
            version: 0,
            next,
            extended: false,
        }))
    }
}

/// Iterator over the extended capability chain from 0x100. Items are capabilities, or
/// one final diagnostic when the chain is damaged. Built by
/// [`ConfigSpace::extended_capabilities`].
#[derive(Debug, Clone)]
pub struct ExtendedCapabilities<'a> {
    cs: ConfigSpace<'a>,
    next: u16,
    prev: Option<u16>,
    seen: Seen,
    done: bool,
}

impl<'a> ExtendedCapabilities<'a> {
    pub(crate) fn new(cs: ConfigSpace<'a>) -> Self {
        let done = cs.len() < usize::from(EXT_CAP_START) + 4;
        ExtendedCapabilities { cs, next: EXT_CAP_START, prev: None, seen: Seen::default(), done }
    }

    fn fail(
        &mut self,
        kind: DiagnosticKind,
        message: String,
    ) -> Option<Result<RawCapability, Diagnostic>> {
        self.done = true;
        let offset = Some(self.prev.unwrap_or(EXT_CAP_START));
        Some(Err(Diagnostic { kind, offset, message }))
    }
}

impl Iterator for ExtendedCapabilities<'_> {
    type Item = Result<RawCapability, Diagnostic>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let ptr = self.next;
        let from = match self.prev {
            Some(p) => format!("extended capability at {p:#05x}"),
            None => "extended chain start".to_string(),
        };
        if ptr < EXT_CAP_START {
            return self.fail(
                DiagnosticKind::PointerIntoHeader,
                format!(
                    "{from} points to {ptr:#05x}, inside the standard 256-byte space; chain ends here"
                ),
            );
        }
        if usize::from(ptr) + 4 > self.cs.len() {
            return self.fail(
                if self.cs.len() < 4096 {
                    DiagnosticKind::Truncated
                } else {
                    DiagnosticKind::PointerOutOfRange
                },
                format!(
                    "{from} points to {ptr:#05x}, beyond the {} bytes of the image",
                    self.cs.len()
                ),
            );
        }
        let header = self.cs.read_u32(ptr).unwrap_or(u32::MAX);
        if header == 0 && self.prev.is_none() {
            self.done = true;
            return None;
        }
        if header == u32::MAX {
            if self.prev.is_none() && self.cs.find_capability(id::PCIE).is_none() {
                // Conventional PCI device read through an ECAM window: nothing there.
                self.done = true;
                return None;
            }
            return self.fail(
                DiagnosticKind::BrokenHeader,
                format!(
                    "extended capability header at {ptr:#05x} reads 0xffffffff (extended config \
                     space not accessible, or the device stopped answering); chain ends here"
                ),
            );
        }
        if self.seen.visit(ptr) {
            return self.fail(
                DiagnosticKind::Loop,
                format!("{from} points back to {ptr:#05x}, already visited: the chain loops"),
            );
        }
        let id = (header & 0xffff) as u16;
        let version = ((header >> 16) & 0xf) as u8;
        let next = ((header >> 20) & !3) as u16;
        self.prev = Some(ptr);
        self.next = next;
        self.done = next == 0;
        Some(Ok(RawCapability { offset: ptr, id, version, next, extended: true }))
    }
}

/// A capability with its decoded fields.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Capability {
    /// Offset in config space.
    pub offset: u16,
    /// Capability id.
    pub id: u16,
    /// Version (extended capabilities; 0 for standard ones).
    pub version: u8,
    /// Whether this is an extended capability.
    pub extended: bool,
    /// The name, `null` for an id the specification does not define.
    pub name: Option<&'static str>,
    /// Decoded fields for the capabilities this crate decodes; `null` for the others.
    pub fields: Option<CapabilityFields>,
}

/// Decoded fields of one capability, tagged by `kind` in JSON.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "kind", rename_all = "snake_case"))]
#[allow(missing_docs)]
pub enum CapabilityFields {
    PowerManagement(PowerManagement),
    Msi(Msi),
    Msix(Msix),
    PciExpress(PciExpress),
    VendorSpecific(VendorSpecific),
    Aer(Aer),
    Acs(Acs),
    Ari(Ari),
    Ats(Ats),
    Pri(Pri),
    Pasid(Pasid),
    Sriov(Sriov),
    ResizableBar(ResizableBar),
    DeviceSerialNumber(DeviceSerialNumber),
    VendorSpecificExtended(VendorSpecificExtended),
    Dvsec(Dvsec),
    /// The capability's registers extend past the end of the image.
    Truncated {
        /// Bytes the decoder needs from the capability's offset.
        needed: u16,
        /// Bytes the image holds from that offset.
        available: u16,
    },
}

/// Power Management capability.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PowerManagement {
    /// PM specification version (PMC bits 0-2).
    pub version: u8,
    /// D1 supported.
    pub d1: bool,
    /// D2 supported.
    pub d2: bool,
    /// States PME can be signalled from (PMC bits 11-15: D0, D1, D2, D3hot, D3cold).
    pub pme_support: u8,
    /// No_Soft_Reset: set when D3hot to D0 keeps the device's state, so a PM reset does
    /// not reset it.
    pub no_soft_reset: bool,
    /// Current power state: "D0", "D1", "D2" or "D3hot".
    pub power_state: &'static str,
    /// PME enabled.
    pub pme_enabled: bool,
    /// PME status.
    pub pme_status: bool,
}

/// MSI capability.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Msi {
    /// MSI enabled.
    pub enabled: bool,
    /// Vectors the device can use (1, 2, 4, .. 32).
    pub vectors_capable: u32,
    /// Vectors enabled by software.
    pub vectors_enabled: u32,
    /// 64-bit message address.
    pub address_64bit: bool,
    /// Per-vector masking.
    pub per_vector_masking: bool,
    /// Message address as programmed.
    pub address: u64,
    /// Message data as programmed.
    pub data: u16,
}

/// MSI-X capability.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Msix {
    /// MSI-X enabled.
    pub enabled: bool,
    /// All vectors masked (function mask).
    pub function_mask: bool,
    /// Number of table entries.
    pub table_size: u16,
    /// BAR holding the vector table.
    pub table_bir: u8,
    /// Offset of the vector table in that BAR.
    pub table_offset: u32,
    /// BAR holding the pending bit array.
    pub pba_bir: u8,
    /// Offset of the PBA in that BAR.
    pub pba_offset: u32,
}

/// PCI Express capability.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PciExpress {
    /// Capability version (1 or 2).
    pub version: u8,
    /// Device/port type code.
    pub port_type_code: u8,
    /// Device/port type name ("Endpoint", "Root Port", ...).
    pub port_type: &'static str,
    /// Slot implemented (ports only).
    pub slot_implemented: bool,
    /// Interrupt message number.
    pub interrupt_message_number: u8,
    /// Device capabilities.
    pub device_capabilities: PcieDeviceCaps,
    /// Device control.
    pub device_control: PcieDeviceControl,
    /// Device status.
    pub device_status: PcieDeviceStatus,
    /// Link capabilities, when the image holds them.
    pub link_capabilities: Option<PcieLinkCaps>,
    /// Link control: ASPM control ("Disabled", "L0s", "L1", "L0s L1").
    pub link_aspm_control: Option<&'static str>,
    /// Link status, when the image holds it.
    pub link_status: Option<PcieLinkStatus>,
    /// Slot capabilities (physical slot number) when a slot is implemented.
    pub slot_number: Option<u16>,
}

/// PCIe device capabilities register.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PcieDeviceCaps {
    /// Max payload size supported, bytes.
    pub max_payload: u32,
    /// Function Level Reset capable.
    pub flr_capable: bool,
    /// Extended tag field supported.
    pub extended_tag: bool,
    /// Role-based error reporting.
    pub role_based_error_reporting: bool,
}

/// PCIe device control register.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PcieDeviceControl {
    /// Correctable error reporting enabled.
    pub correctable_error_reporting: bool,
    /// Non-fatal error reporting enabled.
    pub non_fatal_error_reporting: bool,
    /// Fatal error reporting enabled.
    pub fatal_error_reporting: bool,
    /// Unsupported request reporting enabled.
    pub unsupported_request_reporting: bool,
    /// Relaxed ordering enabled.
    pub relaxed_ordering: bool,
    /// No snoop enabled.
    pub no_snoop: bool,
    /// Max payload size, bytes.
    pub max_payload: u32,
    /// Max read request size, bytes.
    pub max_read_request: u32,
}

/// PCIe device status register.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PcieDeviceStatus {
    /// Correctable error detected.
    pub correctable_error: bool,
    /// Non-fatal error detected.
    pub non_fatal_error: bool,
    /// Fatal error detected.
    pub fatal_error: bool,
    /// Unsupported request detected.
    pub unsupported_request: bool,
    /// Aux power detected.
    pub aux_power: bool,
    /// Transactions pending.
    pub transactions_pending: bool,
}

/// PCIe link capabilities register.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PcieLinkCaps {
    /// Max link speed ("2.5GT/s", ...).
    pub max_speed: String,
    /// Max link width (lanes).
    pub max_width: u8,
    /// ASPM support ("None", "L0s", "L1", "L0s L1").
    pub aspm_support: &'static str,
    /// Port number.
    pub port_number: u8,
}

/// PCIe link status register.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PcieLinkStatus {
    /// Current link speed.
    pub speed: String,
    /// Negotiated width (lanes).
    pub width: u8,
    /// Link training in progress.
    pub training: bool,
    /// Data link layer active.
    pub dll_active: bool,
}

/// PCI vendor-specific capability header.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct VendorSpecific {
    /// Length byte of the capability.
    pub length: u8,
}

/// Advanced Error Reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Aer {
    /// Uncorrectable error status.
    pub uncorrectable_status: u32,
    /// Uncorrectable error mask.
    pub uncorrectable_mask: u32,
    /// Uncorrectable error severity.
    pub uncorrectable_severity: u32,
    /// Correctable error status.
    pub correctable_status: u32,
    /// Correctable error mask.
    pub correctable_mask: u32,
    /// First error pointer.
    pub first_error_pointer: u8,
    /// ECRC generation capable.
    pub ecrc_generation_capable: bool,
    /// ECRC check capable.
    pub ecrc_check_capable: bool,
}

/// ACS control bits (the same layout for capability and control).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct AcsBits {
    /// Source Validation.
    pub sv: bool,
    /// Translation Blocking.
    pub tb: bool,
    /// P2P Request Redirect.
    pub rr: bool,
    /// P2P Completion Redirect.
    pub cr: bool,
    /// Upstream Forwarding.
    pub uf: bool,
    /// P2P Egress Control.
    pub ec: bool,
    /// Direct Translated P2P.
    pub dt: bool,
}

impl AcsBits {
    fn from(v: u16) -> Self {
        AcsBits {
            sv: v & 1 != 0,
            tb: v & 2 != 0,
            rr: v & 4 != 0,
            cr: v & 8 != 0,
            uf: v & 0x10 != 0,
            ec: v & 0x20 != 0,
            dt: v & 0x40 != 0,
        }
    }
}

/// Access Control Services.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Acs {
    /// What the port can do.
    pub capabilities: AcsBits,
    /// What is enabled.
    pub control: AcsBits,
    /// Egress control vector size.
    pub egress_control_vector_size: u8,
}

/// Alternative Routing-ID Interpretation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Ari {
    /// MFVC function groups capable.
    pub mfvc: bool,
    /// ACS function groups capable.
    pub acs: bool,
    /// Next function number.
    pub next_function: u8,
}

/// Address Translation Services.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Ats {
    /// Invalidate queue depth (0 means 32).
    pub invalidate_queue_depth: u8,
    /// Page aligned requests.
    pub page_aligned_request: bool,
    /// ATS enabled.
    pub enabled: bool,
    /// Smallest translation unit.
    pub smallest_translation_unit: u8,
}

/// Page Request Interface.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Pri {
    /// PRI enabled.
    pub enabled: bool,
    /// Outstanding page request capacity.
    pub outstanding_capacity: u32,
    /// Outstanding page request allocation.
    pub outstanding_allocation: u32,
}

/// Process Address Space ID.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Pasid {
    /// Execute permission supported.
    pub exec_permission: bool,
    /// Privileged mode supported.
    pub privileged_mode: bool,
    /// Max PASID width, bits.
    pub max_pasid_width: u8,
    /// PASID enabled.
    pub enabled: bool,
}

/// Single Root I/O Virtualization.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Sriov {
    /// SR-IOV capabilities register.
    pub capabilities: u32,
    /// VF Enable.
    pub vf_enabled: bool,
    /// VF Memory Space Enable.
    pub vf_memory_enabled: bool,
    /// ARI Capable Hierarchy.
    pub ari_capable_hierarchy: bool,
    /// InitialVFs.
    pub initial_vfs: u16,
    /// TotalVFs.
    pub total_vfs: u16,
    /// NumVFs.
    pub num_vfs: u16,
    /// Function dependency link.
    pub function_dependency_link: u8,
    /// First VF offset (routing id).
    pub first_vf_offset: u16,
    /// VF stride.
    pub vf_stride: u16,
    /// VF device id.
    pub vf_device_id: u16,
    /// Supported page sizes (bit n: 4 KiB << n).
    pub supported_page_sizes: u32,
    /// System page size.
    pub system_page_size: u32,
    /// VF BARs.
    pub vf_bars: Vec<Bar>,
}

/// One resizable BAR entry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ResizableBarEntry {
    /// Which BAR.
    pub bar: u8,
    /// Current size, bytes.
    pub current_size: u64,
    /// Supported sizes, bytes, ascending.
    pub supported_sizes: Vec<u64>,
}

/// Resizable BAR.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ResizableBar {
    /// The entries.
    pub entries: Vec<ResizableBarEntry>,
}

/// Device Serial Number.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DeviceSerialNumber {
    /// The 64-bit serial number.
    pub serial: u64,
    /// Formatted as lspci prints it (`52-54-00-ff-ff-12-34-56`).
    pub text: String,
}

/// Vendor-specific extended capability header.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct VendorSpecificExtended {
    /// VSEC id.
    pub vsec_id: u16,
    /// VSEC revision.
    pub vsec_revision: u8,
    /// VSEC length, bytes.
    pub vsec_length: u16,
}

/// Designated vendor-specific extended capability header.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Dvsec {
    /// DVSEC vendor id.
    pub vendor_id: u16,
    /// DVSEC revision.
    pub revision: u8,
    /// DVSEC length, bytes.
    pub length: u16,
    /// DVSEC id.
    pub dvsec_id: u16,
}

/// The name of a PCIe device/port type code.
pub fn port_type_name(code: u8) -> &'static str {
    match code {
        0x0 => "Endpoint",
        0x1 => "Legacy Endpoint",
        0x4 => "Root Port",
        0x5 => "Upstream Port",
        0x6 => "Downstream Port",
        0x7 => "PCIe to PCI/PCI-X Bridge",
        0x8 => "PCI/PCI-X to PCIe Bridge",
        0x9 => "Root Complex Integrated Endpoint",
        0xa => "Root Complex Event Collector",
        _ => "Unknown",
    }
}

/// A link speed code as lspci prints it.
pub fn link_speed(code: u8) -> String {
    match code {
        1 => "2.5GT/s".into(),
        2 => "5GT/s".into(),
        3 => "8GT/s".into(),
        4 => "16GT/s".into(),
        5 => "32GT/s".into(),
        6 => "64GT/s".into(),
        _ => "unknown".into(),
    }
}

fn aspm(code: u32) -> &'static str {
    match code & 3 {
        0 => "None",
        1 => "L0s",
        2 => "L1",
        _ => "L0s L1",
    }
}

/// Decodes the fields of a capability. `None` for capabilities without a decoder.
pub fn decode_fields(cs: &ConfigSpace<'_>, cap: &RawCapability) -> Option<CapabilityFields> {
    let o = cap.offset;
    let short = |n: u16| -> Option<CapabilityFields> {
        let avail = cs.len().saturating_sub(usize::from(o));
        (avail < usize::from(n))
            .then_some(CapabilityFields::Truncated { needed: n, available: avail as u16 })
    };
    let b = |off: u16| cs.read_u8(o + off).unwrap_or(0);
    let w = |off: u16| cs.read_u16(o + off).unwrap_or(0);
    let d = |off: u16| cs.read_u32(o + off).unwrap_or(0);
    macro_rules! need {
        ($n:expr) => {
            if let Some(t) = short($n) {
                return Some(t);
            }
        };
    }
    if !cap.extended {
        match cap.id as u8 {
            id::PM => {
                need!(8);
                let pmc = w(2);
                let csr = w(4);
                Some(CapabilityFields::PowerManagement(PowerManagement {
                    version: (pmc & 7) as u8,
                    d1: pmc & (1 << 9) != 0,
                    d2: pmc & (1 << 10) != 0,
                    pme_support: (pmc >> 11) as u8,
                    no_soft_reset: csr & (1 << 3) != 0,
                    power_state: ["D0", "D1", "D2", "D3hot"][usize::from(csr & 3)],
                    pme_enabled: csr & (1 << 8) != 0,
                    pme_status: csr & (1 << 15) != 0,
                }))
            }
            id::MSI => {
                need!(4);
                let ctl = w(2);
                let is64 = ctl & (1 << 7) != 0;
                need!(if is64 { 14 } else { 10 });
                let (address, data) = if is64 {
                    (u64::from(d(4)) | (u64::from(d(8)) << 32), w(12))
                } else {
                    (u64::from(d(4)), w(8))
                };
                Some(CapabilityFields::Msi(Msi {
                    enabled: ctl & 1 != 0,
                    vectors_capable: 1 << ((ctl >> 1) & 7).min(5),
                    vectors_enabled: 1 << ((ctl >> 4) & 7).min(5),
                    address_64bit: is64,
                    per_vector_masking: ctl & (1 << 8) != 0,
                    address,
                    data,
                }))
            }
            id::MSIX => {
                need!(12);
                let ctl = w(2);
                let t = d(4);
                let p = d(8);
                Some(CapabilityFields::Msix(Msix {
                    enabled: ctl & (1 << 15) != 0,
                    function_mask: ctl & (1 << 14) != 0,
                    table_size: (ctl & 0x7ff) + 1,
                    table_bir: (t & 7) as u8,
                    table_offset: t & !7,
                    pba_bir: (p & 7) as u8,
                    pba_offset: p & !7,
                }))
            }
            id::VENDOR => {
                need!(3);
                Some(CapabilityFields::VendorSpecific(VendorSpecific { length: b(2) }))
            }
            id::PCIE => {
                need!(12);
                let caps = w(2);
                let code = ((caps >> 4) & 0xf) as u8;
                let slot = caps & (1 << 8) != 0;
                let devcap = d(4);
                let devctl = w(8);
                let devsta = w(10);
                // Root complex integrated endpoints and event collectors have no link.
                let linked = !matches!(code, 0x9 | 0xa);
                let has = |n: u16| linked && usize::from(o) + usize::from(n) <= cs.len();
                let link_capabilities = has(0x10).then(|| {
                    let l = d(0xc);
                    PcieLinkCaps {
                        max_speed: link_speed((l & 0xf) as u8),
                        max_width: ((l >> 4) & 0x3f) as u8,
                        aspm_support: aspm(l >> 10),
                        port_number: (l >> 24) as u8,
                    }
                });
                let link_aspm_control = has(0x12).then(|| match w(0x10) & 3 {
                    0 => "Disabled",
                    1 => "L0s",
                    2 => "L1",
                    _ => "L0s L1",
                });
                let link_status = has(0x14).then(|| {
                    let s = w(0x12);
                    PcieLinkStatus {
                        speed: link_speed((s & 0xf) as u8),
                        width: ((s >> 4) & 0x3f) as u8,
                        training: s & (1 << 11) != 0,
                        dll_active: s & (1 << 13) != 0,
                    }
                });
                let slot_number = (slot && has(0x18)).then(|| (d(0x14) >> 19) as u16);
                Some(CapabilityFields::PciExpress(PciExpress {
                    version: (caps & 0xf) as u8,
                    port_type_code: code,
                    port_type: port_type_name(code),
                    slot_implemented: slot,
                    interrupt_message_number: ((caps >> 9) & 0x1f) as u8,
                    device_capabilities: PcieDeviceCaps {
                        max_payload: 128 << (devcap & 7).min(5),
                        flr_capable: devcap & (1 << 28) != 0,
                        extended_tag: devcap & (1 << 5) != 0,
                        role_based_error_reporting: devcap & (1 << 15) != 0,
                    },
                    device_control: PcieDeviceControl {
                        correctable_error_reporting: devctl & 1 != 0,
                        non_fatal_error_reporting: devctl & 2 != 0,
                        fatal_error_reporting: devctl & 4 != 0,
                        unsupported_request_reporting: devctl & 8 != 0,
                        relaxed_ordering: devctl & 0x10 != 0,
                        no_snoop: devctl & (1 << 11) != 0,
                        max_payload: 128 << ((devctl >> 5) & 7).min(5),
                        max_read_request: 128 << ((devctl >> 12) & 7).min(5),
                    },
                    device_status: PcieDeviceStatus {
                        correctable_error: devsta & 1 != 0,
                        non_fatal_error: devsta & 2 != 0,
                        fatal_error: devsta & 4 != 0,
                        unsupported_request: devsta & 8 != 0,
                        aux_power: devsta & 0x10 != 0,
                        transactions_pending: devsta & 0x20 != 0,
                    },
                    link_capabilities,
                    link_aspm_control,
                    link_status,
                    slot_number,
                }))
            }
            _ => None,
        }
    } else {
        match cap.id {
            ext_id::AER => {
                need!(0x1c);
                let cc = d(0x18);
                Some(CapabilityFields::Aer(Aer {
                    uncorrectable_status: d(4),
                    uncorrectable_mask: d(8),
                    uncorrectable_severity: d(0xc),
                    correctable_status: d(0x10),
                    correctable_mask: d(0x14),
                    first_error_pointer: (cc & 0x1f) as u8,
                    ecrc_generation_capable: cc & (1 << 5) != 0,
                    ecrc_check_capable: cc & (1 << 7) != 0,
                }))
            }
            ext_id::ACS => {
                need!(8);
                let c = w(4);
                Some(CapabilityFields::Acs(Acs {
                    capabilities: AcsBits::from(c),
                    control: AcsBits::from(w(6)),
                    egress_control_vector_size: (c >> 8) as u8,
                }))
            }
            ext_id::ARI => {
                need!(8);
                let c = w(4);
                Some(CapabilityFields::Ari(Ari {
                    mfvc: c & 1 != 0,
                    acs: c & 2 != 0,
                    next_function: (c >> 8) as u8,
                }))
            }
            ext_id::ATS => {
                need!(8);
                let c = w(4);
                let ctl = w(6);
                Some(CapabilityFields::Ats(Ats {
                    invalidate_queue_depth: (c & 0x1f) as u8,
                    page_aligned_request: c & 0x20 != 0,
                    enabled: ctl & (1 << 15) != 0,
                    smallest_translation_unit: (ctl & 0x1f) as u8,
                }))
            }
            ext_id::PRI => {
                need!(0x10);
                Some(CapabilityFields::Pri(Pri {
                    enabled: w(4) & 1 != 0,
                    outstanding_capacity: d(8),
                    outstanding_allocation: d(0xc),
                }))
            }
            ext_id::PASID => {
                need!(8);
                let c = w(4);
                Some(CapabilityFields::Pasid(Pasid {
                    exec_permission: c & 2 != 0,
                    privileged_mode: c & 4 != 0,
                    max_pasid_width: ((c >> 8) & 0x1f) as u8,
                    enabled: w(6) & 1 != 0,
                }))
            }
            ext_id::SRIOV => {
                need!(0x40);
                let ctl = w(8);
                let mut vf_bars = Vec::new();
                let mut i = 0u8;
                while i < 6 {
                    let (bar, used) = decode_bar_at(cs, o + 0x24, i, 6, None);
                    if let Some(bar) = bar {
                        vf_bars.push(bar);
                    }
                    i += used;
                }
                Some(CapabilityFields::Sriov(Sriov {
                    capabilities: d(4),
                    vf_enabled: ctl & 1 != 0,
                    vf_memory_enabled: ctl & 8 != 0,
                    ari_capable_hierarchy: ctl & 0x10 != 0,
                    initial_vfs: w(0xc),
                    total_vfs: w(0xe),
                    num_vfs: w(0x10),
                    function_dependency_link: b(0x12),
                    first_vf_offset: w(0x14),
                    vf_stride: w(0x16),
                    vf_device_id: w(0x1a),
                    supported_page_sizes: d(0x1c),
                    system_page_size: d(0x20),
                    vf_bars,
                }))
            }
            ext_id::REBAR => {
                need!(0xc);
                let count = ((d(8) >> 5) & 7).clamp(1, 6) as u16;
                let mut entries = Vec::new();
                for e in 0..count {
                    let base = 4 + e * 8;
                    if short(base + 8).is_some() {
                        break;
                    }
                    let cap = d(base);
                    let ctl = d(base + 4);
                    entries.push(ResizableBarEntry {
                        bar: (ctl & 7) as u8,
                        current_size: 1u64 << (20 + ((ctl >> 8) & 0x3f)).min(63),
                        supported_sizes: (4..32)
                            .filter(|bit| cap & (1 << bit) != 0)
                            .map(|bit| 1u64 << (bit + 16))
                            .collect(),
                    });
                }
                Some(CapabilityFields::ResizableBar(ResizableBar { entries }))
            }
            ext_id::DSN => {
                need!(0xc);
                let serial = u64::from(d(4)) | (u64::from(d(8)) << 32);
                let text = serial
                    .to_be_bytes()
                    .iter()
                    .map(|x| format!("{x:02x}"))
                    .collect::<Vec<_>>()
                    .join("-");
                Some(CapabilityFields::DeviceSerialNumber(DeviceSerialNumber { serial, text }))
            }
            ext_id::VSEC => {
                need!(8);
                let h = d(4);
                Some(CapabilityFields::VendorSpecificExtended(VendorSpecificExtended {
                    vsec_id: (h & 0xffff) as u16,
                    vsec_revision: ((h >> 16) & 0xf) as u8,
                    vsec_length: (h >> 20) as u16,
                }))
            }
            ext_id::DVSEC => {
                need!(0xa);
                let h = d(4);
                Some(CapabilityFields::Dvsec(Dvsec {
                    vendor_id: (h & 0xffff) as u16,
                    revision: ((h >> 16) & 0xf) as u8,
                    length: (h >> 20) as u16,
                    dvsec_id: w(8),
                }))
            }
            _ => None,
        }
    }
}

/// Decodes a raw capability into a [`Capability`].
pub fn decode_capability(cs: &ConfigSpace<'_>, cap: &RawCapability) -> Capability {
    Capability {
        offset: cap.offset,
        id: cap.id,
        version: cap.version,
        extended: cap.extended,
        name: cap.name(),
        fields: decode_fields(cs, cap),
    }
}
