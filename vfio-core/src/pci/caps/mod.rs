//! PCI capabilities: the standard chain (pointer at 0x34) and the PCI Express extended
//! chain (from 0x100), their names, and field decoders for the capabilities that matter
//! to passthrough (PM, MSI, MSI-X, PCIe, AER, ACS, ARI, ATS, PRI, PASID, SR-IOV,
//! Resizable BAR, DSN, vendor-specific and DVSEC headers).
//!
//! Walking never fails: a damaged chain ends with a [`Diagnostic`] item so that
//! everything before the damage still decodes.
//!
//! The chains are walked in `chain`; each family of capabilities has its registers and
//! its decoders (pure functions of the capability's bytes) in its own module: `standard`
//! (PM, MSI, MSI-X, vendor-specific), `pcie` (the PCI Express capability), `extended`
//! (AER, ACS, ARI, ATS, PRI, PASID, DSN, VSEC, DVSEC) and `bars` (SR-IOV, Resizable BAR).

mod bars;
mod chain;
mod conventional;
mod extended;
mod pcie;
mod standard;
mod virtio;

pub use bars::{ResizableBar, ResizableBarEntry, Sriov};
pub use chain::{Capabilities, ExtendedCapabilities};
pub use conventional::{AdvancedFeatures, BridgeSubsystem, DebugPort, Sata, VpdRegisters};
pub use extended::{
    Acs, AcsBits, Aer, Ari, Ats, DeviceSerialNumber, Dvsec, Pasid, Pri, VendorSpecificExtended,
};
pub use pcie::{
    link_speed, port_type_name, PciExpress, PcieDeviceCaps, PcieDeviceControl, PcieDeviceStatus,
    PcieLinkCaps, PcieLinkStatus,
};
pub use standard::{Msi, Msix, PowerManagement, VendorSpecific};
pub use virtio::{virtio_type_name, VirtioCap};

use super::space::ConfigSpace;
#[cfg(doc)]
use super::space::Diagnostic;

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
    /// Vital Product Data.
    pub const VPD: u8 = 0x03;
    /// PCI-X.
    pub const PCIX: u8 = 0x07;
    /// Debug port.
    pub const DEBUG: u8 = 0x0a;
    /// Bridge subsystem vendor/device ids.
    pub const SSVID: u8 = 0x0d;
    /// SATA HBA.
    pub const SATA: u8 = 0x12;
    /// PCI Advanced Features.
    pub const AF: u8 = 0x13;
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
    AdvancedFeatures(AdvancedFeatures),
    BridgeSubsystem(BridgeSubsystem),
    Vpd(VpdRegisters),
    DebugPort(DebugPort),
    Sata(Sata),
    /// The capability's registers extend past the end of the image.
    Truncated {
        /// Bytes the decoder needs from the capability's offset.
        needed: u16,
        /// Bytes the image holds from that offset.
        available: u16,
    },
}

/// The registers of one capability, read relative to its offset; a register past the end
/// of the image reads as zero (decoders check [`Regs::need`] first).
#[derive(Clone, Copy)]
struct Regs<'c, 'a> {
    cs: &'c ConfigSpace<'a>,
    offset: u16,
}

/// The image ends before the capability's registers do.
struct Short {
    /// Bytes the decoder needs from the capability's offset.
    needed: u16,
    /// Bytes the image holds from that offset.
    available: u16,
}

impl Regs<'_, '_> {
    /// `Err` when the image holds fewer than `n` bytes from the capability's offset.
    fn need(&self, n: u16) -> Result<(), Short> {
        let available = self.cs.len().saturating_sub(usize::from(self.offset));
        if available < usize::from(n) {
            return Err(Short { needed: n, available: available as u16 });
        }
        Ok(())
    }

    /// Whether the image holds `n` bytes from the capability's offset.
    fn holds(&self, n: u16) -> bool {
        usize::from(self.offset) + usize::from(n) <= self.cs.len()
    }

    /// The byte at `off` from the capability's offset.
    fn b(&self, off: u16) -> u8 {
        self.cs.read_u8(self.offset + off).unwrap_or(0)
    }

    /// The 16-bit register at `off` from the capability's offset.
    fn w(&self, off: u16) -> u16 {
        self.cs.read_u16(self.offset + off).unwrap_or(0)
    }

    /// The 32-bit register at `off` from the capability's offset.
    fn d(&self, off: u16) -> u32 {
        self.cs.read_u32(self.offset + off).unwrap_or(0)
    }
}

/// A decoder's result as [`CapabilityFields`]: the fields, or `Truncated`.
fn fields<T>(decoded: Result<T, Short>, kind: fn(T) -> CapabilityFields) -> CapabilityFields {
    match decoded {
        Ok(v) => kind(v),
        Err(Short { needed, available }) => CapabilityFields::Truncated { needed, available },
    }
}

/// Decodes the fields of a capability. `None` for capabilities without a decoder.
pub fn decode_fields(cs: &ConfigSpace<'_>, cap: &RawCapability) -> Option<CapabilityFields> {
    use CapabilityFields as F;
    let r = Regs { cs, offset: cap.offset };
    Some(if !cap.extended {
        match cap.id as u8 {
            id::PM => fields(standard::power_management(r), F::PowerManagement),
            id::MSI => fields(standard::msi(r), F::Msi),
            id::MSIX => fields(standard::msix(r), F::Msix),
            id::VENDOR => fields(standard::vendor_specific(r), F::VendorSpecific),
            id::PCIE => fields(pcie::pci_express(r), F::PciExpress),
            id::AF => fields(conventional::advanced_features(r), F::AdvancedFeatures),
            id::SSVID => fields(conventional::bridge_subsystem(r), F::BridgeSubsystem),
            id::VPD => fields(conventional::vpd_registers(r), F::Vpd),
            id::DEBUG => fields(conventional::debug_port(r), F::DebugPort),
            id::SATA => fields(conventional::sata(r), F::Sata),
            _ => return None,
        }
    } else {
        match cap.id {
            ext_id::AER => fields(extended::aer(r), F::Aer),
            ext_id::ACS => fields(extended::acs(r), F::Acs),
            ext_id::ARI => fields(extended::ari(r), F::Ari),
            ext_id::ATS => fields(extended::ats(r), F::Ats),
            ext_id::PRI => fields(extended::pri(r), F::Pri),
            ext_id::PASID => fields(extended::pasid(r), F::Pasid),
            ext_id::SRIOV => fields(bars::sriov(r), F::Sriov),
            ext_id::REBAR => fields(bars::resizable_bar(r), F::ResizableBar),
            ext_id::DSN => fields(extended::serial_number(r), F::DeviceSerialNumber),
            ext_id::VSEC => fields(extended::vsec(r), F::VendorSpecificExtended),
            ext_id::DVSEC => fields(extended::dvsec(r), F::Dvsec),
            _ => return None,
        }
    })
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
