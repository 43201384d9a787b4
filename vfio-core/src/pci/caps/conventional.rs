//! Standard capabilities of conventional PCI that still matter: Advanced Features (FLR
//! for a function without a PCIe capability), the bridge's subsystem ids, VPD's address
//! and data registers, the debug port and the SATA HBA register location.

use super::{Regs, Short};

/// PCI Advanced Features: Function Level Reset for a conventional function.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct AdvancedFeatures {
    /// AFCap TP: the Transactions Pending bit is supported.
    pub tp_capable: bool,
    /// AFCap FLR: the function supports Function Level Reset (the kernel's `af_flr`).
    pub flr_capable: bool,
    /// AFCtrl FLR: Initiate FLR (reads 0).
    pub initiate_flr: bool,
    /// AFStatus TP: transactions pending.
    pub transactions_pending: bool,
}

/// Subsystem ids of a bridge (capability 0x0d).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BridgeSubsystem {
    /// Subsystem vendor id.
    pub subsystem_vendor_id: u16,
    /// Subsystem id.
    pub subsystem_id: u16,
}

/// Vital Product Data registers. The VPD itself is read through them (sysfs `vpd`) and
/// decoded by [`crate::pci::vpd::decode`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct VpdRegisters {
    /// VPD address (15 bits).
    pub address: u16,
    /// F flag: set by the device when a read completes (cleared when a write does).
    pub flag: bool,
    /// VPD data register.
    pub data: u32,
}

/// Debug port (EHCI debug port location).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DebugPort {
    /// BAR number (1-6 as the EHCI specification counts them; lspci prints it as is).
    pub bar: u8,
    /// Offset of the debug port registers in that BAR.
    pub offset: u16,
}

/// SATA HBA capability: where the index-data register pair is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Sata {
    /// Revision major.
    pub major: u8,
    /// Revision minor.
    pub minor: u8,
    /// BAR location field (4-9: BAR0-5, 15: in config space right after the capability).
    pub bar_location: u8,
    /// The BAR, for locations 4-9.
    pub bar: Option<u8>,
    /// BAR offset field (in dwords).
    pub offset: u32,
    /// The registers follow the capability in config space.
    pub in_config_space: bool,
}

/// Decodes a PCI Advanced Features capability.
pub(super) fn advanced_features(r: Regs) -> Result<AdvancedFeatures, Short> {
    r.need(6)?;
    let cap = r.b(3);
    Ok(AdvancedFeatures {
        tp_capable: cap & 1 != 0,
        flr_capable: cap & 2 != 0,
        initiate_flr: r.b(4) & 1 != 0,
        transactions_pending: r.b(5) & 1 != 0,
    })
}

/// Decodes a Bridge Subsystem Vendor/Device capability.
pub(super) fn bridge_subsystem(r: Regs) -> Result<BridgeSubsystem, Short> {
    r.need(8)?;
    Ok(BridgeSubsystem { subsystem_vendor_id: r.w(4), subsystem_id: r.w(6) })
}

/// Decodes the VPD capability's registers.
pub(super) fn vpd_registers(r: Regs) -> Result<VpdRegisters, Short> {
    r.need(8)?;
    let a = r.w(2);
    Ok(VpdRegisters { address: a & 0x7fff, flag: a & 0x8000 != 0, data: r.d(4) })
}

/// Decodes a Debug Port capability.
pub(super) fn debug_port(r: Regs) -> Result<DebugPort, Short> {
    r.need(4)?;
    let w = r.w(2);
    Ok(DebugPort { bar: (w >> 13) as u8, offset: w & 0x1fff })
}

/// Decodes a SATA HBA capability.
pub(super) fn sata(r: Regs) -> Result<Sata, Short> {
    r.need(8)?;
    let rev = r.b(2);
    let bars = r.d(4);
    let loc = (bars & 0xf) as u8;
    Ok(Sata {
        major: rev >> 4,
        minor: rev & 0xf,
        bar_location: loc,
        bar: (4..=9).contains(&loc).then(|| loc - 4),
        offset: (bars >> 4) & 0xf_ffff,
        in_config_space: loc == 15,
    })
}
