//! Crafted config-space images for the decoder tests, and the `lspci -xxxx` text format
//! that `lspci -F` reads.

#![allow(dead_code)]

/// A config-space image under construction.
pub struct Image(Vec<u8>);

impl From<Vec<u8>> for Image {
    fn from(v: Vec<u8>) -> Self {
        Image(v)
    }
}

impl Image {
    /// `len` zero bytes.
    pub fn new(len: usize) -> Self {
        Image(vec![0; len])
    }

    /// A type 0 header: vendor, device, class; status says there is a capability list.
    pub fn endpoint(len: usize, vendor: u16, device: u16, class: u32) -> Self {
        let mut i = Image::new(len);
        i.w(0, vendor).w(2, device).w(6, 0x10).d(8, class << 8);
        i
    }

    pub fn b(&mut self, off: usize, v: u8) -> &mut Self {
        self.0[off] = v;
        self
    }

    pub fn w(&mut self, off: usize, v: u16) -> &mut Self {
        self.0[off..off + 2].copy_from_slice(&v.to_le_bytes());
        self
    }

    pub fn d(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_le_bytes());
        self
    }

    /// A standard capability header: id and next pointer.
    pub fn cap(&mut self, off: usize, id: u8, next: u8) -> &mut Self {
        self.b(off, id).b(off + 1, next)
    }

    /// An extended capability header: id, version and next offset.
    pub fn ext(&mut self, off: usize, id: u16, version: u8, next: u16) -> &mut Self {
        self.d(off, u32::from(id) | (u32::from(version) << 16) | (u32::from(next) << 20))
    }

    /// A minimal PCI Express capability (v2, endpoint) at `off`.
    pub fn pcie(&mut self, off: usize, next: u8) -> &mut Self {
        self.cap(off, 0x10, next).w(off + 2, 0x0002)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// The image in the text format of `lspci -xxxx` (what `lspci -F` reads).
pub fn lspci_dump(bytes: &[u8]) -> String {
    let width = if bytes.len() > 256 { 3 } else { 2 };
    let mut s = String::from("01:00.0 dump\n");
    for (i, row) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = row.iter().map(|b| format!("{b:02x}")).collect();
        s += &format!("{:0width$x}: {}\n", i * 16, hex.join(" "));
    }
    s
}

/// A CardBus bridge (TI PCI1510): socket BAR, two memory and two I/O windows, bridge
/// control with CardBus reset and a prefetchable window 0, subsystem ids at 0x40, the
/// legacy base at 0x44, and a PM capability found through the pointer at 0x14.
pub fn cardbus() -> Vec<u8> {
    let mut i = Image::new(256);
    i.w(0, 0x104c).w(2, 0xac56).w(4, 0x0007).w(6, 0x0210).d(8, 0x0607_0000).b(0x0e, 2);
    i.d(0x10, 0xfebf_f000).b(0x14, 0x80).b(0x18, 2).b(0x19, 3).b(0x1a, 6).b(0x1b, 0xb0);
    i.d(0x1c, 0x1000_0000).d(0x20, 0x13ff_f000).d(0x24, 0xffff_f000).d(0x28, 0);
    i.d(0x2c, 0x4000).d(0x30, 0x40fc).d(0x34, 0x4400).d(0x38, 0x44fc);
    i.b(0x3c, 11).b(0x3d, 1).w(0x3e, 0x0540).w(0x40, 0x1028).w(0x42, 0x0188).d(0x44, 0x3e1);
    i.cap(0x80, 0x01, 0).w(0x82, 0xfe12);
    i.into_bytes()
}

/// A conventional PCI NIC (no PCIe capability) whose 4 KiB image repeats its header at
/// 0x100 (as a device that ignores the upper address bits reads), with an I/O BAR and
/// a ROM BAR that read 0x1: implemented, unassigned.
pub fn conventional_with_echo() -> Vec<u8> {
    let mut i = Image::endpoint(4096, 0x8086, 0x100e, 0x02_0000);
    i.d(0x10, 0x1).d(0x14, 0xfebc_0000).d(0x30, 0x1).b(0x34, 0xdc).b(0x3d, 1);
    i.cap(0xdc, 0x01, 0).w(0xde, 0x0022);
    let head: Vec<u8> = i.bytes()[..0x40].to_vec();
    i.0[0x100..0x140].copy_from_slice(&head);
    i.into_bytes()
}

/// A conventional function with the standard capabilities lspci decodes besides PM, MSI
/// and MSI-X: Advanced Features (TP and FLR capable, transactions pending), VPD, a debug
/// port, hot-plug, bridge subsystem ids and a SATA HBA.
pub fn standard_caps() -> Vec<u8> {
    let mut i = Image::endpoint(256, 0x8086, 0x2922, 0x01_0601);
    i.b(0x34, 0x40);
    i.cap(0x40, 0x13, 0x48).b(0x42, 6).b(0x43, 0x03).b(0x45, 0x01);
    i.cap(0x48, 0x03, 0x50).w(0x4a, 0x8010).d(0x4c, 0x1234_5678);
    i.cap(0x50, 0x0a, 0x54).w(0x52, 0x20a0);
    i.cap(0x54, 0x0c, 0x58);
    i.cap(0x58, 0x0d, 0x60).w(0x5c, 0x1af4).w(0x5e, 0x7a7a);
    i.cap(0x60, 0x12, 0x68).b(0x62, 0x10).d(0x64, 0x0000_0049);
    i.cap(0x68, 0x12, 0).b(0x6a, 0x10).d(0x6c, 0xf);
    i.into_bytes()
}
