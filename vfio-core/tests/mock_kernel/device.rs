//! Device info, regions and their capabilities, config space, BAR mmap and ROM
//! (`vfio_pci_core.c`, `vfio_pci_rdwr.c`, `vfio_pci_config.c`).

use super::*;

const MB: u64 = 1 << 20;

fn region_info(k: &MockKernel, d: &KernelFd, index: u32, room: usize) -> KResult<Vec<u8>> {
    let mut b = vec![0u8; room];
    b[0..4].copy_from_slice(&(room as u32).to_le_bytes());
    b[8..12].copy_from_slice(&index.to_le_bytes());
    k.device_get_region_info(d, &mut b).map(|_| b)
}

#[test]
fn device_info_flags_and_counts() {
    let (_h, k) = edu_host();
    let d = open_edu(&k);
    let mut b = vec![0u8; 24];
    b[0..4].copy_from_slice(&24u32.to_le_bytes());
    k.device_get_info(&d, &mut b).unwrap();
    assert_eq!(u32_at(&b, 4), VFIO_DEVICE_FLAGS_PCI);
    assert_eq!((u32_at(&b, 8), u32_at(&b, 12)), (9, 5));
    let (_h2, k2, d2) = nvme_host("0000:01:00.0");
    k2.device_get_info(&d2, &mut b).unwrap();
    assert_eq!(u32_at(&b, 4), VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET);
    b[0..4].copy_from_slice(&8u32.to_le_bytes());
    assert_eq!(k2.device_get_info(&d2, &mut b).unwrap_err(), Errno::EINVAL);
}

#[test]
fn region_info_for_standard_regions() {
    let (_h, k) = edu_host();
    let d = open_edu(&k);
    let b = region_info(&k, &d, 0, 32).unwrap();
    assert_eq!(
        u32_at(&b, 4),
        VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE | VFIO_REGION_INFO_FLAG_MMAP
    );
    assert_eq!((u64_at(&b, 16), u64_at(&b, 24)), (MB, 0));
    let b = region_info(&k, &d, 1, 32).unwrap();
    assert_eq!((u32_at(&b, 4), u64_at(&b, 16), u64_at(&b, 24)), (0, 0, 1 << 40));
    let b = region_info(&k, &d, 7, 32).unwrap();
    assert_eq!((u64_at(&b, 16), u64_at(&b, 24)), (256, 7 << 40), "conventional PCI: 256 bytes");
    let b = region_info(&k, &d, 6, 32).unwrap();
    assert_eq!((u32_at(&b, 4), u64_at(&b, 16)), (0, 0), "no ROM");
    assert_eq!(region_info(&k, &d, 8, 32).unwrap_err(), Errno::EINVAL, "not VGA");
    assert_eq!(region_info(&k, &d, 9, 32).unwrap_err(), Errno::EINVAL);
    // argsz below offsetofend(offset).
    let mut b = vec![0u8; 32];
    b[0..4].copy_from_slice(&16u32.to_le_bytes());
    assert_eq!(k.device_get_region_info(&d, &mut b).unwrap_err(), Errno::EINVAL);
}

#[test]
fn msix_bar_capabilities_new_and_old_kernels() {
    let (host, k, d) = nvme_host("0000:01:00.0");
    let b = region_info(&k, &d, 0, 32).unwrap();
    assert_ne!(u32_at(&b, 4) & VFIO_REGION_INFO_FLAG_CAPS, 0);
    assert_eq!(u32_at(&b, 0), 40, "argsz raised for the 8-byte MSI-X mappable cap");
    assert_eq!(u32_at(&b, 12), 0);
    let b = region_info(&k, &d, 0, 40).unwrap();
    assert_eq!(u32_at(&b, 12), 32);
    assert_eq!(u16::from_le_bytes([b[32], b[33]]) as u32, VFIO_REGION_INFO_CAP_MSIX_MAPPABLE);
    assert_eq!(u32_at(&b, 36), 0);
    host.set_kernel_config(MockKernelConfig { msix_mappable: false, ..Default::default() });
    let b = region_info(&k, &d, 0, 128).unwrap();
    let at = u32_at(&b, 12) as usize;
    assert_eq!(u16::from_le_bytes([b[at], b[at + 1]]) as u32, VFIO_REGION_INFO_CAP_SPARSE_MMAP);
    // 16 KiB BAR, table at 0x2000 (65 * 16 bytes): areas [0, 0x2000) and [0x3000, 0x4000).
    assert_eq!(u32_at(&b, at + 8), 2);
    assert_eq!((u64_at(&b, at + 16), u64_at(&b, at + 24)), (0, 0x2000));
    assert_eq!((u64_at(&b, at + 32), u64_at(&b, at + 40)), (0x3000, 0x1000));
    // Old kernels refuse mmaps over the table.
    assert_eq!(k.mmap(&d, 0x2000, PAGE as usize, libc::PROT_READ).unwrap_err(), Errno::EINVAL);
    let p = k.mmap(&d, 0, PAGE as usize, libc::PROT_READ).unwrap();
    // SAFETY: exactly the mapping just made, unused afterwards.
    unsafe { k.munmap(p, PAGE as usize).unwrap() };
}

#[test]
fn atomic_completer_capability_and_vga_region() {
    let mut spec = DeviceSpec::nvme("0000:01:00.0").group(7).driver("vfio-pci");
    spec.class = 0x030000; // VGA controller
    let host = MockHost::new([spec]);
    {
        let mut st = host.state();
        let c = &mut st.devices.get_mut(&pa("0000:01:00.0")).unwrap().config;
        let mut p = c[0x34] as usize;
        while c[p] != 0x10 {
            p = c[p + 1] as usize;
        }
        c[p + 0x24] |= 0x80; // DEVCAP2 bit 7: 32-bit AtomicOp completer
        c[p + 0x25] |= 0x01; // bit 8: 64-bit completer
    }
    let k = host.kernel();
    let (_c, g) = legacy(&k, 7);
    let d = dev_fd(&k, &g, "0000:01:00.0").unwrap();
    let mut b = vec![0u8; 24];
    b[0..4].copy_from_slice(&24u32.to_le_bytes());
    k.device_get_info(&d, &mut b).unwrap();
    assert_eq!(u32_at(&b, 4) & VFIO_DEVICE_FLAGS_CAPS, VFIO_DEVICE_FLAGS_CAPS);
    assert_eq!((u32_at(&b, 0), u32_at(&b, 16)), (40, 0));
    let mut b = vec![0u8; 40];
    b[0..4].copy_from_slice(&40u32.to_le_bytes());
    k.device_get_info(&d, &mut b).unwrap();
    assert_eq!(u32_at(&b, 16), 24);
    assert_eq!(u16::from_le_bytes([b[24], b[25]]) as u32, VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP);
    assert_eq!(u32_at(&b, 32), VFIO_PCI_ATOMIC_COMP32 | VFIO_PCI_ATOMIC_COMP64);
    // A VGA-class device has the legacy VGA region.
    let v = region_info(&k, &d, 8, 32).unwrap();
    assert_eq!((u64_at(&v, 16), u64_at(&v, 24)), (0xc0000, 8 << 40));
    host.set_kernel_config(MockKernelConfig { vga: false, ..Default::default() });
    assert_eq!(region_info(&k, &d, 8, 32).unwrap_err(), Errno::EINVAL);
}

#[test]
fn extra_region_reports_its_type() {
    let mut spec = DeviceSpec::edu(EDU).group(1).driver("vfio-pci");
    spec.extra_regions.push(RegionSpec {
        region_type: VFIO_REGION_TYPE_GFX,
        subtype: VFIO_REGION_SUBTYPE_GFX_EDID,
        size: 0x100,
        writable: true,
        data: b"EDID".to_vec(),
    });
    let host = MockHost::new([spec]);
    let k = host.kernel();
    let d = open_edu(&k);
    let mut info = vec![0u8; 24];
    info[0..4].copy_from_slice(&24u32.to_le_bytes());
    k.device_get_info(&d, &mut info).unwrap();
    assert_eq!(u32_at(&info, 8), 10);
    let b = region_info(&k, &d, 9, 48).unwrap();
    assert_eq!(u64_at(&b, 24), 9 << 40);
    assert_eq!(u64_at(&b, 16), 0x100);
    assert_eq!(u16::from_le_bytes([b[32], b[33]]) as u32, VFIO_REGION_INFO_CAP_TYPE);
    assert_eq!(
        (u32_at(&b, 40), u32_at(&b, 44)),
        (VFIO_REGION_TYPE_GFX, VFIO_REGION_SUBTYPE_GFX_EDID)
    );
    let mut r = [0u8; 4];
    k.region_read(&d, 9 << 40, &mut r).unwrap();
    assert_eq!(&r, b"EDID");
}

#[test]
fn config_space_masks_and_bar_sizing() {
    let (host, k) = edu_host();
    let d = open_edu(&k);
    let cfg = 7u64 << 40;
    let mut b = [0u8; 4];
    k.region_read(&k_dev(&d), cfg, &mut b).unwrap();
    assert_eq!(b, [0x34, 0x12, 0xe8, 0x11]);
    // IDs are read-only.
    k.region_write(&d, cfg, &[0xff; 4]).unwrap();
    k.region_read(&d, cfg, &mut b).unwrap();
    assert_eq!(b, [0x34, 0x12, 0xe8, 0x11]);
    // Opening enabled memory decode; bus master is writable; the write shows in sysfs.
    let mut cmd = [0u8; 2];
    k.region_read(&d, cfg + 4, &mut cmd).unwrap();
    assert_eq!(cmd[0] & 0x2, 0x2);
    k.region_write(&d, cfg + 4, &[cmd[0] | 0x4 | 0x80, cmd[1]]).unwrap();
    k.region_read(&d, cfg + 4, &mut cmd).unwrap();
    assert_eq!(cmd[0] & 0x86, 0x06, "bit 7 is reserved, read-only");
    assert_eq!(host.state().devices[&pa(EDU)].config[4] & 0x4, 0x4);
    // BAR sizing: all ones reads back the size mask with the type bits.
    k.region_write(&d, cfg + 0x10, &[0xff; 4]).unwrap();
    k.region_read(&d, cfg + 0x10, &mut b).unwrap();
    assert_eq!(u32::from_le_bytes(b), 0xfff0_0000);
    // Unimplemented BAR reads 0 after sizing.
    k.region_write(&d, cfg + 0x14, &[0xff; 4]).unwrap();
    k.region_read(&d, cfg + 0x14, &mut b).unwrap();
    assert_eq!(u32::from_le_bytes(b), 0);
    // MSI enable bit writable; the next pointer is not.
    let msi = host.state().devices[&pa(EDU)].config[0x41] as u64;
    let mut ctl = [0u8; 4];
    k.region_read(&d, cfg + msi, &mut ctl).unwrap();
    k.region_write(&d, cfg + msi, &[0xff, 0xff, ctl[2] | 1, ctl[3]]).unwrap();
    let mut after = [0u8; 4];
    k.region_read(&d, cfg + msi, &mut after).unwrap();
    assert_eq!(&after[..2], &ctl[..2]);
    assert_eq!(after[2] & 1, 1);
    // Bounds: at the end a short read, past it EINVAL.
    let mut big = [0u8; 16];
    assert_eq!(k.region_read(&d, cfg + 250, &mut big).unwrap(), 6);
    assert_eq!(k.region_read(&d, cfg + 256, &mut big).unwrap_err(), Errno::EINVAL);
    assert_eq!(k.region_read(&d, 20 << 40, &mut big).unwrap_err(), Errno::EINVAL);
}

/// The same descriptor (keeps call sites symmetric).
fn k_dev(d: &KernelFd) -> KernelFd {
    KernelFd::from_raw(d.raw())
}

#[test]
fn bar_mmap_and_pread_share_memory() {
    let (_h, k) = edu_host();
    let d = open_edu(&k);
    let p = k.mmap(&d, 0, PAGE as usize, libc::PROT_READ | libc::PROT_WRITE).unwrap();
    assert_eq!(k.mmaps(), 1);
    // SAFETY: p is a live 4 KiB shared mapping of BAR0.
    unsafe { p.as_ptr().add(0x10).copy_from_nonoverlapping(b"abcd".as_ptr(), 4) };
    let mut b = [0u8; 4];
    k.region_read(&d, 0x10, &mut b).unwrap();
    assert_eq!(&b, b"abcd");
    k.region_write(&d, 0x20, b"wxyz").unwrap();
    // SAFETY: as above.
    let seen = unsafe { std::slice::from_raw_parts(p.as_ptr().add(0x20), 4) }.to_vec();
    assert_eq!(&seen, b"wxyz");
    // SAFETY: exactly the mapping returned above, not used afterwards.
    unsafe { k.munmap(p, PAGE as usize).unwrap() };
    assert_eq!(k.mmaps(), 0);
    assert_eq!(k.mmap(&d, MB, PAGE as usize, libc::PROT_READ).unwrap_err(), Errno::EINVAL);
    assert_eq!(k.mmap(&d, 0x800, PAGE as usize, libc::PROT_READ).unwrap_err(), Errno::EINVAL);
    assert_eq!(k.mmap(&d, 7 << 40, PAGE as usize, libc::PROT_READ).unwrap_err(), Errno::EINVAL);
    // Short read at the end of the BAR, EINVAL past it.
    let mut big = [0u8; 8];
    assert_eq!(k.region_read(&d, MB - 4, &mut big).unwrap(), 4);
    assert_eq!(k.region_read(&d, MB, &mut big).unwrap_err(), Errno::EINVAL);
    // Memory decode off: BAR access fails with EIO.
    let mut cmd = [0u8; 2];
    k.region_read(&d, (7 << 40) + 4, &mut cmd).unwrap();
    k.region_write(&d, (7 << 40) + 4, &[cmd[0] & !2, cmd[1]]).unwrap();
    assert_eq!(k.region_read(&d, 0, &mut big).unwrap_err(), Errno::EIO);
}

#[test]
fn msix_table_is_hidden_from_pread() {
    let (_h, k, d) = nvme_host("0000:01:00.0");
    k.region_write(&d, 0x2000, &[1, 2, 3, 4]).unwrap();
    let mut b = [0u8; 4];
    k.region_read(&d, 0x2000, &mut b).unwrap();
    assert_eq!(b, [0xff; 4]);
    k.region_write(&d, 0x3000, &[1, 2, 3, 4]).unwrap();
    k.region_read(&d, 0x3000, &mut b).unwrap();
    assert_eq!(b, [1, 2, 3, 4]);
    // The config region of a PCIe device is 4 KiB.
    let b = region_info(&k, &d, 7, 32).unwrap();
    assert_eq!(u64_at(&b, 16), 4096);
}

/// A one-image legacy ROM of `blocks` 512-byte units, PCIR at 0x1c, last image.
fn rom_image(blocks: u16) -> Vec<u8> {
    let mut r = vec![0u8; 512 * blocks as usize];
    r[0] = 0x55;
    r[1] = 0xaa;
    r[2] = blocks as u8;
    r[0x18..0x1a].copy_from_slice(&0x1cu16.to_le_bytes());
    r[0x1c..0x20].copy_from_slice(b"PCIR");
    r[0x1c + 16..0x1c + 18].copy_from_slice(&blocks.to_le_bytes());
    r[0x1c + 21] = 0x80;
    r
}

#[test]
fn rom_region_reads_image_then_ones() {
    let mut spec = DeviceSpec::edu(EDU).group(1).driver("vfio-pci");
    let mut rom = rom_image(1);
    rom.extend_from_slice(&[0xab; 600]); // junk past the image
    spec.rom = Some(rom);
    let host = MockHost::new([spec]);
    let k = host.kernel();
    let d = open_edu(&k);
    let b = region_info(&k, &d, 6, 32).unwrap();
    assert_eq!((u32_at(&b, 4), u64_at(&b, 16)), (VFIO_REGION_INFO_FLAG_READ, 2048));
    let mut r = [0u8; 4];
    k.region_read(&d, 6 << 40, &mut r).unwrap();
    assert_eq!(r[..2], [0x55, 0xaa]);
    // Past the image (512 bytes) the ROM reads 0xff, not the junk behind it.
    k.region_read(&d, (6 << 40) + 512, &mut r).unwrap();
    assert_eq!(r, [0xff; 4]);
    assert_eq!(k.region_write(&d, 6 << 40, &r).unwrap_err(), Errno::EINVAL);
    assert_eq!(k.region_read(&d, (6 << 40) + 2048, &mut r).unwrap_err(), Errno::EINVAL);
    assert_eq!(k.region_read(&d, 6 << 40, &mut []).unwrap(), 0);
}

#[test]
fn rom_without_a_valid_image_is_empty() {
    let mut spec = DeviceSpec::edu(EDU).group(1).driver("vfio-pci");
    spec.rom = Some(vec![0x55, 0xaa, 0x01]); // no PCIR structure
    let host = MockHost::new([spec]);
    let k = host.kernel();
    let d = open_edu(&k);
    let b = region_info(&k, &d, 6, 32).unwrap();
    assert_eq!((u32_at(&b, 4), u64_at(&b, 16)), (0, 0));
    let mut r = [0u8; 4];
    assert_eq!(k.region_read(&d, 6 << 40, &mut r).unwrap_err(), Errno::ENOMEM);
}
