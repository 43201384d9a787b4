//! Where `rom` reads a device's ROM from: the VFIO ROM region or the sysfs `rom`
//! attribute. The reading itself is the library's ([`vfio_core::Device::read_rom`],
//! [`SysfsDevice::read_rom`]); this module picks the source and describes it for
//! `--dry-run`.

use vfio_core::hostfs::SysfsDevice;
use vfio_core::rom::{MAX_ROM_BYTES, ROM_READ_CHUNK};
use vfio_core::{Interface, PciAddress, RegionIndex, Result, Vfio};

use crate::open::{open_live, vfio_usable};

/// Where a device's ROM is read from. Every source gives the ROM's bytes (at most
/// [`MAX_ROM_BYTES`], up to the image marked last) or an error that says what to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RomSource {
    /// VFIO when the device is bound to vfio-pci, else sysfs.
    #[default]
    Auto,
    /// The sysfs `rom` attribute of the device.
    Sysfs,
    /// The ROM region (index 6) of the device opened through VFIO (vfio-pci only).
    Vfio,
}

impl RomSource {
    /// The concrete source for `addr`: `Auto` becomes `Vfio` when the device is bound to
    /// vfio-pci and the host view has live VFIO device nodes (VFIO needs no ROM BAR
    /// toggling), else `Sysfs`.
    pub fn resolve(self, vfio: &Vfio, addr: PciAddress) -> RomSource {
        match self {
            RomSource::Auto if vfio_usable(vfio, addr) => RomSource::Vfio,
            RomSource::Auto => RomSource::Sysfs,
            other => other,
        }
    }

    /// Reads the ROM of `addr`.
    pub fn read(self, vfio: &Vfio, addr: PciAddress) -> Result<Vec<u8>> {
        match self.resolve(vfio, addr) {
            RomSource::Vfio => open_live(vfio, addr, Interface::Auto)?.read_rom(),
            _ => SysfsDevice::new(vfio.fs().as_ref(), addr).read_rom(),
        }
    }

    /// What reading does, for `--dry-run` and messages.
    pub fn describe(self, vfio: &Vfio, addr: PciAddress) -> Vec<String> {
        let rom = SysfsDevice::new(vfio.fs().as_ref(), addr).attr_path("rom");
        let chunks =
            format!("in {} KiB chunks (at most {} MiB)", ROM_READ_CHUNK >> 10, MAX_ROM_BYTES >> 20);
        match self.resolve(vfio, addr) {
            RomSource::Vfio => vec![
                format!("open {addr} through VFIO (iommufd or the container of its group)"),
                format!("read the ROM region (index {}) with pread {chunks}", RegionIndex::ROM),
                "keep the images up to the one marked last (what sysfs `rom` returns)".into(),
                format!("close {addr}"),
            ],
            _ => vec![
                format!("write \"1\" to {} (enables the ROM BAR)", rom.display()),
                format!("read {} {chunks}", rom.display()),
                format!(
                    "write \"0\" to {} (disables it again, also when the read fails)",
                    rom.display()
                ),
            ],
        }
    }
}
