//! The extended capabilities that describe BARs: SR-IOV (with the VFs' BARs) and
//! Resizable BAR.

use super::{Regs, Short};
use crate::pci::space::{decode_bar_at, DecodedBar};

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
    pub vf_bars: Vec<DecodedBar>,
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

/// Decodes an SR-IOV capability, with the VF BARs it holds.
pub(super) fn sriov(r: Regs) -> Result<Sriov, Short> {
    r.need(0x40)?;
    let ctl = r.w(8);
    let mut vf_bars = Vec::new();
    let mut i = 0u8;
    while i < 6 {
        let (bar, used) = decode_bar_at(r.cs, r.offset + 0x24, i, 6, None);
        if let Some(bar) = bar {
            vf_bars.push(bar);
        }
        i += used;
    }
    Ok(Sriov {
        capabilities: r.d(4),
        vf_enabled: ctl & 1 != 0,
        vf_memory_enabled: ctl & 8 != 0,
        ari_capable_hierarchy: ctl & 0x10 != 0,
        initial_vfs: r.w(0xc),
        total_vfs: r.w(0xe),
        num_vfs: r.w(0x10),
        function_dependency_link: r.b(0x12),
        first_vf_offset: r.w(0x14),
        vf_stride: r.w(0x16),
        vf_device_id: r.w(0x1a),
        supported_page_sizes: r.d(0x1c),
        system_page_size: r.d(0x20),
        vf_bars,
    })
}

/// Decodes a Resizable BAR capability: the entries the image holds (1 to 6).
pub(super) fn resizable_bar(r: Regs) -> Result<ResizableBar, Short> {
    r.need(0xc)?;
    let count = ((r.d(8) >> 5) & 7).clamp(1, 6) as u16;
    let mut entries = Vec::new();
    for e in 0..count {
        let base = 4 + e * 8;
        if r.need(base + 8).is_err() {
            break;
        }
        let cap = r.d(base);
        let ctl = r.d(base + 4);
        entries.push(ResizableBarEntry {
            bar: (ctl & 7) as u8,
            current_size: 1u64 << (20 + ((ctl >> 8) & 0x3f)).min(63),
            supported_sizes: (4..32)
                .filter(|bit| cap & (1 << bit) != 0)
                .map(|bit| 1u64 << (bit + 16))
                .collect(),
        });
    }
    Ok(ResizableBar { entries })
}
