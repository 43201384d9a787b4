//! The VirtIO vendor-specific capabilities (id 0x09 on a virtio function, vendor 0x1af4,
//! device 0x1000-0x107f): where the common, notify, ISR and device configuration
//! structures (and the PCI configuration access window) live in the BARs.

use super::Regs;

/// One VirtIO structure location (virtio 1.x, `struct virtio_pci_cap`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct VirtioCap {
    /// `cfg_type`: 1 common, 2 notify, 3 ISR, 4 device, 5 PCI cfg, 8 shared memory,
    /// 9 vendor.
    pub cfg_type: u8,
    /// The type's name as lspci prints it ("CommonCfg", "Notify", "ISR", "DeviceCfg"), or
    /// "PCICfg", "SharedMemory", "Vendor", "unknown".
    pub type_name: &'static str,
    /// The BAR holding the structure.
    pub bar: u8,
    /// `id` (distinguishes several shared-memory regions).
    pub id: u8,
    /// Offset of the structure in the BAR.
    pub offset: u32,
    /// Length of the structure.
    pub length: u32,
    /// Notify only: `notify_off_multiplier` (bytes between queue notify addresses).
    pub notify_off_multiplier: Option<u32>,
}

/// The name of a VirtIO `cfg_type`.
pub fn virtio_type_name(t: u8) -> &'static str {
    match t {
        1 => "CommonCfg",
        2 => "Notify",
        3 => "ISR",
        4 => "DeviceCfg",
        5 => "PCICfg",
        8 => "SharedMemory",
        9 => "Vendor",
        _ => "unknown",
    }
}

/// Whether the function is a virtio device (Red Hat vendor id, device 0x1000-0x107f).
fn is_virtio(r: Regs) -> bool {
    r.cs.vendor_id() == Some(0x1af4) && matches!(r.cs.device_id(), Some(0x1000..=0x107f))
}

/// Decodes a VirtIO capability; `None` when the function is not a virtio device, the
/// capability is shorter than 16 bytes, or the image does not hold all of it (as lspci).
pub(super) fn virtio(r: Regs) -> Option<VirtioCap> {
    let len = r.b(2);
    if !is_virtio(r) || len < 16 || !r.holds(u16::from(len)) {
        return None;
    }
    let cfg_type = r.b(3);
    Some(VirtioCap {
        cfg_type,
        type_name: virtio_type_name(cfg_type),
        bar: r.b(4),
        id: r.b(5),
        offset: r.d(8),
        length: r.d(12),
        notify_off_multiplier: (cfg_type == 2 && len >= 20).then(|| r.d(16)),
    })
}
