//! Memory-mapped regions (BARs): typed, bounds-checked volatile MMIO access.
//!
//! [`Device::map_region`] maps every mmap-able area of a region (honouring sparse areas,
//! such as the hole the kernel leaves over an MSI-X table). [`Device::bar`] gives a
//! [`Bar`] that uses the mapping where there is one and pread/pwrite elsewhere, so a
//! driver works whether or not the kernel lets it mmap. Regions are named by their
//! [`RegionIndex`] (`RegionIndex::BAR0`, or a plain number).

use std::ptr::NonNull;
use std::sync::Arc;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::info::RegionFlags;
use crate::kernel::{KernelOp, VfioKernel};

pub use crate::info::RegionIndex;

/// One mapped area of a region.
#[derive(Debug)]
struct Area {
    /// Offset inside the region.
    offset: u64,
    len: usize,
    ptr: NonNull<u8>,
}

/// The areas of one region mapped into the process, with the accesses the region's
/// flags allow; unmapped on drop. Shared by [`MappedRegion`] (borrowing its device) and
/// [`RegionMapping`] (keeping its device alive).
#[derive(Debug)]
struct Mapping {
    kernel: Arc<dyn VfioKernel>,
    index: RegionIndex,
    size: u64,
    /// The region has READ (the mapping is `PROT_READ`).
    readable: bool,
    /// The region has WRITE (the mapping is `PROT_WRITE`).
    writable: bool,
    areas: Vec<Area>,
}

// SAFETY: the mapping is device memory shared with the kernel; access is by volatile
// reads/writes of plain integers, which any thread may issue (as with any MMIO), and no
// method hands out references into it.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        for a in self.areas.drain(..) {
            // SAFETY: each area is exactly one mapping from `VfioKernel::mmap`, and no
            // reference into it outlives the `Mapping`.
            let _ = unsafe { self.kernel.munmap(a.ptr, a.len) };
        }
    }
}

/// A region mapped into the process: volatile accesses of 8/16/32/64 bits, checked
/// against the mapped areas. Unmapped on drop. Borrows its device; [`RegionMapping`]
/// is the owned form.
#[derive(Debug)]
pub struct MappedRegion<'d> {
    device: &'d Device,
    map: Mapping,
}

/// A region mapped into the process that keeps its device alive (`Arc<Device>`):
/// `Send + Sync + 'static`, to keep in a VMM's state next to the device. Each mapped
/// area's host address and length ([`RegionMapping::host_areas`]) is what a VMM
/// registers as a KVM user memory region, so the guest reaches the BAR directly; the
/// areas leave out what the kernel does not let be mapped (the MSI-X table, which the
/// VMM must trap), exactly as the kernel's sparse-mmap capability reports it.
#[derive(Debug)]
pub struct RegionMapping {
    device: Arc<Device>,
    map: Mapping,
}

/// One mapped area of a region, as a VMM hands it to KVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostArea {
    /// Offset of the area inside the region (add the BAR's guest address).
    pub offset: u64,
    /// Host virtual address of the area's first byte.
    pub host_addr: u64,
    /// Length in bytes.
    pub len: u64,
}

/// An integer type that can be read or written as one MMIO access.
pub trait MmioValue: Copy + sealed::Sealed {
    /// Size in bytes.
    const SIZE: usize;
    /// From little-endian bytes.
    fn from_le(b: &[u8]) -> Self;
    /// To little-endian bytes (in the first `SIZE` bytes of the returned array).
    fn to_le(self) -> [u8; 8];
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for u16 {}
    impl Sealed for u32 {}
    impl Sealed for u64 {}
}

macro_rules! mmio_value {
    ($t:ty) => {
        impl MmioValue for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn from_le(b: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(&b[..Self::SIZE]);
                <$t>::from_le_bytes(a)
            }
            fn to_le(self) -> [u8; 8] {
                let mut a = [0u8; 8];
                a[..Self::SIZE].copy_from_slice(&self.to_le_bytes());
                a
            }
        }
    };
}
mmio_value!(u8);
mmio_value!(u16);
mmio_value!(u32);
mmio_value!(u64);

impl Mapping {
    /// Pointer to `offset` if `[offset, offset + len)` lies in one mapped area and is
    /// naturally aligned (`len` is 1, 2, 4 or 8).
    #[inline]
    fn ptr_at(&self, offset: u64, len: usize) -> Option<*mut u8> {
        if offset & (len as u64 - 1) != 0 {
            return None;
        }
        // Most regions are one area from offset 0: check it first, without a loop.
        let first = self.areas.first()?;
        let hit = |a: &Area| {
            let rel = offset.wrapping_sub(a.offset);
            (offset >= a.offset && rel.checked_add(len as u64).is_some_and(|e| e <= a.len as u64))
                // SAFETY: `rel + len <= a.len`, so the pointer stays inside the mapping.
                .then(|| unsafe { a.ptr.as_ptr().add(rel as usize) })
        };
        hit(first).or_else(|| self.areas[1..].iter().find_map(hit))
    }

    #[inline]
    fn locate(&self, device: &Device, offset: u64, len: usize) -> Result<*mut u8> {
        self.ptr_at(offset, len).ok_or_else(|| self.out_of_bounds(device, offset, len))
    }

    #[cold]
    fn out_of_bounds(&self, device: &Device, offset: u64, len: usize) -> Error {
        Error::OutOfBounds {
            what: format!(
                "mapped region {} of {} (mapped areas {:?}; accesses must be naturally aligned)",
                self.index,
                device.target(),
                self.areas().collect::<Vec<_>>()
            ),
            offset,
            len: len as u64,
            size: self.size,
        }
    }

    fn areas(&self) -> impl Iterator<Item = (u64, usize)> + '_ {
        self.areas.iter().map(|a| (a.offset, a.len))
    }

    fn host_areas(&self) -> impl Iterator<Item = HostArea> + '_ {
        self.areas.iter().map(|a| HostArea {
            offset: a.offset,
            host_addr: a.ptr.as_ptr() as u64,
            len: a.len as u64,
        })
    }

    #[inline]
    fn read<T: MmioValue>(&self, device: &Device, offset: u64) -> Result<T> {
        if !self.readable {
            return Err(access_denied(device, self.index, "read", "READ"));
        }
        let p = self.locate(device, offset, T::SIZE)?;
        // SAFETY: `p` points into a live shared mapping of at least SIZE bytes, aligned for
        // T (checked by `locate`), mapped PROT_READ (the region has READ, checked above);
        // volatile because it is device memory.
        Ok(unsafe { std::ptr::read_volatile(p.cast::<T>()) })
    }

    #[inline]
    fn write<T: MmioValue>(&self, device: &Device, offset: u64, value: T) -> Result<()> {
        if !self.writable {
            return Err(access_denied(device, self.index, "write", "WRITE"));
        }
        let p = self.locate(device, offset, T::SIZE)?;
        // SAFETY: as in `read`; the mapping is PROT_WRITE since the region has WRITE
        // (checked above).
        unsafe { std::ptr::write_volatile(p.cast::<T>(), value) };
        Ok(())
    }
}

impl MappedRegion<'_> {
    /// The region index.
    pub fn index(&self) -> RegionIndex {
        self.map.index
    }

    /// The mapped areas as (offset, length) pairs.
    pub fn areas(&self) -> impl Iterator<Item = (u64, usize)> + '_ {
        self.map.areas()
    }

    /// The mapped areas with their host addresses.
    pub fn host_areas(&self) -> impl Iterator<Item = HostArea> + '_ {
        self.map.host_areas()
    }

    /// Whether `[offset, offset + len)` is mapped and naturally aligned for an access of
    /// `len` bytes (1, 2, 4 or 8).
    pub fn is_mapped(&self, offset: u64, len: usize) -> bool {
        self.map.ptr_at(offset, len).is_some()
    }

    /// One volatile read of `T` at `offset`. No heap allocation.
    #[inline]
    pub fn read<T: MmioValue>(&self, offset: u64) -> Result<T> {
        self.map.read(self.device, offset)
    }

    /// One volatile write of `T` at `offset`. No heap allocation.
    #[inline]
    pub fn write<T: MmioValue>(&self, offset: u64, value: T) -> Result<()> {
        self.map.write(self.device, offset, value)
    }
}

impl RegionMapping {
    /// The device the region belongs to.
    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// The region index.
    pub fn index(&self) -> RegionIndex {
        self.map.index
    }

    /// The region's size (the areas may cover less of it).
    pub fn size(&self) -> u64 {
        self.map.size
    }

    /// The mapped areas with their host addresses: what a VMM registers with
    /// `KVM_SET_USER_MEMORY_REGION` (guest address = BAR address + `offset`). The
    /// mapping stays valid as long as this value lives.
    pub fn host_areas(&self) -> impl Iterator<Item = HostArea> + '_ {
        self.map.host_areas()
    }

    /// Whether `[offset, offset + len)` is mapped and naturally aligned.
    pub fn is_mapped(&self, offset: u64, len: usize) -> bool {
        self.map.ptr_at(offset, len).is_some()
    }

    /// One volatile read of `T` at `offset`. No heap allocation.
    #[inline]
    pub fn read<T: MmioValue>(&self, offset: u64) -> Result<T> {
        self.map.read(&self.device, offset)
    }

    /// One volatile write of `T` at `offset`. No heap allocation.
    #[inline]
    pub fn write<T: MmioValue>(&self, offset: u64, value: T) -> Result<()> {
        self.map.write(&self.device, offset, value)
    }
}

/// The error of an access the region's flags do not allow.
#[cold]
fn access_denied(device: &Device, index: RegionIndex, access: &str, flag: &str) -> Error {
    Error::Unsupported {
        what: format!("{access} of region {index} of {}", device.target()),
        hint: Some(format!("the kernel reports the region without {flag}")),
    }
}

/// Access to a BAR: mmap where the kernel allows it, pread/pwrite everywhere else.
#[derive(Debug)]
pub struct Bar<'d> {
    device: &'d Device,
    index: RegionIndex,
    readable: bool,
    writable: bool,
    map: Option<MappedRegion<'d>>,
}

impl Bar<'_> {
    /// Reads `T` at `offset`: a volatile load when mapped, else a pread. No heap allocation.
    #[inline]
    pub fn read<T: MmioValue>(&self, offset: u64) -> Result<T> {
        if !self.readable {
            return Err(access_denied(self.device, self.index, "read", "READ"));
        }
        if let Some(p) = self.map.as_ref().and_then(|m| m.map.ptr_at(offset, T::SIZE)) {
            // SAFETY: `ptr_at` returned a naturally aligned pointer with SIZE bytes of a
            // live device mapping behind it, mapped PROT_READ (the region has READ).
            return Ok(unsafe { std::ptr::read_volatile(p.cast::<T>()) });
        }
        let mut b = [0u8; 8];
        self.device.read_region(self.index, offset, &mut b[..T::SIZE])?;
        Ok(T::from_le(&b))
    }

    /// Writes `T` at `offset`: a volatile store when mapped, else a pwrite.
    #[inline]
    pub fn write<T: MmioValue>(&self, offset: u64, value: T) -> Result<()> {
        if !self.writable {
            return Err(access_denied(self.device, self.index, "write", "WRITE"));
        }
        if let Some(p) = self.map.as_ref().and_then(|m| m.map.ptr_at(offset, T::SIZE)) {
            // SAFETY: as in `read`; mapped PROT_WRITE since the region has WRITE.
            unsafe { std::ptr::write_volatile(p.cast::<T>(), value) };
            return Ok(());
        }
        self.device.write_region(self.index, offset, &value.to_le()[..T::SIZE])
    }

    /// Whether accesses at `offset` go through the mapping.
    pub fn is_mapped(&self, offset: u64, len: usize) -> bool {
        self.map.as_ref().is_some_and(|m| m.is_mapped(offset, len))
    }

    /// The region index.
    pub fn index(&self) -> RegionIndex {
        self.index
    }
}

impl Device {
    /// Maps every mmap-able area of a region. Fails when the region offers no mmap.
    pub fn map_region(&self, index: impl Into<RegionIndex>) -> Result<MappedRegion<'_>> {
        Ok(MappedRegion { device: self, map: self.mmap_areas(index.into())? })
    }

    /// Maps every mmap-able area of a region into a mapping that keeps the device alive
    /// ([`RegionMapping`]: owned, `Send + Sync`, with host addresses for KVM).
    pub fn map_region_owned(
        self: &Arc<Self>,
        index: impl Into<RegionIndex>,
    ) -> Result<RegionMapping> {
        Ok(RegionMapping { device: self.clone(), map: self.mmap_areas(index.into())? })
    }

    fn mmap_areas(&self, index: RegionIndex) -> Result<Mapping> {
        let r = self.region(index)?;
        if !r.flags.contains(RegionFlags::MMAP) || r.mmap_areas.is_empty() {
            return Err(Error::Unsupported {
                what: format!("mmap of region {index} of {}", self.target()),
                hint: Some("use pread/pwrite (Device::bar falls back automatically)".into()),
            });
        }
        let mut prot = 0;
        if r.flags.contains(RegionFlags::READ) {
            prot |= libc::PROT_READ;
        }
        if r.flags.contains(RegionFlags::WRITE) {
            prot |= libc::PROT_WRITE;
        }
        let mut m = Mapping {
            kernel: self.kernel().clone(),
            index,
            size: r.size,
            readable: prot & libc::PROT_READ != 0,
            writable: prot & libc::PROT_WRITE != 0,
            areas: Vec::new(),
        };
        for area in &r.mmap_areas {
            let len = usize::try_from(area.size).map_err(|_| Error::OutOfBounds {
                what: format!("mmap area of region {index}"),
                offset: area.offset,
                len: area.size,
                size: r.size,
            })?;
            let ptr = self
                .kernel()
                .mmap(self.fd(), r.offset + area.offset, len, prot)
                .map_err(|e| self.kerr(KernelOp::Mmap, e))?;
            m.areas.push(Area { offset: area.offset, len, ptr });
        }
        Ok(m)
    }

    /// A BAR accessor ([`RegionIndex::BAR0`] to [`RegionIndex::BAR5`]): mapped when the
    /// kernel offers mmap, pread/pwrite otherwise.
    pub fn bar(&self, index: impl Into<RegionIndex>) -> Result<Bar<'_>> {
        let index = index.into();
        let Some(n) = index.bar_number() else {
            return Err(Error::Invalid {
                what: "BAR index",
                input: index.to_string(),
                reason: "BARs are numbered 0 to 5".into(),
            });
        };
        let r = self.region(index)?;
        if r.size == 0 {
            return Err(Error::NotFound {
                what: format!("BAR{n} of {}", self.target()),
                hint: Some("the device does not implement that BAR".into()),
            });
        }
        let map =
            if r.flags.contains(RegionFlags::MMAP) { Some(self.map_region(index)?) } else { None };
        Ok(Bar {
            device: self,
            index,
            readable: r.flags.contains(RegionFlags::READ),
            writable: r.flags.contains(RegionFlags::WRITE),
            map,
        })
    }
}
