//! Short descriptions of simulated PCI devices.

use crate::pci::config::BarKind;
use crate::pci::PciAddress;

/// One BAR of a simulated device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarSpec {
    /// Size in bytes (a power of two).
    pub size: u64,
    /// What it maps: I/O ports, 32-bit memory (or legacy memory below 1 MiB) or 64-bit
    /// memory (which takes two BAR slots), as the config-space decoder names it.
    pub kind: BarKind,
    /// Prefetchable memory.
    pub prefetchable: bool,
    /// Whether VFIO offers mmap of it (memory BARs of at least a page).
    pub mmap: bool,
    /// The region lacks `VFIO_REGION_INFO_FLAG_WRITE`, as a variant driver's read-only
    /// region does (vfio-pci's own BARs are always read-write): pwrite is refused with
    /// EINVAL and a writable mmap with EACCES. For testing code against such regions.
    pub read_only: bool,
}

impl BarSpec {
    /// A 32-bit non-prefetchable memory BAR, mmap-able.
    pub fn mem32(size: u64) -> Self {
        BarSpec { size, kind: BarKind::Memory32, prefetchable: false, mmap: true, read_only: false }
    }
    /// A 64-bit prefetchable memory BAR, mmap-able.
    pub fn mem64(size: u64) -> Self {
        BarSpec { size, kind: BarKind::Memory64, prefetchable: true, mmap: true, read_only: false }
    }
    /// An I/O BAR (never mmap-able).
    pub fn io(size: u64) -> Self {
        BarSpec { size, kind: BarKind::Io, prefetchable: false, mmap: false, read_only: false }
    }
    /// The same BAR without write access (see [`BarSpec::read_only`]).
    pub fn read_only(self) -> Self {
        BarSpec { read_only: true, ..self }
    }
}

/// MSI-X layout of a simulated device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsixSpec {
    /// Number of vectors (table size).
    pub vectors: u16,
    /// BAR holding the table.
    pub table_bar: u8,
    /// Offset of the table in that BAR.
    pub table_offset: u32,
    /// BAR holding the PBA.
    pub pba_bar: u8,
    /// Offset of the PBA in that BAR.
    pub pba_offset: u32,
}

/// SR-IOV of a simulated physical function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SriovSpec {
    /// `sriov_totalvfs`.
    pub total_vfs: u16,
    /// Device id of the VFs.
    pub vf_device: u16,
    /// Driver VFs bind to when created (`None`: none).
    pub vf_driver: Option<String>,
}

/// One mediated device type offered by a parent device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdevTypeSpec {
    /// Directory name under `mdev_supported_types` (`nvidia-35`, `i915-GVTg_V5_4`).
    pub id: String,
    /// `name` attribute.
    pub name: String,
    /// `description` attribute.
    pub description: String,
    /// `device_api` attribute (`vfio-pci`).
    pub device_api: String,
    /// How many instances can be created in total.
    pub max_instances: u32,
    /// The VFIO device an instance of this type is, as the mock kernel serves it (BARs,
    /// interrupts, config space; its address is not used). `None`: a device without BARs
    /// or interrupts.
    pub device: Option<Box<DeviceSpec>>,
}

/// A device-specific VFIO region beyond the nine standard PCI regions (reported with a
/// `VFIO_REGION_INFO_CAP_TYPE` capability, like IGD OpRegion or EDID regions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionSpec {
    /// Region type (`VFIO_REGION_TYPE_*`, or vendor type `0x8000_0000 | vendor`).
    pub region_type: u32,
    /// Region subtype.
    pub subtype: u32,
    /// Size in bytes.
    pub size: u64,
    /// Writable through `pwrite` (always readable).
    pub writable: bool,
    /// Initial contents (zero-padded to `size`).
    pub data: Vec<u8>,
}

/// The description of one simulated PCI function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    /// Where it sits.
    pub address: PciAddress,
    /// Vendor id.
    pub vendor: u16,
    /// Device id.
    pub device: u16,
    /// Subsystem vendor id.
    pub subsystem_vendor: u16,
    /// Subsystem device id.
    pub subsystem_device: u16,
    /// 24-bit class code (class, subclass, prog-if).
    pub class: u32,
    /// Revision id.
    pub revision: u8,
    /// Header type 1 (a PCI-to-PCI bridge) instead of 0.
    pub bridge: bool,
    /// BARs by index (a 64-bit BAR occupies its index and the next, which stays `None`).
    pub bars: [Option<BarSpec>; 6],
    /// Expansion ROM contents.
    pub rom: Option<Vec<u8>>,
    /// Driver bound at start.
    pub driver: Option<String>,
    /// IOMMU group (`None`: no IOMMU covers the device).
    pub iommu_group: Option<u32>,
    /// The IOMMU gives the device its group only when a driver probes it (virtio-iommu
    /// and other IOMMUs configured at probe time): `iommu_group` is hidden while the
    /// device has no driver.
    pub group_at_probe: bool,
    /// Interrupt pin used (INTx).
    pub intx: bool,
    /// MSI vectors (0: no MSI capability).
    pub msi_vectors: u8,
    /// MSI-X layout (`None`: no MSI-X capability).
    pub msix: Option<MsixSpec>,
    /// A PCI Express capability (endpoint, or downstream port for bridges).
    pub pcie: bool,
    /// Function-level reset (PCIe FLR); makes `VFIO_DEVICE_RESET` available.
    pub flr: bool,
    /// SR-IOV capability.
    pub sriov: Option<SriovSpec>,
    /// Mediated device types.
    pub mdev_types: Vec<MdevTypeSpec>,
    /// Config space bytes to overlay on the generated image (offset, bytes).
    pub config_patches: Vec<(u16, Vec<u8>)>,
    /// Device-specific VFIO regions, in order from index 9
    /// ([`RegionIndex::FIRST_DEVICE_SPECIFIC`](crate::RegionIndex::FIRST_DEVICE_SPECIFIC)).
    pub extra_regions: Vec<RegionSpec>,
}

impl DeviceSpec {
    /// A bare endpoint at `address` (panics on a malformed literal; use
    /// [`DeviceSpec::at`] with a parsed address for untrusted input).
    pub fn new(address: &str) -> Self {
        DeviceSpec::at(PciAddress::parse(address).expect("DeviceSpec::new: malformed PCI address"))
    }

    /// A bare endpoint at a parsed address: vendor/device 0, class 0, no BARs.
    pub fn at(address: PciAddress) -> Self {
        DeviceSpec {
            address,
            vendor: 0,
            device: 0,
            subsystem_vendor: 0,
            subsystem_device: 0,
            class: 0,
            revision: 0,
            bridge: false,
            bars: [None; 6],
            rom: None,
            driver: None,
            iommu_group: None,
            group_at_probe: false,
            intx: false,
            msi_vectors: 0,
            msix: None,
            pcie: false,
            flr: false,
            sriov: None,
            mdev_types: Vec::new(),
            config_patches: Vec::new(),
            extra_regions: Vec::new(),
        }
    }

    /// QEMU's `edu` test device (1234:11e8 rev 0x10, 1 MiB BAR0, INTA, one MSI vector).
    pub fn edu(address: &str) -> Self {
        let mut d = DeviceSpec::new(address);
        d.vendor = 0x1234;
        d.device = 0x11e8;
        d.subsystem_vendor = 0x1af4;
        d.subsystem_device = 0x1100;
        d.class = 0x00ff00;
        d.revision = 0x10;
        d.bars[0] = Some(BarSpec::mem32(1 << 20));
        d.intx = true;
        d.msi_vectors = 1;
        d
    }

    /// The device an instance of the `mtty` sample driver's types is: a 16550-compatible
    /// serial controller (4348:3253, class 070002, rev 0x10) with one 8-byte I/O BAR per
    /// port (BAR0, and BAR1 for two ports), INTA and one MSI vector. The mock serves
    /// vfio-pci's answers for it: config space of 256 bytes (mtty: 0xff) and a count of 0
    /// for the MSI-X, ERR and REQ indexes (mtty: EINVAL).
    pub fn mtty(ports: u8) -> Self {
        let mut d = DeviceSpec::at(PciAddress::new(0, 0, 0, 0).expect("0000:00:00.0"));
        (d.vendor, d.device, d.subsystem_vendor, d.subsystem_device) =
            (0x4348, 0x3253, 0x4348, 0x3253);
        (d.class, d.revision) = (0x070002, 0x10);
        for b in d.bars.iter_mut().take(usize::from(ports.min(2))) {
            *b = Some(BarSpec::io(8));
        }
        d.intx = true;
        d.msi_vectors = 1;
        d
    }

    /// An NVMe controller (8086:5845, as QEMU's `nvme`): 16 KiB 64-bit BAR0 holding a
    /// 65-vector MSI-X table at 0x2000 and PBA at 0x3000, PCIe with FLR.
    pub fn nvme(address: &str) -> Self {
        let mut d = DeviceSpec::new(address);
        d.vendor = 0x1b36;
        d.device = 0x0010;
        d.subsystem_vendor = 0x1af4;
        d.subsystem_device = 0x1100;
        d.class = 0x010802;
        d.revision = 0x02;
        d.bars[0] = Some(BarSpec { prefetchable: false, ..BarSpec::mem64(16 << 10) });
        d.intx = true;
        d.msix = Some(MsixSpec {
            vectors: 65,
            table_bar: 0,
            table_offset: 0x2000,
            pba_bar: 0,
            pba_offset: 0x3000,
        });
        d.pcie = true;
        d.flr = true;
        d
    }

    /// An Intel 82576 NIC (8086:10c9, igb's): SR-IOV with 4 VFs (8086:10ca, probed by
    /// igbvf), none enabled, PCIe.
    pub fn igb(address: &str) -> Self {
        let mut d = DeviceSpec::new(address);
        (d.vendor, d.device, d.class, d.pcie) = (0x8086, 0x10c9, 0x020000, true);
        d.sriov =
            Some(SriovSpec { total_vfs: 4, vf_device: 0x10ca, vf_driver: Some("igbvf".into()) });
        d
    }

    /// A PCIe-to-PCI bridge or root port (header type 1), driverless.
    pub fn bridge(address: &str) -> Self {
        let mut d = DeviceSpec::new(address);
        d.vendor = 0x1b36;
        d.device = 0x000c;
        d.class = 0x060400;
        d.bridge = true;
        d.pcie = true;
        d
    }

    /// Sets the driver bound at start.
    pub fn driver(mut self, driver: &str) -> Self {
        self.driver = Some(driver.to_string());
        self
    }

    /// Puts the device in an IOMMU group.
    pub fn group(mut self, group: u32) -> Self {
        self.iommu_group = Some(group);
        self
    }

    /// The config-space image (4096 bytes) this description implies: header, BARs,
    /// capability lists, then `config_patches`.
    pub fn config_image(&self) -> Vec<u8> {
        let mut c = vec![0u8; 4096];
        c[0..2].copy_from_slice(&self.vendor.to_le_bytes());
        c[2..4].copy_from_slice(&self.device.to_le_bytes());
        c[8] = self.revision;
        c[9..12].copy_from_slice(&self.class.to_le_bytes()[..3]);
        c[0x0e] = u8::from(self.bridge);
        if !self.bridge {
            c[0x2c..0x2e].copy_from_slice(&self.subsystem_vendor.to_le_bytes());
            c[0x2e..0x30].copy_from_slice(&self.subsystem_device.to_le_bytes());
        }
        let nbars = if self.bridge { 2 } else { 6 };
        for (i, bar) in self.bars.iter().enumerate().take(nbars) {
            let Some(bar) = bar else { continue };
            let low: u32 = match bar.kind {
                BarKind::Io => 0x1,
                BarKind::Memory32 => u32::from(bar.prefetchable) << 3,
                BarKind::Memory1M => 0x2 | u32::from(bar.prefetchable) << 3,
                BarKind::Memory64 => 0x4 | u32::from(bar.prefetchable) << 3,
            };
            let off = 0x10 + 4 * i;
            c[off..off + 4].copy_from_slice(&low.to_le_bytes());
        }
        if self.intx {
            c[0x3d] = 1; // INTA
        }
        // Capabilities: build the standard list from 0x40 upwards.
        let mut caps: Vec<(u8, Vec<u8>)> = Vec::new();
        caps.push((0x01, vec![0x03, 0x00, 0x08, 0x00, 0x00, 0x00])); // PM v3, No_Soft_Reset
        if self.msi_vectors > 0 {
            let mmc = (self.msi_vectors as u32).next_power_of_two().trailing_zeros() as u16;
            let ctl: u16 = (mmc << 1) | (1 << 7); // 64-bit capable
            let mut b = ctl.to_le_bytes().to_vec();
            b.resize(12, 0);
            caps.push((0x05, b));
        }
        if self.pcie {
            let port_type: u16 = if self.bridge { 0x4 } else { 0x0 };
            let mut b = vec![0u8; 58];
            b[0..2].copy_from_slice(&(0x2 | (port_type << 4)).to_le_bytes()); // v2
            let devcap: u32 = if self.flr { 1 << 28 } else { 0 };
            b[2..6].copy_from_slice(&devcap.to_le_bytes());
            caps.push((0x10, b));
        }
        if let Some(m) = self.msix {
            let mut b = vec![0u8; 10];
            b[0..2].copy_from_slice(&(m.vectors - 1).to_le_bytes());
            b[2..6].copy_from_slice(&(m.table_offset | m.table_bar as u32).to_le_bytes());
            b[6..10].copy_from_slice(&(m.pba_offset | m.pba_bar as u32).to_le_bytes());
            caps.push((0x11, b));
        }
        let mut at = 0x40usize;
        c[0x34] = at as u8;
        c[6] |= 0x10; // status: capability list
        let n = caps.len();
        for (i, (id, body)) in caps.into_iter().enumerate() {
            let len = (2 + body.len() + 3) & !3;
            let next = if i + 1 == n { 0 } else { at + len };
            c[at] = id;
            c[at + 1] = next as u8;
            c[at + 2..at + 2 + body.len()].copy_from_slice(&body);
            at += len;
        }
        // Extended capabilities (PCIe only): SR-IOV when present.
        if self.pcie {
            if let Some(s) = &self.sriov {
                let hdr: u32 = 0x10 | (1 << 16);
                c[0x100..0x104].copy_from_slice(&hdr.to_le_bytes());
                c[0x10c..0x10e].copy_from_slice(&s.total_vfs.to_le_bytes()); // InitialVFs
                c[0x10e..0x110].copy_from_slice(&s.total_vfs.to_le_bytes()); // TotalVFs
                c[0x11a..0x11c].copy_from_slice(&s.vf_device.to_le_bytes());
            }
        }
        for (off, bytes) in &self.config_patches {
            let off = *off as usize;
            let end = (off + bytes.len()).min(4096);
            c[off..end].copy_from_slice(&bytes[..end - off]);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edu_image_has_ids_class_bar_and_msi() {
        let c = DeviceSpec::edu("0000:00:04.0").config_image();
        assert_eq!(&c[0..4], &[0x34, 0x12, 0xe8, 0x11]);
        assert_eq!(c[8], 0x10);
        assert_eq!(&c[9..12], &[0x00, 0xff, 0x00]);
        assert_eq!(c[0x3d], 1);
        assert_eq!(c[6] & 0x10, 0x10);
        // PM first, then MSI at its next pointer, ending the list.
        assert_eq!(c[0x40], 0x01);
        let msi = c[0x41] as usize;
        assert_eq!(c[msi], 0x05);
        assert_eq!(c[msi + 1], 0);
    }

    #[test]
    fn nvme_image_lists_msix_with_table_and_pba() {
        let c = DeviceSpec::nvme("0000:01:00.0").config_image();
        let mut p = c[0x34] as usize;
        let mut ids = vec![];
        while p != 0 {
            ids.push(c[p]);
            if c[p] == 0x11 {
                assert_eq!(u16::from_le_bytes([c[p + 2], c[p + 3]]) & 0x7ff, 64);
                assert_eq!(u32::from_le_bytes(c[p + 4..p + 8].try_into().unwrap()), 0x2000);
            }
            p = c[p + 1] as usize;
        }
        assert_eq!(ids, vec![0x01, 0x10, 0x11]);
        assert_eq!(c[0x10] & 0x6, 0x4); // 64-bit BAR0
    }

    #[test]
    fn bar_kinds_decode_as_described() {
        let mut d = DeviceSpec::new("0000:00:06.0");
        d.bars[0] = Some(BarSpec::io(0x100));
        d.bars[1] = Some(BarSpec { kind: BarKind::Memory1M, ..BarSpec::mem32(0x1000) });
        d.bars[2] = Some(BarSpec::mem64(0x4000));
        let sizes = d.bars.map(|b| b.map(|b| b.size));
        let opts = crate::pci::DecodeOptions { bar_sizes: sizes, rom_size: None };
        let c = crate::pci::decode_with(&d.config_image(), &opts).unwrap();
        let crate::pci::config::Header::Endpoint(h) = c.header else { panic!("{:?}", c.header) };
        let kinds: Vec<_> = h.bars.iter().map(|b| (b.index, b.kind, b.prefetchable)).collect();
        assert_eq!(
            kinds,
            [(0, BarKind::Io, false), (1, BarKind::Memory1M, false), (2, BarKind::Memory64, true)]
        );
    }
}
