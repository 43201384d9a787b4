//! The standard capabilities decoded field by field: Power Management, MSI, MSI-X and the
//! vendor-specific header.

use super::virtio::{virtio, VirtioCap};
use super::{Regs, Short};

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

/// PCI vendor-specific capability header.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct VendorSpecific {
    /// Length byte of the capability.
    pub length: u8,
    /// On a virtio device: the VirtIO structure this capability locates.
    pub virtio: Option<VirtioCap>,
}

/// Decodes a Power Management capability.
pub(super) fn power_management(r: Regs) -> Result<PowerManagement, Short> {
    r.need(8)?;
    let pmc = r.w(2);
    let csr = r.w(4);
    Ok(PowerManagement {
        version: (pmc & 7) as u8,
        d1: pmc & (1 << 9) != 0,
        d2: pmc & (1 << 10) != 0,
        pme_support: (pmc >> 11) as u8,
        no_soft_reset: csr & (1 << 3) != 0,
        power_state: ["D0", "D1", "D2", "D3hot"][usize::from(csr & 3)],
        pme_enabled: csr & (1 << 8) != 0,
        pme_status: csr & (1 << 15) != 0,
    })
}

/// Decodes an MSI capability (32- or 64-bit message address).
pub(super) fn msi(r: Regs) -> Result<Msi, Short> {
    r.need(4)?;
    let ctl = r.w(2);
    let is64 = ctl & (1 << 7) != 0;
    r.need(if is64 { 14 } else { 10 })?;
    let (address, data) = if is64 {
        (u64::from(r.d(4)) | (u64::from(r.d(8)) << 32), r.w(12))
    } else {
        (u64::from(r.d(4)), r.w(8))
    };
    Ok(Msi {
        enabled: ctl & 1 != 0,
        vectors_capable: 1 << ((ctl >> 1) & 7).min(5),
        vectors_enabled: 1 << ((ctl >> 4) & 7).min(5),
        address_64bit: is64,
        per_vector_masking: ctl & (1 << 8) != 0,
        address,
        data,
    })
}

/// Decodes an MSI-X capability.
pub(super) fn msix(r: Regs) -> Result<Msix, Short> {
    r.need(12)?;
    let ctl = r.w(2);
    let t = r.d(4);
    let p = r.d(8);
    Ok(Msix {
        enabled: ctl & (1 << 15) != 0,
        function_mask: ctl & (1 << 14) != 0,
        table_size: (ctl & 0x7ff) + 1,
        table_bir: (t & 7) as u8,
        table_offset: t & !7,
        pba_bir: (p & 7) as u8,
        pba_offset: p & !7,
    })
}

/// Decodes a vendor-specific capability's header, and the VirtIO structure on a virtio
/// device.
pub(super) fn vendor_specific(r: Regs) -> Result<VendorSpecific, Short> {
    r.need(3)?;
    Ok(VendorSpecific { length: r.b(2), virtio: virtio(r) })
}
