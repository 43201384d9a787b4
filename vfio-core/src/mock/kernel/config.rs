//! PCI config space through the config region (drivers/vfio/pci/vfio_pci_config.c):
//! its size, the capability list, and writes filtered by per-byte write masks (one
//! image with masks here, where vfio keeps a virtual and a hardware config space).
//! Setting "Initiate FLR" in the PCIe device control register resets the function.

use super::le::{rd16, wr32};
use super::region::{rom_bar_size, Rw};
use super::reset::reset_function;
use super::state::KernelState;
use crate::kernel::{Errno, KResult};
use crate::mock::SimDevice;
use crate::pci::config::BarKind;
use crate::pci::PciAddress;

/// pread/pwrite at `pos` of the config region of `dev`.
pub(super) fn access(
    k: &mut KernelState,
    dev: &mut SimDevice,
    addr: PciAddress,
    pos: u64,
    rw: Rw<'_>,
) -> KResult<usize> {
    // vfio_exp_config_write: setting "Initiate FLR" in the PCIe device control
    // register resets the function (when it can do FLR).
    let flr_at = find_cap(&dev.config, 0x10).map(|p| (p + 9) as u64);
    let flr = match (&rw, flr_at) {
        (Rw::Write(buf), Some(at)) if dev.spec.flr && at >= pos => {
            buf.get((at - pos) as usize).is_some_and(|b| b & 0x80 != 0)
        }
        _ => false,
    };
    let n = config_rw(dev, pos, rw)?;
    if flr {
        reset_function(k, addr);
    }
    Ok(n)
}

/// The config space size (`pci_cfg_space_size`).
pub(super) fn cfg_size(d: &SimDevice) -> u64 {
    // pci_cfg_space_size(): 4096 only for PCIe (extended config space).
    if d.spec.pcie {
        4096
    } else {
        256
    }
}

/// Walks the standard capability list of a config image; returns the offset of `id`.
pub(super) fn find_cap(c: &[u8], id: u8) -> Option<usize> {
    if c.len() < 0x40 || c[6] & 0x10 == 0 {
        return None;
    }
    let mut p = (c[0x34] & !3) as usize;
    let mut guard = 0;
    while p >= 0x40 && p + 1 < c.len() && guard < 48 {
        if c[p] == id {
            return Some(p);
        }
        p = (c[p + 1] & !3) as usize;
        guard += 1;
    }
    None
}

/// Per-byte write mask of the config space, as the hardware and vfio's permission
/// tables (drivers/vfio/pci/vfio_pci_config.c) let a user write it.
fn config_wmask(dev: &SimDevice) -> Vec<u8> {
    let size = cfg_size(dev) as usize;
    let mut m = vec![0u8; size];
    let c = &dev.config;
    // Command: I/O, memory, bus master, parity, SERR, INTx disable.
    m[4] = 0x47;
    m[5] = 0x05;
    m[0x0c] = 0xff;
    m[0x0d] = 0xff;
    let (nbars, rom_at) = if dev.spec.bridge { (2, 0x38) } else { (6, 0x30) };
    let mut i = 0;
    while i < nbars {
        let off = 0x10 + 4 * i;
        if let Some(b) = dev.spec.bars[i] {
            let sizemask = !(b.size.max(16) - 1);
            match b.kind {
                BarKind::Io => wr32(&mut m, off, (sizemask as u32) & !0x3),
                BarKind::Memory32 | BarKind::Memory1M => {
                    wr32(&mut m, off, (sizemask as u32) & !0xf)
                }
                BarKind::Memory64 => {
                    wr32(&mut m, off, (sizemask as u32) & !0xf);
                    if i + 1 < nbars {
                        wr32(&mut m, off + 4, (sizemask >> 32) as u32);
                    }
                    i += 1;
                }
            }
        }
        i += 1;
    }
    if dev.spec.rom.is_some() {
        let rs = rom_bar_size(dev);
        wr32(&mut m, rom_at, (!(rs - 1) as u32) | 1);
    }
    m[0x3c] = 0xff;
    if dev.spec.bridge {
        for o in (0x18..0x1c).chain(0x1c..0x1e).chain(0x20..0x30).chain(0x3e..0x40) {
            m[o] = 0xff;
        }
    }
    if let Some(p) = find_cap(c, 0x01) {
        m[p + 4] = 0x03; // PMCSR power state
    }
    if let Some(p) = find_cap(c, 0x05) {
        let ctl = rd16(c, p + 2);
        m[p + 2] = 0x71; // enable, multiple message enable
        let is64 = ctl & 0x80 != 0;
        m[p + 4..p + 8].copy_from_slice(&[0xfc, 0xff, 0xff, 0xff]);
        let data_at = if is64 {
            m[p + 8..p + 12].fill(0xff);
            p + 12
        } else {
            p + 8
        };
        m[data_at..data_at + 2].fill(0xff);
    }
    if let Some(p) = find_cap(c, 0x11) {
        m[p + 3] = 0xc0; // MSI-X enable, function mask
    }
    if let Some(p) = find_cap(c, 0x10) {
        m[p + 8] = 0xff; // device control
        m[p + 9] = 0x7f;
        m[p + 0x10] = 0xfb; // link control
        m[p + 0x11] = 0x0f;
    }
    m
}

fn config_rw(dev: &mut SimDevice, pos: u64, rw: Rw<'_>) -> KResult<usize> {
    // vfio_pci_config_rw: EINVAL at or past cfg_size, short access at the end.
    let size = cfg_size(dev);
    if pos >= size {
        return Err(Errno::EINVAL);
    }
    let p = pos as usize;
    match rw {
        Rw::Read(buf) => {
            let n = buf.len().min((size - pos) as usize);
            buf[..n].copy_from_slice(&dev.config[p..p + n]);
            Ok(n)
        }
        Rw::Write(buf) => {
            let n = buf.len().min((size - pos) as usize);
            let m = config_wmask(dev);
            for (i, v) in buf[..n].iter().enumerate() {
                let o = p + i;
                dev.config[o] = (dev.config[o] & !m[o]) | (v & m[o]);
            }
            Ok(n)
        }
    }
}
