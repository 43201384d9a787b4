//! The PCI Express capability: device and link registers, with lspci's names for port
//! types, link speeds and ASPM states.

use super::{Regs, Short};

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

/// Decodes a PCI Express capability; the link and slot registers when the image holds
/// them and the port has a link.
pub(super) fn pci_express(r: Regs) -> Result<PciExpress, Short> {
    r.need(12)?;
    let caps = r.w(2);
    let code = ((caps >> 4) & 0xf) as u8;
    let slot = caps & (1 << 8) != 0;
    let devcap = r.d(4);
    let devctl = r.w(8);
    let devsta = r.w(10);
    // Root complex integrated endpoints and event collectors have no link.
    let linked = !matches!(code, 0x9 | 0xa);
    let has = |n: u16| linked && r.holds(n);
    let link_capabilities = has(0x10).then(|| {
        let l = r.d(0xc);
        PcieLinkCaps {
            max_speed: link_speed((l & 0xf) as u8),
            max_width: ((l >> 4) & 0x3f) as u8,
            aspm_support: aspm(l >> 10),
            port_number: (l >> 24) as u8,
        }
    });
    let link_aspm_control = has(0x12).then(|| match r.w(0x10) & 3 {
        0 => "Disabled",
        1 => "L0s",
        2 => "L1",
        _ => "L0s L1",
    });
    let link_status = has(0x14).then(|| {
        let s = r.w(0x12);
        PcieLinkStatus {
            speed: link_speed((s & 0xf) as u8),
            width: ((s >> 4) & 0x3f) as u8,
            training: s & (1 << 11) != 0,
            dll_active: s & (1 << 13) != 0,
        }
    });
    let slot_number = (slot && has(0x18)).then(|| (r.d(0x14) >> 19) as u16);
    Ok(PciExpress {
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
    })
}
