//! An open VFIO device: its info, regions (pread/pwrite), config space, and what holds
//! it open (a group in a container, or an iommufd binding).
//!
//! Interrupts are in [`crate::irq`], memory-mapped BARs in [`crate::region`], resets in
//! [`crate::reset`]; all are methods of [`Device`].

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::feature::{token_error, VfToken};
use crate::group::Group;
use crate::info::{
    parse_device_info, parse_region_info, DeviceInfo, RegionFlags, RegionIndex, RegionInfo,
    DEVICE_INFO_SIZE, REGION_INFO_SIZE,
};
use crate::iommufd::Ioas;
use crate::kernel::{
    vfio_device_attach_iommufd_pt, vfio_device_bind_iommufd, vfio_device_detach_iommufd_pt, Errno,
    KernelFd, KernelOp, VfioKernel,
};
use crate::pci::PciAddress;
use crate::rom::{trim_to_images, MAX_ROM_BYTES, ROM_READ_CHUNK};

/// What keeps a device fd usable: the device must close before these go.
#[derive(Debug)]
pub(crate) enum Owner {
    /// Opened through a group of a container.
    Group(Arc<Group>),
    /// Opened through its cdev and bound to an iommufd, attached to an IOAS.
    Iommufd {
        /// The IOAS it is attached to.
        ioas: Arc<Ioas>,
        /// Its iommufd device id.
        devid: u32,
    },
}

/// An open VFIO device.
#[derive(Debug)]
pub struct Device {
    kernel: Arc<dyn VfioKernel>,
    fd: Option<KernelFd>,
    name: String,
    address: Option<PciAddress>,
    info: DeviceInfo,
    regions: Vec<RegionInfo>,
    owner: Owner,
}

impl Device {
    /// Opens a device of a group (`VFIO_GROUP_GET_DEVICE_FD`) and reads its info.
    pub fn open_in_group(group: &Arc<Group>, address: PciAddress) -> Result<Device> {
        Device::open_named_in_group(group, &address.to_string())
    }

    /// Opens a device of a group by the name the kernel knows it by: a PCI address
    /// (`0000:01:00.0`) or a mediated device's UUID.
    pub fn open_named_in_group(group: &Arc<Group>, name: &str) -> Result<Device> {
        Device::open_in_group_token(group, name, None)
    }

    /// As [`Device::open_named_in_group`], presenting a VF token: the kernel's name
    /// `"<address> vf_token=<uuid>"` (a VF whose PF is on vfio-pci, or such a PF while its
    /// VFs are open). A missing or wrong token is [`Error::VfToken`].
    pub fn open_in_group_token(
        group: &Arc<Group>,
        name: &str,
        token: Option<&VfToken>,
    ) -> Result<Device> {
        let fd = match token {
            None => group.device_fd(name),
            Some(t) => group.device_fd(&format!("{name} vf_token={t}")),
        }
        .map_err(|e| token_error(name, token, e))?;
        let kernel = group.container().kernel().clone();
        Device::init(kernel, fd, name.to_string(), Owner::Group(group.clone()))
    }

    /// As [`Device::open_named_cdev`], binding with a VF token
    /// (`VFIO_DEVICE_BIND_FLAG_TOKEN`; 7.2 has it, 6.12 refuses the flag with EINVAL). A
    /// missing or wrong token is [`Error::VfToken`].
    pub fn open_cdev_token(
        ioas: &Arc<Ioas>,
        name: &str,
        cdev: u32,
        token: Option<&VfToken>,
    ) -> Result<Device> {
        let fd = Device::open_cdev_node(ioas.iommufd().kernel(), name, cdev)?;
        Device::bind_cdev_token(ioas, fd, name.to_string(), token)
    }

    /// Opens a device cdev (`/dev/vfio/devices/vfio<cdev>`), binds it to the IOAS's iommufd
    /// and attaches it to the IOAS.
    pub fn open_cdev(ioas: &Arc<Ioas>, address: PciAddress, cdev: u32) -> Result<Device> {
        Device::open_named_cdev(ioas, &address.to_string(), cdev)
    }

    /// As [`Device::open_cdev`] for a device named otherwise (a mediated device's UUID);
    /// `name` is how the device and its errors are named.
    pub fn open_named_cdev(ioas: &Arc<Ioas>, name: &str, cdev: u32) -> Result<Device> {
        let fd = Device::open_cdev_node(ioas.iommufd().kernel(), name, cdev)?;
        Device::bind_cdev(ioas, fd, name.to_string())
    }

    /// Opens `/dev/vfio/devices/vfio<cdev>` of device `name`, with the fix for each
    /// failure.
    pub(crate) fn open_cdev_node(
        kernel: &Arc<dyn VfioKernel>,
        name: &str,
        cdev: u32,
    ) -> Result<KernelFd> {
        let target = format!("device {name}");
        kernel.open_device_cdev(cdev).map_err(|e| {
            let err = Error::kernel(KernelOp::OpenDeviceCdev, &target, e);
            match e {
                Errno::ENOENT => err.with_hint(format!(
                    "/dev/vfio/devices/vfio{cdev} does not exist: is {}?",
                    if crate::hostfs::is_uuid(name) {
                        "the mediated device bound to its mdev driver"
                    } else {
                        "the device bound to vfio-pci"
                    }
                )),
                Errno::EBUSY => err.with_hint("the device is already open"),
                _ => err,
            }
        })
    }

    /// A device on a cdev descriptor (`/dev/vfio/devices/vfioN`) opened elsewhere (a
    /// privileged parent passed it), bound to the IOAS's iommufd and attached to the IOAS.
    /// `name` is how errors name it (its PCI address). Nothing is opened by path and no
    /// sysfs is read.
    pub fn from_cdev_fd(ioas: &Arc<Ioas>, fd: std::os::fd::OwnedFd, name: &str) -> Result<Device> {
        let kernel = ioas.iommufd().kernel().clone();
        let fd = kernel
            .adopt(fd)
            .map_err(|e| Error::kernel(KernelOp::AdoptFd, format!("device {name}"), e))?;
        Device::bind_cdev(ioas, fd, name.to_string())
    }

    fn bind_cdev(ioas: &Arc<Ioas>, fd: KernelFd, name: String) -> Result<Device> {
        Device::bind_cdev_token(ioas, fd, name, None)
    }

    fn bind_cdev_token(
        ioas: &Arc<Ioas>,
        fd: KernelFd,
        name: String,
        token: Option<&VfToken>,
    ) -> Result<Device> {
        let kernel = ioas.iommufd().kernel().clone();
        let target = format!("device {name}");
        let mut bind = vfio_device_bind_iommufd {
            argsz: std::mem::size_of::<vfio_device_bind_iommufd>() as u32,
            flags: 0,
            iommufd: ioas.iommufd().fd().raw(),
            out_devid: 0,
            token_uuid_ptr: 0,
        };
        let bound = match token {
            None => kernel.device_bind_iommufd(&fd, &mut bind),
            Some(t) => kernel.device_bind_iommufd_with_token(&fd, &mut bind, &t.0),
        };
        if let Err(e) = bound {
            kernel.close(fd);
            let err = Error::kernel(KernelOp::DeviceBindIommufd, &target, e);
            if matches!(e, Errno::EACCES | Errno::EINVAL) {
                return Err(token_error(&name, token, err));
            }
            return Err(if e == Errno::EPERM {
                err.with_hint(
                    "the IOMMU has no interrupt remapping; if you accept the risk: \
                     iommufd.allow_unsafe_interrupts=1",
                )
            } else {
                err
            });
        }
        let mut attach = vfio_device_attach_iommufd_pt {
            argsz: std::mem::size_of::<vfio_device_attach_iommufd_pt>() as u32,
            flags: 0,
            pt_id: ioas.id(),
            pasid: 0,
        };
        if let Err(e) = kernel.device_attach_iommufd_pt(&fd, &mut attach) {
            kernel.close(fd);
            return Err(Error::kernel(KernelOp::DeviceAttachIommufdPt, &target, e));
        }
        let owner = Owner::Iommufd { ioas: ioas.clone(), devid: bind.out_devid };
        Device::init(kernel, fd, name, owner)
    }

    fn init(
        kernel: Arc<dyn VfioKernel>,
        fd: KernelFd,
        name: String,
        owner: Owner,
    ) -> Result<Device> {
        let address = PciAddress::parse(&name).ok();
        let mut dev = Device {
            kernel,
            fd: Some(fd),
            name,
            address,
            info: DeviceInfo { flags: 0, num_regions: 0, num_irqs: 0 },
            regions: Vec::new(),
            owner,
        };
        // On error `dev` is dropped, which closes the fd (and detaches).
        dev.info = dev.read_info()?;
        dev.regions = (0..dev.info.num_regions.min(64))
            .map(RegionIndex::new)
            .map(|i| match dev.read_region_info(i) {
                // vfio-pci answers EINVAL for regions the device lacks (VGA on a
                // non-VGA device): an absent region, not a failure. BARs, the ROM and
                // config space always answer (size 0 when absent), so EINVAL there is
                // a real failure.
                Err(e)
                    if e.errno() == Some(Errno::EINVAL)
                        && (i >= RegionIndex::VGA || !dev.info.is_pci()) =>
                {
                    Ok(RegionInfo::absent(i))
                }
                other => other,
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(dev)
    }

    #[inline]
    pub(crate) fn kernel(&self) -> &Arc<dyn VfioKernel> {
        &self.kernel
    }

    #[inline]
    pub(crate) fn fd(&self) -> &KernelFd {
        self.fd.as_ref().expect("device fd is present until drop")
    }

    pub(crate) fn target(&self) -> String {
        format!("device {}", self.name)
    }

    #[cold]
    pub(crate) fn kerr(&self, op: KernelOp, e: Errno) -> Error {
        Error::kernel(op, self.target(), e)
    }

    fn read_info(&self) -> Result<DeviceInfo> {
        let mut buf = [0u8; DEVICE_INFO_SIZE];
        buf[..4].copy_from_slice(&(DEVICE_INFO_SIZE as u32).to_ne_bytes());
        self.kernel
            .device_get_info(self.fd(), &mut buf)
            .map_err(|e| self.kerr(KernelOp::DeviceGetInfo, e))?;
        parse_device_info(&buf).ok_or_else(|| self.kerr(KernelOp::DeviceGetInfo, Errno::EINVAL))
    }

    fn read_region_info(&self, index: RegionIndex) -> Result<RegionInfo> {
        let mut buf = vec![0u8; REGION_INFO_SIZE];
        for _ in 0..4 {
            let len = buf.len() as u32;
            buf[..4].copy_from_slice(&len.to_ne_bytes());
            buf[8..12].copy_from_slice(&index.raw().to_ne_bytes());
            self.kernel
                .device_get_region_info(self.fd(), &mut buf)
                .map_err(|e| self.kerr(KernelOp::DeviceGetRegionInfo, e))?;
            let need = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if need <= buf.len() {
                break;
            }
            buf = vec![0u8; need.min(1 << 20)];
        }
        parse_region_info(&buf)
            .ok_or_else(|| self.kerr(KernelOp::DeviceGetRegionInfo, Errno::EINVAL))
    }

    /// The device name the kernel knows it by (`0000:01:00.0`, or a mediated device's
    /// UUID).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The PCI address, when the name is one.
    pub fn address(&self) -> Option<PciAddress> {
        self.address
    }

    /// `VFIO_DEVICE_GET_INFO`.
    pub fn info(&self) -> DeviceInfo {
        self.info
    }

    /// All regions, by index.
    pub fn regions(&self) -> &[RegionInfo] {
        &self.regions
    }

    #[cold]
    fn no_region(&self, index: RegionIndex) -> Error {
        Error::NotFound {
            what: format!("region {index} of {}", self.target()),
            hint: Some(format!("the device has {} regions", self.regions.len())),
        }
    }

    #[cold]
    fn out_of_region(&self, index: RegionIndex, offset: u64, len: usize, size: u64) -> Error {
        Error::OutOfBounds {
            what: format!("region {index} of {}", self.target()),
            offset,
            len: len as u64,
            size,
        }
    }

    /// One region's info.
    #[inline]
    pub fn region(&self, index: impl Into<RegionIndex>) -> Result<&RegionInfo> {
        let index = index.into();
        match self.regions.get(index.raw() as usize) {
            Some(r) => Ok(r),
            None => Err(self.no_region(index)),
        }
    }

    /// The IOMMU group (legacy interface only).
    pub fn group(&self) -> Option<&Arc<Group>> {
        match &self.owner {
            Owner::Group(g) => Some(g),
            Owner::Iommufd { .. } => None,
        }
    }

    /// The iommufd device id (iommufd interface only).
    pub fn iommufd_devid(&self) -> Option<u32> {
        match &self.owner {
            Owner::Iommufd { devid, .. } => Some(*devid),
            Owner::Group(_) => None,
        }
    }

    /// How the device was opened: through a group, or bound to an iommufd. Its address
    /// space ([`Device::address_space`]) is in `dma`, which builds on this module.
    pub(crate) fn owner(&self) -> &Owner {
        &self.owner
    }

    #[inline]
    fn check_access(&self, index: RegionIndex, offset: u64, len: usize) -> Result<&RegionInfo> {
        let r = self.region(index)?;
        match offset.checked_add(len as u64) {
            Some(end) if end <= r.size => Ok(r),
            _ => Err(self.out_of_region(index, offset, len, r.size)),
        }
    }

    /// Reads `buf.len()` bytes at `offset` of a region (pread). No heap allocation.
    #[inline]
    pub fn read_region(
        &self,
        index: impl Into<RegionIndex>,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        let r = self.check_access(index.into(), offset, buf.len())?;
        let n = self
            .kernel
            .region_read(self.fd(), r.offset + offset, buf)
            .map_err(|e| self.kerr(KernelOp::RegionRead, e))?;
        if n != buf.len() {
            return Err(self.kerr(KernelOp::RegionRead, Errno::EIO));
        }
        Ok(())
    }

    /// Writes `buf` at `offset` of a region (pwrite). No heap allocation.
    #[inline]
    pub fn write_region(
        &self,
        index: impl Into<RegionIndex>,
        offset: u64,
        buf: &[u8],
    ) -> Result<()> {
        let r = self.check_access(index.into(), offset, buf.len())?;
        let n = self
            .kernel
            .region_write(self.fd(), r.offset + offset, buf)
            .map_err(|e| self.kerr(KernelOp::RegionWrite, e))?;
        if n != buf.len() {
            return Err(self.kerr(KernelOp::RegionWrite, Errno::EIO));
        }
        Ok(())
    }

    /// Reads a config-space byte.
    #[inline]
    pub fn config_read_u8(&self, offset: u16) -> Result<u8> {
        let mut b = [0u8; 1];
        self.read_region(RegionIndex::CONFIG, offset.into(), &mut b)?;
        Ok(b[0])
    }

    /// Reads a little-endian config-space word.
    #[inline]
    pub fn config_read_u16(&self, offset: u16) -> Result<u16> {
        let mut b = [0u8; 2];
        self.read_region(RegionIndex::CONFIG, offset.into(), &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// Reads a little-endian config-space dword.
    #[inline]
    pub fn config_read_u32(&self, offset: u16) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read_region(RegionIndex::CONFIG, offset.into(), &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Writes a config-space byte.
    #[inline]
    pub fn config_write_u8(&self, offset: u16, v: u8) -> Result<()> {
        self.write_region(RegionIndex::CONFIG, offset.into(), &[v])
    }

    /// Writes a little-endian config-space word.
    #[inline]
    pub fn config_write_u16(&self, offset: u16, v: u16) -> Result<()> {
        self.write_region(RegionIndex::CONFIG, offset.into(), &v.to_le_bytes())
    }

    /// Writes a little-endian config-space dword.
    #[inline]
    pub fn config_write_u32(&self, offset: u16, v: u32) -> Result<()> {
        self.write_region(RegionIndex::CONFIG, offset.into(), &v.to_le_bytes())
    }

    /// Reads the whole config region (256 bytes for conventional PCI, 4 KiB for PCIe).
    pub fn config_space(&self) -> Result<Vec<u8>> {
        let size = self.region(RegionIndex::CONFIG)?.size.min(4096) as usize;
        let mut buf = vec![0u8; size];
        self.read_region(RegionIndex::CONFIG, 0, &mut buf)?;
        Ok(buf)
    }

    /// Reads the option ROM through the VFIO ROM region ([`RegionIndex::ROM`]) with pread,
    /// in [`ROM_READ_CHUNK`] chunks, at most [`MAX_ROM_BYTES`], and keeps the images up to
    /// the one marked last ([`trim_to_images`]): the bytes the sysfs `rom` attribute
    /// gives, without enabling the ROM BAR through sysfs. A device without an expansion
    /// ROM BAR (an empty or unreadable region) is a [`Error::NotFound`]. The whole region,
    /// padding included, is [`Device::read_region`] of [`RegionIndex::ROM`].
    pub fn read_rom(&self) -> Result<Vec<u8>> {
        let region = self.region(RegionIndex::ROM)?;
        if region.size == 0 || !region.flags.contains(RegionFlags::READ) {
            return Err(Error::NotFound {
                what: format!("ROM of {} (the VFIO ROM region is empty)", self.name),
                hint: Some(
                    "the device has no expansion ROM BAR; use the vendor's ROM file instead".into(),
                ),
            });
        }
        let mut data = vec![0u8; region.size.min(MAX_ROM_BYTES) as usize];
        for (i, chunk) in data.chunks_mut(ROM_READ_CHUNK).enumerate() {
            self.read_region(RegionIndex::ROM, (i * ROM_READ_CHUNK) as u64, chunk)
                .map_err(|e| e.with_hint("is the device powered (not in D3cold)? check dmesg"))?;
        }
        Ok(trim_to_images(data))
    }

    /// Turns on memory decoding and bus mastering (command register bits 1 and 2), which
    /// a driver needs before MMIO and DMA.
    pub fn enable_bus_master(&self) -> Result<()> {
        let cmd = self.config_read_u16(0x04)?;
        self.config_write_u16(0x04, cmd | 0x6)
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let Some(fd) = self.fd.take() else { return };
        if let Owner::Iommufd { .. } = self.owner {
            let mut d = vfio_device_detach_iommufd_pt {
                argsz: std::mem::size_of::<vfio_device_detach_iommufd_pt>() as u32,
                flags: 0,
                pasid: 0,
            };
            let _ = self.kernel.device_detach_iommufd_pt(&fd, &mut d);
        }
        self.kernel.close(fd);
    }
}

impl std::os::fd::AsRawFd for Device {
    /// The raw descriptor, for interoperating with other VFIO code (a KVM device, a C
    /// library). It stays owned by this object: do not close it.
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd().raw()
    }
}

impl std::os::fd::AsFd for Device {
    /// The descriptor, lent: it stays owned by this object (duplicate it with
    /// `try_clone_to_owned` to keep one).
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the descriptor is open for as long as this object lives (the kernel
        // seam's contract), and the borrow cannot outlive `self`.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd().raw()) }
    }
}

#[cfg(all(test, feature = "mock"))]
mod tests {
    use super::*;
    use crate::mock::{DeviceSpec, MockHost};
    use crate::rom::tests::image;
    use crate::{Interface, Vfio};

    #[test]
    fn read_rom_reads_the_rom_region_up_to_the_last_image() {
        let rom = image(3);
        let mut edu = DeviceSpec::edu("0000:00:04.0").group(1).driver("vfio-pci");
        edu.rom = Some(rom.clone());
        let h = MockHost::new([edu, DeviceSpec::edu("0000:00:05.0").group(2).driver("vfio-pci")])
            .with_sys(|s| s.load_vfio());
        let vfio = Vfio::new(h.kernel(), h.fs());
        let dev = vfio.open(PciAddress::parse("0000:00:04.0").unwrap(), Interface::Auto).unwrap();
        let region = dev.region(RegionIndex::ROM).unwrap().size;
        assert!(region > rom.len() as u64, "the BAR is larger than the image: {region}");
        assert_eq!(dev.read_rom().unwrap(), rom);
        // Nothing went through the sysfs `rom` attribute.
        assert!(h.state().sys.writes.is_empty(), "{:?}", h.state().sys.writes);

        let dev = vfio.open(PciAddress::parse("0000:00:05.0").unwrap(), Interface::Auto).unwrap();
        let e = dev.read_rom().unwrap_err().to_string();
        assert!(e.contains("ROM of 0000:00:05.0 (the VFIO ROM region is empty)"), "{e}");
        assert!(e.contains("no expansion ROM BAR"), "{e}");
    }
}
