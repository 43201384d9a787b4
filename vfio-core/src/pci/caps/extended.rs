//! Extended capabilities decoded field by field: AER, ACS, ARI, ATS, PRI, PASID, the
//! Device Serial Number, and the vendor-specific (VSEC) and designated vendor-specific
//! (DVSEC) headers.

use super::{Regs, Short};

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

/// Decodes an Advanced Error Reporting capability.
pub(super) fn aer(r: Regs) -> Result<Aer, Short> {
    r.need(0x1c)?;
    let cc = r.d(0x18);
    Ok(Aer {
        uncorrectable_status: r.d(4),
        uncorrectable_mask: r.d(8),
        uncorrectable_severity: r.d(0xc),
        correctable_status: r.d(0x10),
        correctable_mask: r.d(0x14),
        first_error_pointer: (cc & 0x1f) as u8,
        ecrc_generation_capable: cc & (1 << 5) != 0,
        ecrc_check_capable: cc & (1 << 7) != 0,
    })
}

/// Decodes an Access Control Services capability.
pub(super) fn acs(r: Regs) -> Result<Acs, Short> {
    r.need(8)?;
    let c = r.w(4);
    Ok(Acs {
        capabilities: AcsBits::from(c),
        control: AcsBits::from(r.w(6)),
        egress_control_vector_size: (c >> 8) as u8,
    })
}

/// Decodes an Alternative Routing-ID Interpretation capability.
pub(super) fn ari(r: Regs) -> Result<Ari, Short> {
    r.need(8)?;
    let c = r.w(4);
    Ok(Ari { mfvc: c & 1 != 0, acs: c & 2 != 0, next_function: (c >> 8) as u8 })
}

/// Decodes an Address Translation Services capability.
pub(super) fn ats(r: Regs) -> Result<Ats, Short> {
    r.need(8)?;
    let c = r.w(4);
    let ctl = r.w(6);
    Ok(Ats {
        invalidate_queue_depth: (c & 0x1f) as u8,
        page_aligned_request: c & 0x20 != 0,
        enabled: ctl & (1 << 15) != 0,
        smallest_translation_unit: (ctl & 0x1f) as u8,
    })
}

/// Decodes a Page Request Interface capability.
pub(super) fn pri(r: Regs) -> Result<Pri, Short> {
    r.need(0x10)?;
    Ok(Pri {
        enabled: r.w(4) & 1 != 0,
        outstanding_capacity: r.d(8),
        outstanding_allocation: r.d(0xc),
    })
}

/// Decodes a Process Address Space ID capability.
pub(super) fn pasid(r: Regs) -> Result<Pasid, Short> {
    r.need(8)?;
    let c = r.w(4);
    Ok(Pasid {
        exec_permission: c & 2 != 0,
        privileged_mode: c & 4 != 0,
        max_pasid_width: ((c >> 8) & 0x1f) as u8,
        enabled: r.w(6) & 1 != 0,
    })
}

/// Decodes a Device Serial Number capability.
pub(super) fn serial_number(r: Regs) -> Result<DeviceSerialNumber, Short> {
    r.need(0xc)?;
    let serial = u64::from(r.d(4)) | (u64::from(r.d(8)) << 32);
    let text =
        serial.to_be_bytes().iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join("-");
    Ok(DeviceSerialNumber { serial, text })
}

/// Decodes a vendor-specific extended capability's header.
pub(super) fn vsec(r: Regs) -> Result<VendorSpecificExtended, Short> {
    r.need(8)?;
    let h = r.d(4);
    Ok(VendorSpecificExtended {
        vsec_id: (h & 0xffff) as u16,
        vsec_revision: ((h >> 16) & 0xf) as u8,
        vsec_length: (h >> 20) as u16,
    })
}

/// Decodes a designated vendor-specific extended capability's header.
pub(super) fn dvsec(r: Regs) -> Result<Dvsec, Short> {
    r.need(0xa)?;
    let h = r.d(4);
    Ok(Dvsec {
        vendor_id: (h & 0xffff) as u16,
        revision: ((h >> 16) & 0xf) as u8,
        length: (h >> 20) as u16,
        dvsec_id: r.w(8),
    })
}
