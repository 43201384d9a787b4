//! The mock VFIO/iommufd kernel: [`MockKernel`], an implementation of
//! [`VfioKernel`] over the shared simulated host.
//!
//! Every rule below carries a comment naming the Linux source it models
//! (`container.c` = drivers/vfio/container.c, `group.c` = drivers/vfio/group.c,
//! `type1` = drivers/vfio/vfio_iommu_type1.c, `pci_core` = drivers/vfio/pci/vfio_pci_core.c,
//! `pci_intrs` = drivers/vfio/pci/vfio_pci_intrs.c, `pci_rdwr` = drivers/vfio/pci/vfio_pci_rdwr.c,
//! `iommufd/*` = drivers/iommu/iommufd/*, `device_cdev.c` = drivers/vfio/device_cdev.c).
//!
//! Not modelled: no-IOMMU device cdevs, privilege checks (CAP_SYS_RAWIO, CAP_IPC_LOCK
//! apart from [`MockKernelConfig::cap_ipc_lock`]), slot resets, dirty-page tracking,
//! PASID attach, host drivers refusing to bind into a group owned by a user, vfio's
//! split between the virtual and the hardware config space (one image with write masks
//! here), `VFIO_DEVICE_FEATURE` and `VFIO_DEVICE_IOEVENTFD`.
//!
//! Descriptors handed out by the mock are real descriptors of the process (each backed by
//! an empty memfd), so that objects can lend them as `BorrowedFd` and a descriptor handed
//! out with `export` and back with `adopt` (fd passing) is recognised by its inode, as
//! the kernel recognises its file.
//! Interrupts are delivered on real eventfds: `SET_IRQS` duplicates the caller's eventfd
//! and a trigger writes to it. BARs are backed by a memfd each, so `mmap` returns a real
//! shared mapping that `pread`/`pwrite` see.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;

use vfio_bindings::bindings::vfio::{
    VFIO_TYPE1v2_IOMMU, VFIO_API_VERSION, VFIO_DEVICE_FLAGS_CAPS, VFIO_DEVICE_FLAGS_PCI,
    VFIO_DEVICE_FLAGS_RESET, VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP, VFIO_DMA_CC_IOMMU,
    VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_VADDR, VFIO_DMA_MAP_FLAG_WRITE,
    VFIO_DMA_UNMAP_FLAG_ALL, VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, VFIO_DMA_UNMAP_FLAG_VADDR,
    VFIO_GROUP_FLAGS_CONTAINER_SET, VFIO_GROUP_FLAGS_VIABLE, VFIO_IOMMU_INFO_CAPS,
    VFIO_IOMMU_INFO_PGSIZES, VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
    VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION, VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, VFIO_IRQ_INFO_AUTOMASKED,
    VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_INFO_MASKABLE, VFIO_IRQ_INFO_NORESIZE,
    VFIO_IRQ_SET_ACTION_MASK, VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_ACTION_TYPE_MASK,
    VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_DATA_BOOL, VFIO_IRQ_SET_DATA_EVENTFD,
    VFIO_IRQ_SET_DATA_NONE, VFIO_IRQ_SET_DATA_TYPE_MASK, VFIO_NOIOMMU_IOMMU,
    VFIO_PCI_DEVID_NOT_OWNED, VFIO_PCI_DEVID_OWNED, VFIO_PCI_HOT_RESET_FLAG_DEV_ID,
    VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED, VFIO_REGION_INFO_CAP_MSIX_MAPPABLE,
    VFIO_REGION_INFO_CAP_SPARSE_MMAP, VFIO_REGION_INFO_CAP_TYPE, VFIO_REGION_INFO_FLAG_CAPS,
    VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
    VFIO_TYPE1_IOMMU, VFIO_UNMAP_ALL, VFIO_UPDATE_VADDR,
};

use super::spec::BarKind;
use super::{HostState, MockHost, SimDevice};
use crate::kernel::*;
use crate::pci::PciAddress;

/// A descriptor number far above any the process has open: a bad descriptor for tests.
pub const MOCK_FD_BASE: RawFd = 0x4000_0000;

const PAGE: u64 = 4096;
const TYPE1V2: u32 = VFIO_TYPE1v2_IOMMU;
/// `VFIO_PCI_OFFSET_SHIFT` (vfio_pci_priv.h): region index in bits 40 and up.
const OFFSET_SHIFT: u32 = 40;
const NUM_REGIONS: u32 = 9;
const NUM_IRQS: u32 = 5;
const ROM_INDEX: u32 = 6;
const CONFIG_INDEX: u32 = 7;
const VGA_INDEX: u32 = 8;
const INTX: u32 = 0;
const MSI: u32 = 1;
const MSIX: u32 = 2;
const ERR: u32 = 3;
const REQ: u32 = 4;
/// iommufd.h `IOMMU_IOAS_MAP_*` flags.
const IOAS_MAP_FIXED_IOVA: u32 = 1;
const IOAS_MAP_WRITEABLE: u32 = 2;
const IOAS_MAP_READABLE: u32 = 4;
/// `DIRTY_BITMAP_SIZE_MAX` of type1 (bytes for INT_MAX pages).
const DIRTY_BITMAP_SIZE_MAX: u64 = 0x1000_0000;

/// Kernel-level knobs of the mock: which interfaces exist and the module parameters and
/// limits the real kernel would have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockKernelConfig {
    /// `/dev/vfio/vfio` exists (CONFIG_VFIO_CONTAINER).
    pub container: bool,
    /// vfio_iommu_type1 offers `VFIO_TYPE1_IOMMU`.
    pub type1: bool,
    /// vfio_iommu_type1 offers `VFIO_TYPE1v2_IOMMU`.
    pub type1v2: bool,
    /// `/dev/iommu` and the device cdevs `/dev/vfio/devices/vfioN` exist.
    pub iommufd: bool,
    /// vfio's `enable_unsafe_noiommu_mode`: devices without an IOMMU group get
    /// `/dev/vfio/noiommu-N` groups.
    pub noiommu: bool,
    /// Usable IOVA ranges, inclusive `(start, last)`, sorted (the IOMMU aperture minus
    /// reserved regions such as the x86 MSI window).
    pub iova_ranges: Vec<(u64, u64)>,
    /// IOMMU page sizes supported (bit n = 2^n bytes).
    pub pgsize_bitmap: u64,
    /// vfio_iommu_type1's `dma_entry_limit` (mappings per container).
    pub dma_entry_limit: u32,
    /// `RLIMIT_MEMLOCK` of the process, in bytes (`u64::MAX` = unlimited).
    pub memlock_limit: u64,
    /// The process has CAP_IPC_LOCK (root): pinned memory is not limited.
    pub cap_ipc_lock: bool,
    /// The host IOMMU offers interrupt remapping (isolated MSI).
    pub interrupt_remapping: bool,
    /// `allow_unsafe_interrupts` of vfio_iommu_type1 and iommufd.
    pub allow_unsafe_interrupts: bool,
    /// Kernel 4.16 and later: the BAR holding the MSI-X table is mmap-able whole and
    /// reports `VFIO_REGION_INFO_CAP_MSIX_MAPPABLE`. `false` models older kernels: a
    /// sparse-mmap capability that leaves out the MSI-X table pages.
    pub msix_mappable: bool,
    /// The platform can allocate MSI-X vectors dynamically (kernel 6.5+, x86): the MSI-X
    /// IRQ info lacks `NORESIZE` and vectors can be added while MSI-X is enabled.
    pub dyn_msix: bool,
    /// CONFIG_VFIO_PCI_VGA: VGA-class devices expose the VGA region.
    pub vga: bool,
    /// Kernels before 6.18 answer a DMA map/unmap range wrapping past 2^64 with EINVAL
    /// instead of EOVERFLOW.
    pub wrap_einval: bool,
}

impl Default for MockKernelConfig {
    fn default() -> Self {
        MockKernelConfig {
            container: true,
            type1: true,
            type1v2: true,
            iommufd: true,
            noiommu: false,
            // x86: the aperture of a 48-bit IOMMU minus the MSI window 0xfee00000..0xfeefffff.
            iova_ranges: vec![(0, 0xfedf_ffff), (0xfef0_0000, (1 << 48) - 1)],
            pgsize_bitmap: (1 << 12) | (1 << 21) | (1 << 30),
            dma_entry_limit: 65535,
            memlock_limit: 8 << 20,
            cap_ipc_lock: false,
            interrupt_remapping: true,
            allow_unsafe_interrupts: false,
            msix_mappable: true,
            dyn_msix: true,
            vga: true,
            wrap_einval: false,
        }
    }
}

/// When an injected fault fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultWhen {
    /// On every call from now on (until [`MockKernel::clear_faults`]).
    Always,
    /// On the next call only.
    Once,
    /// On the Nth call from now (1 = the next call), once.
    Nth(u32),
}

#[derive(Debug, Clone)]
struct Fault {
    op: KernelOp,
    errno: Errno,
    when: FaultWhen,
}

/// What a mock descriptor refers to.
#[derive(Debug, Clone, Copy)]
enum FdObj {
    Container(u32),
    Group(u32),
    Device(DevFd),
    Iommufd(u32),
}

/// One open device file (`vfio_device_file`).
#[derive(Debug, Clone, Copy)]
struct DevFd {
    addr: PciAddress,
    /// Opened through this group (`VFIO_GROUP_GET_DEVICE_FD`).
    group: Option<u32>,
    /// Cdev bound to (iommufd ctx, devid) by `BIND_IOMMUFD` (access granted).
    bound: Option<(u32, u32)>,
}

impl DevFd {
    fn access_granted(&self) -> bool {
        self.group.is_some() || self.bound.is_some()
    }
}

#[derive(Debug, Default)]
struct GroupState {
    opened: bool,
    noiommu: bool,
    device_fds: u32,
    container: Option<u32>,
}

#[derive(Debug)]
struct Dma {
    size: u64,
    vaddr: u64,
    vaddr_invalid: bool,
    read: bool,
    write: bool,
}

#[derive(Debug)]
struct Type1 {
    v2: bool,
    dmas: BTreeMap<u64, Dma>,
    avail: u32,
}

#[derive(Debug)]
enum Iommu {
    Type1(Type1),
    NoIommu,
}

#[derive(Debug, Default)]
struct Container {
    fd_open: bool,
    groups: BTreeSet<u32>,
    noiommu: bool,
    iommu: Option<Iommu>,
}

#[derive(Debug)]
struct Area {
    len: u64,
    uptr: u64,
    read: bool,
    write: bool,
    /// Pages pinned (and accounted) for the attached domains.
    pinned: u64,
}

#[derive(Debug, Default)]
struct Ioas {
    areas: BTreeMap<u64, Area>,
    /// Auto-domain HWPTs attached to this IOAS.
    hwpts: BTreeSet<u32>,
}

#[derive(Debug)]
enum IoObj {
    Ioas(Ioas),
    Hwpt { ioas: u32, devices: u32 },
    Device,
}

#[derive(Debug, Default)]
struct Ictx {
    fd_open: bool,
    objs: BTreeMap<u32, IoObj>,
    bound_devices: u32,
}

#[derive(Debug, Default)]
struct IrqState {
    /// The enabled interrupt type (INTx, MSI or MSI-X), `None` = `VFIO_PCI_NUM_IRQS`.
    kind: Option<u32>,
    /// MSI/MSI-X: vectors allocated (MSI: at enable; MSI-X: grows when dynamic).
    nvec: u32,
    /// MSI/MSI-X triggers by vector.
    vectors: BTreeMap<u32, OwnedFd>,
    intx_trigger: Option<OwnedFd>,
    intx_masked: bool,
    intx_pending: bool,
    intx_unmask_fd: Option<OwnedFd>,
    err_trigger: Option<OwnedFd>,
    req_trigger: Option<OwnedFd>,
}

#[derive(Debug, Default)]
struct DevState {
    /// `device->open_count`: device files opened (group) or bound (cdev).
    open_count: u32,
    /// Bound through a cdev to (ictx, devid).
    cdev: Option<(u32, u32)>,
    /// Attached to (ictx, ioas, hwpt).
    attached: Option<(u32, u32, u32)>,
    irq: IrqState,
    /// Config saved at first open (`pci_store_saved_state`), restored at last close.
    saved_config: Option<Vec<u8>>,
    /// Resets done on the device (FLR or bus reset).
    resets: u64,
}

/// The mock kernel's state, kept inside [`HostState`] so that the kernel, the simulated
/// sysfs and the device models share one lock.
#[derive(Debug, Default)]
pub struct KernelState {
    pub(crate) config: MockKernelConfig,
    fds: BTreeMap<RawFd, FdObj>,
    /// The real descriptor behind each mock descriptor the mock still holds (not exported).
    backing: BTreeMap<RawFd, OwnedFd>,
    /// The inode of each mock descriptor's file, to recognise it when it comes back.
    inodes: BTreeMap<RawFd, (u64, u64)>,
    containers: BTreeMap<u32, Container>,
    next_container: u32,
    groups: BTreeMap<u32, GroupState>,
    ictxs: BTreeMap<u32, Ictx>,
    next_ictx: u32,
    devs: BTreeMap<PciAddress, DevState>,
    bars: BTreeMap<(PciAddress, u32), OwnedFd>,
    extra: BTreeMap<(PciAddress, u32), Vec<u8>>,
    mmaps: BTreeMap<usize, (PciAddress, usize)>,
    models: BTreeMap<PciAddress, (u32, Box<dyn DeviceModel>)>,
    pub(crate) noiommu_ids: BTreeMap<PciAddress, u32>,
    faults: Vec<Fault>,
    calls: BTreeMap<KernelOp, u64>,
    /// Pages pinned by type1 (`mm->locked_vm`).
    locked_mm: u64,
    /// Pages pinned by iommufd (`user->locked_vm`).
    locked_user: u64,
}

/// The mock kernel: a handle on the kernel state of a [`MockHost`].
///
/// Every [`MockHost::kernel`] call returns a handle on the same kernel.
#[derive(Debug, Clone)]
pub struct MockKernel {
    host: MockHost,
}

impl MockHost {
    /// The mock kernel of this host (every call gives a handle on the same kernel).
    pub fn kernel(&self) -> Arc<MockKernel> {
        Arc::new(MockKernel { host: self.clone() })
    }

    /// Replaces the kernel-level knobs (see [`MockKernelConfig`]).
    pub fn set_kernel_config(&self, config: MockKernelConfig) {
        let mut st = self.state();
        st.kernel.config = config;
        refresh_noiommu(&mut st);
    }

    /// The kernel-level knobs in force.
    pub fn kernel_config(&self) -> MockKernelConfig {
        self.state().kernel.config.clone()
    }

    /// The no-IOMMU group number given to a device without an IOMMU group while it is
    /// bound to vfio-pci in no-IOMMU mode (`/dev/vfio/noiommu-N`).
    pub fn noiommu_group(&self, address: PciAddress) -> Option<u32> {
        let mut st = self.state();
        refresh_noiommu(&mut st);
        st.kernel.noiommu_ids.get(&address).copied()
    }

    /// How many times the device was reset (FLR through `VFIO_DEVICE_RESET`, or a bus
    /// reset through `VFIO_DEVICE_PCI_HOT_RESET`).
    pub fn reset_count(&self, address: PciAddress) -> u64 {
        self.state().kernel.devs.get(&address).map_or(0, |d| d.resets)
    }

    /// A device model raises interrupt `vector` of IRQ index `index`
    /// (`VFIO_PCI_INTX_IRQ_INDEX` = 0, MSI = 1, MSI-X = 2, ERR = 3, REQ = 4). Returns
    /// whether an eventfd was signalled. INTx is masked automatically when delivered
    /// (`vfio_intx_handler`) and held pending while masked.
    pub fn raise_irq(&self, address: PciAddress, index: u32, vector: u32) -> bool {
        raise_irq_locked(&mut self.state(), address, index, vector)
    }

    /// A device reads guest memory by DMA at `iova` through the mock IOMMU. Fails with
    /// EFAULT (an IOMMU fault) when any byte is not mapped readable for the device.
    pub fn dma_read(&self, address: PciAddress, iova: u64, buf: &mut [u8]) -> KResult<()> {
        dma_read_locked(&self.state(), address, iova, buf)
    }

    /// A device writes guest memory by DMA at `iova` through the mock IOMMU. Fails with
    /// EFAULT (an IOMMU fault) when any byte is not mapped writable for the device.
    pub fn dma_write(&self, address: PciAddress, iova: u64, buf: &[u8]) -> KResult<()> {
        dma_write_locked(&self.state(), address, iova, buf)
    }

    /// Backs BAR `bar` of a device with a device model: the BAR is then offered without
    /// the MMAP flag (as vfio-pci does for BARs it must trap), so every access reaches
    /// the model. Returns `false` when no device has that address or the BAR is absent.
    pub fn attach_model(&self, address: PciAddress, bar: u32, model: Box<dyn DeviceModel>) -> bool {
        let mut st = self.state();
        let Some(dev) = st.devices.get(&address) else { return false };
        if bar_len(dev, bar) == 0 {
            return false;
        }
        st.kernel.models.insert(address, (bar, model));
        true
    }
}

/// A simulated device's behaviour behind one BAR. Accesses arrive as the user issued
/// them (offset in the BAR and the bytes), with a context to raise interrupts and do
/// DMA through the mock IOMMU.
///
/// Callbacks run with the host state locked: use the [`ModelCtx`], never a
/// [`MockHost`] handle, from inside them.
pub trait DeviceModel: Send + std::fmt::Debug {
    /// A read of `data.len()` bytes at `offset`; fill `data`.
    fn read(&mut self, ctx: &mut ModelCtx<'_>, offset: u64, data: &mut [u8]);
    /// A write of `data` at `offset`.
    fn write(&mut self, ctx: &mut ModelCtx<'_>, offset: u64, data: &[u8]);
    /// The device was reset (FLR or bus reset).
    fn reset(&mut self) {}
}

/// What a [`DeviceModel`] may do while handling an access.
pub struct ModelCtx<'a> {
    st: &'a mut HostState,
    address: PciAddress,
}

impl ModelCtx<'_> {
    /// The device's address.
    pub fn address(&self) -> PciAddress {
        self.address
    }

    /// Raises interrupt `vector` of IRQ `index` (see [`MockHost::raise_irq`]).
    pub fn raise_irq(&mut self, index: u32, vector: u32) -> bool {
        raise_irq_locked(self.st, self.address, index, vector)
    }

    /// Raises the device's interrupt the way a conventional device does: MSI vector 0
    /// when MSI is enabled, else INTx.
    pub fn raise_interrupt(&mut self) -> bool {
        let msi = self.st.kernel.devs.get(&self.address).is_some_and(|d| d.irq.kind == Some(MSI));
        raise_irq_locked(self.st, self.address, if msi { MSI } else { INTX }, 0)
    }

    /// DMA from guest memory (see [`MockHost::dma_read`]).
    pub fn dma_read(&mut self, iova: u64, buf: &mut [u8]) -> KResult<()> {
        dma_read_locked(self.st, self.address, iova, buf)
    }

    /// DMA to guest memory (see [`MockHost::dma_write`]).
    pub fn dma_write(&mut self, iova: u64, buf: &[u8]) -> KResult<()> {
        dma_write_locked(self.st, self.address, iova, buf)
    }
}

fn raise_irq_locked(st: &mut HostState, address: PciAddress, index: u32, vector: u32) -> bool {
    let Some(dev) = st.kernel.devs.get_mut(&address) else { return false };
    let irq = &mut dev.irq;
    match index {
        INTX => {
            if irq.kind != Some(INTX) || vector != 0 {
                return false;
            }
            poll_unmask_fd(irq);
            if irq.intx_masked {
                irq.intx_pending = true;
                false
            } else {
                irq.intx_masked = true;
                irq.intx_trigger.as_ref().is_some_and(signal)
            }
        }
        MSI | MSIX => irq.kind == Some(index) && irq.vectors.get(&vector).is_some_and(signal),
        ERR => vector == 0 && irq.err_trigger.as_ref().is_some_and(signal),
        REQ => vector == 0 && irq.req_trigger.as_ref().is_some_and(signal),
        _ => false,
    }
}

fn dma_read_locked(st: &HostState, address: PciAddress, iova: u64, buf: &mut [u8]) -> KResult<()> {
    let chunks = translate(st, address, iova, buf.len() as u64, false)?;
    let mut done = 0usize;
    for (vaddr, len) in chunks {
        check_mapped(vaddr, len)?;
        // SAFETY: the range was mapped by the process for DMA (checked at map time and
        // again just now with madvise); we copy out of it into our own buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(
                vaddr as *const u8,
                buf[done..].as_mut_ptr(),
                len as usize,
            )
        };
        done += len as usize;
    }
    Ok(())
}

fn dma_write_locked(st: &HostState, address: PciAddress, iova: u64, buf: &[u8]) -> KResult<()> {
    let chunks = translate(st, address, iova, buf.len() as u64, true)?;
    let mut done = 0usize;
    for (vaddr, len) in chunks {
        check_mapped(vaddr, len)?;
        // SAFETY: the process mapped this range writable for DMA and it is still mapped
        // (madvise above); a device writing it is what DMA means.
        unsafe {
            std::ptr::copy_nonoverlapping(buf[done..].as_ptr(), vaddr as *mut u8, len as usize)
        };
        done += len as usize;
    }
    Ok(())
}

/// Calls the model behind `addr` (taken out of the state for the call).
fn with_model<R>(
    st: &mut HostState,
    addr: PciAddress,
    f: impl FnOnce(&mut dyn DeviceModel, &mut ModelCtx<'_>) -> R,
) -> Option<R> {
    let (bar, mut model) = st.kernel.models.remove(&addr)?;
    let r = {
        let mut ctx = ModelCtx { st: &mut *st, address: addr };
        f(model.as_mut(), &mut ctx)
    };
    st.kernel.models.insert(addr, (bar, model));
    Some(r)
}

fn model_bar(k: &KernelState, addr: PciAddress) -> Option<u32> {
    k.models.get(&addr).map(|m| m.0)
}

fn reset_device(st: &mut HostState, addr: PciAddress) {
    st.kernel.devs.entry(addr).or_default().resets += 1;
    with_model(st, addr, |m, _| m.reset());
}

// ---------------------------------------------------------------------------------------
// Helpers over the host state.

fn signal(fd: &OwnedFd) -> bool {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a local to an eventfd we own a duplicate of.
    let n = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    n == 8
}

/// Reads the unmask eventfd of INTx (a virqfd in the kernel) if it was signalled.
fn poll_unmask_fd(irq: &mut IrqState) {
    let Some(fd) = &irq.intx_unmask_fd else { return };
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, zero timeout.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    if r == 1 && p.revents & libc::POLLIN != 0 {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into a local from a readable eventfd.
        unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
        intx_unmask(irq);
    }
}

/// `vfio_pci_intx_unmask_handler`: unmask; a still-pending interrupt is delivered again
/// and stays masked.
fn intx_unmask(irq: &mut IrqState) {
    if !irq.intx_masked {
        return;
    }
    if irq.intx_pending {
        irq.intx_pending = false;
        if let Some(t) = &irq.intx_trigger {
            signal(t);
        }
    } else {
        irq.intx_masked = false;
    }
}

/// Duplicates a caller's eventfd (`eventfd_ctx_fdget`: EBADF for a bad fd, EINVAL for a
/// descriptor that is not an eventfd).
fn dup_eventfd(fd: i32) -> KResult<OwnedFd> {
    if fd < 0 {
        return Err(Errno::EBADF);
    }
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).map_err(|_| Errno::EBADF)?;
    if link.to_string_lossy() != "anon_inode:[eventfd]" {
        return Err(Errno::EINVAL);
    }
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor we just checked is open.
    let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if d < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `d` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(d) })
}

/// Cheap check that `[addr, addr+len)` is mapped memory of this process
/// (`pin_user_pages` fails with EFAULT otherwise).
fn check_mapped(addr: u64, len: u64) -> KResult<()> {
    if len == 0 {
        return Ok(());
    }
    let start = addr & !(PAGE - 1);
    let end = addr.checked_add(len).ok_or(Errno::EFAULT)?;
    let span = end.div_ceil(PAGE) * PAGE - start;
    // SAFETY: MADV_NORMAL changes no memory contents; it fails with ENOMEM when part of
    // the range is not mapped, which is all we ask of it.
    let r = unsafe { libc::madvise(start as *mut libc::c_void, span as usize, libc::MADV_NORMAL) };
    if r != 0 {
        Err(Errno::EFAULT)
    } else {
        Ok(())
    }
}

/// What `pin_user_pages` needs (mm/gup.c check_vma_flags): the range mapped, readable,
/// and writable when the device may write (FOLL_WRITE); EFAULT otherwise.
fn check_pinnable(addr: u64, len: u64, write: bool) -> KResult<()> {
    check_mapped(addr, len)?;
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else { return Ok(()) };
    let end = addr.saturating_add(len);
    let mut cur = addr & !(PAGE - 1);
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else { continue };
        let Some((a, b)) = range.split_once('-') else { continue };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        if b <= cur || a >= end {
            continue;
        }
        let p = perms.as_bytes();
        if p.first() != Some(&b'r') || (write && p.get(1) != Some(&b'w')) {
            return Err(Errno::EFAULT);
        }
        cur = cur.max(b);
        if cur >= end {
            break;
        }
    }
    Ok(())
}

fn pages_spanned(uptr: u64, len: u64) -> u64 {
    let start = uptr / PAGE;
    let end = (uptr.saturating_add(len)).div_ceil(PAGE);
    end - start
}

/// Drivers whose binding leaves a group viable: vfio-pci, and drivers that set
/// `driver_managed_dma` (pci-stub, pcieport) so they claim no DMA ownership
/// (drivers/iommu/iommu.c `iommu_device_use_default_domain`).
fn dma_owner_free(driver: Option<&str>) -> bool {
    matches!(driver, None | Some("vfio-pci") | Some("pci-stub") | Some("pcieport"))
}

/// Gives no-IOMMU group numbers to vfio-pci devices without an IOMMU group
/// (`vfio_noiommu_group_alloc`: a fake IOMMU group with the lowest free group id), and
/// drops them when the device leaves vfio-pci.
/// Gives no-IOMMU group numbers to devices without an IOMMU group bound to vfio-pci
/// (and takes them back), as vfio does when `enable_unsafe_noiommu_mode` is set.
pub(crate) fn refresh_noiommu(st: &mut HostState) {
    let HostState { devices, kernel, .. } = st;
    if !kernel.config.noiommu {
        kernel.noiommu_ids.clear();
        return;
    }
    kernel
        .noiommu_ids
        .retain(|a, _| devices.get(a).is_some_and(|d| d.spec.iommu_group.is_none() && is_vfio(d)));
    for (a, d) in devices.iter() {
        if d.spec.iommu_group.is_none() && is_vfio(d) && !kernel.noiommu_ids.contains_key(a) {
            let used: BTreeSet<u32> = devices
                .values()
                .filter_map(|d| d.spec.iommu_group)
                .chain(kernel.noiommu_ids.values().copied())
                .collect();
            let id = (0..).find(|i| !used.contains(i)).unwrap_or(0);
            kernel.noiommu_ids.insert(*a, id);
        }
    }
}

fn is_vfio(d: &SimDevice) -> bool {
    d.driver.as_deref() == Some("vfio-pci")
}

fn group_of(st: &HostState, addr: PciAddress) -> Option<u32> {
    let d = st.devices.get(&addr)?;
    d.spec.iommu_group.or_else(|| st.kernel.noiommu_ids.get(&addr).copied())
}

fn group_members(st: &HostState, id: u32, noiommu: bool) -> Vec<PciAddress> {
    if noiommu {
        st.kernel.noiommu_ids.iter().filter(|(_, g)| **g == id).map(|(a, _)| *a).collect()
    } else {
        st.devices
            .values()
            .filter(|d| d.spec.iommu_group == Some(id))
            .map(|d| d.spec.address)
            .collect()
    }
}

fn group_viable(st: &HostState, id: u32, noiommu: bool) -> bool {
    group_members(st, id, noiommu)
        .iter()
        .all(|a| st.devices.get(a).is_some_and(|d| dma_owner_free(d.driver.as_deref())))
}

fn cfg_size(d: &SimDevice) -> u64 {
    // pci_cfg_space_size(): 4096 only for PCIe (extended config space).
    if d.spec.pcie {
        4096
    } else {
        256
    }
}

/// Walks the standard capability list of a config image; returns the offset of `id`.
fn find_cap(c: &[u8], id: u8) -> Option<usize> {
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

fn rd16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn rd32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]))
}
fn wr32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
fn wr64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

/// Size of a BAR slot as the PCI core sees it (`pci_resource_len`); 0 for the upper
/// half of a 64-bit BAR and for absent BARs.
fn bar_len(d: &SimDevice, i: u32) -> u64 {
    if d.spec.bridge && i >= 2 {
        return 0;
    }
    d.spec.bars.get(i as usize).copied().flatten().map_or(0, |b| b.size)
}

fn rom_bar_size(d: &SimDevice) -> u64 {
    d.spec.rom.as_ref().map_or(0, |r| (r.len() as u64).max(2048).next_power_of_two())
}

/// drivers/pci/rom.c pci_get_rom_size: the bytes covered by valid images (0x55AA
/// signature, "PCIR" data structure; image length at PCIR+16 in 512-byte units; the
/// last-image flag at PCIR+21 bit 7), capped at the ROM BAR size.
fn rom_image_len(d: &SimDevice) -> usize {
    let Some(rom) = d.spec.rom.as_deref() else { return 0 };
    let size = rom_bar_size(d) as usize;
    let mut image = 0usize;
    loop {
        if rom.get(image..image + 2) != Some(&[0x55, 0xaa][..]) {
            break;
        }
        let Some(p) = rom.get(image + 24..image + 26) else { break };
        let pds = image + u16::from_le_bytes([p[0], p[1]]) as usize;
        if rom.get(pds..pds + 4) != Some(&b"PCIR"[..]) {
            break;
        }
        let last = rom.get(pds + 21).is_some_and(|b| b & 0x80 != 0);
        let length = rom.get(pds + 16..pds + 18).map_or(0, |l| u16::from_le_bytes([l[0], l[1]]));
        image += usize::from(length) * 512;
        if image >= size || length == 0 || last {
            break;
        }
    }
    image.min(size)
}

/// The MSI-X table location: (bar, offset, size in bytes).
fn msix_table(d: &SimDevice) -> Option<(u32, u64, u64)> {
    let p = find_cap(&d.config, 0x11)?;
    let flags = rd16(&d.config, p + 2);
    let table = rd32(&d.config, p + 4);
    let n = u64::from(flags & 0x7ff) + 1;
    Some((table & 7, u64::from(table & !7), n * 16))
}

fn irq_count(d: &SimDevice, index: u32) -> u32 {
    // vfio_pci_get_irq_count() (pci_core).
    match index {
        INTX => u32::from(d.config[0x3d] != 0),
        MSI => find_cap(&d.config, 0x05).map_or(0, |p| 1 << ((d.config[p + 2] & 0x0e) >> 1)),
        MSIX => {
            find_cap(&d.config, 0x11).map_or(0, |p| u32::from(rd16(&d.config, p + 2) & 0x7ff) + 1)
        }
        ERR => u32::from(d.spec.pcie),
        REQ => 1,
        _ => 0,
    }
}

/// Bus reset reachable: not on a root bus (`pci_probe_reset_bus` needs `bus->self`).
fn bus_resettable(addr: PciAddress) -> bool {
    addr.bus != 0
}

fn same_bus(st: &HostState, addr: PciAddress) -> Vec<PciAddress> {
    st.devices.keys().filter(|a| a.domain == addr.domain && a.bus == addr.bus).copied().collect()
}

/// Translates a device DMA through its container or IOAS into process addresses.
fn translate(
    st: &HostState,
    addr: PciAddress,
    iova: u64,
    len: u64,
    write: bool,
) -> KResult<Vec<(u64, u64)>> {
    let k = &st.kernel;
    let end = iova.checked_add(len).ok_or(Errno::EFAULT)?;
    // Collect the mappings visible to the device: (iova, size, vaddr, read, write).
    let mut maps: Vec<(u64, u64, u64, bool, bool)> = Vec::new();
    if let Some((ictx, ioas, _)) = k.devs.get(&addr).and_then(|d| d.attached) {
        if let Some(IoObj::Ioas(io)) = k.ictxs.get(&ictx).and_then(|c| c.objs.get(&ioas)) {
            maps.extend(io.areas.iter().map(|(i, a)| (*i, a.len, a.uptr, a.read, a.write)));
        }
    } else if let Some(g) = group_of(st, addr) {
        let cid = k.groups.get(&g).and_then(|g| g.container).ok_or(Errno::EFAULT)?;
        if let Some(Iommu::Type1(t)) = k.containers.get(&cid).and_then(|c| c.iommu.as_ref()) {
            maps.extend(t.dmas.iter().map(|(i, d)| (*i, d.size, d.vaddr, d.read, d.write)));
        }
    }
    let mut out = Vec::new();
    let mut cur = iova;
    while cur < end {
        let m = maps.iter().find(|m| m.0 <= cur && cur - m.0 < m.1).ok_or(Errno::EFAULT)?;
        if (write && !m.4) || (!write && !m.3) {
            return Err(Errno::EFAULT);
        }
        let n = (m.1 - (cur - m.0)).min(end - cur);
        out.push((m.2 + (cur - m.0), n));
        cur += n;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// The kernel.

impl MockKernel {
    /// Makes `op` fail with `errno` on the calls `when` selects. Injected faults are
    /// checked before the operation's own rules and leave the state untouched.
    pub fn inject(&self, op: KernelOp, errno: Errno, when: FaultWhen) {
        self.host.state().kernel.faults.push(Fault { op, errno, when });
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        self.host.state().kernel.faults.clear();
    }

    /// How many times `op` was called on this kernel (failed calls included).
    pub fn calls(&self, op: KernelOp) -> u64 {
        self.host.state().kernel.calls.get(&op).copied().unwrap_or(0)
    }

    /// Mock descriptors open now (for leak checks).
    pub fn open_fds(&self) -> usize {
        self.host.state().kernel.fds.len()
    }

    /// DMA mappings alive in all containers and IOASes.
    pub fn dma_mappings(&self) -> usize {
        let st = self.host.state();
        let k = &st.kernel;
        let t1: usize = k
            .containers
            .values()
            .map(|c| match &c.iommu {
                Some(Iommu::Type1(t)) => t.dmas.len(),
                _ => 0,
            })
            .sum();
        let io: usize = k
            .ictxs
            .values()
            .flat_map(|c| c.objs.values())
            .map(|o| match o {
                IoObj::Ioas(i) => i.areas.len(),
                _ => 0,
            })
            .sum();
        t1 + io
    }

    /// Region mappings (`mmap`) alive.
    pub fn mmaps(&self) -> usize {
        self.host.state().kernel.mmaps.len()
    }

    /// Bytes pinned against `RLIMIT_MEMLOCK` now (type1 and iommufd together).
    pub fn locked_bytes(&self) -> u64 {
        let st = self.host.state();
        (st.kernel.locked_mm + st.kernel.locked_user) * PAGE
    }

    /// The host this kernel belongs to.
    pub fn host(&self) -> &MockHost {
        &self.host
    }

    /// Locks the state, counts the call and fires an injected fault if one is due.
    fn enter(&self, op: KernelOp) -> KResult<std::sync::MutexGuard<'_, HostState>> {
        let mut st = self.host.state();
        *st.kernel.calls.entry(op).or_insert(0) += 1;
        let mut fire = None;
        let mut remove = None;
        for (i, f) in st.kernel.faults.iter_mut().enumerate() {
            if f.op != op {
                continue;
            }
            match f.when {
                FaultWhen::Always => {
                    fire = Some(f.errno);
                }
                FaultWhen::Once => {
                    fire = Some(f.errno);
                    remove = Some(i);
                }
                FaultWhen::Nth(n) => {
                    if n <= 1 {
                        fire = Some(f.errno);
                        remove = Some(i);
                    } else {
                        f.when = FaultWhen::Nth(n - 1);
                        continue;
                    }
                }
            }
            break;
        }
        if let Some(i) = remove {
            st.kernel.faults.remove(i);
        }
        if let Some(e) = fire {
            return Err(e);
        }
        refresh_noiommu(&mut st);
        Ok(st)
    }
}

/// The (device, inode) of an open descriptor's file.
fn inode_of(fd: RawFd) -> Option<(u64, u64)> {
    // SAFETY: `st` is plain data that fstat fills.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes at most size_of::<stat>() bytes into `st`.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some((st.st_dev, st.st_ino))
}

fn new_fd(k: &mut KernelState, obj: FdObj) -> KernelFd {
    // SAFETY: the name is a NUL-terminated literal; memfd_create has no other inputs.
    let raw = unsafe { libc::memfd_create(c"vfio-mock".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(raw >= 0, "memfd_create for a mock descriptor: {}", std::io::Error::last_os_error());
    // SAFETY: `raw` was just returned by memfd_create and is owned by no one else.
    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
    if let Some(ino) = inode_of(raw) {
        k.inodes.insert(raw, ino);
    }
    k.backing.insert(raw, owned);
    k.fds.insert(raw, obj);
    KernelFd::from_raw(raw)
}

fn lookup(k: &KernelState, fd: &KernelFd) -> KResult<FdObj> {
    k.fds.get(&fd.raw()).copied().ok_or(Errno::EBADF)
}

fn container_of(k: &KernelState, fd: &KernelFd) -> KResult<u32> {
    match lookup(k, fd)? {
        FdObj::Container(c) => Ok(c),
        _ => Err(Errno::ENOTTY),
    }
}

fn group_fd(k: &KernelState, fd: &KernelFd) -> KResult<u32> {
    match lookup(k, fd)? {
        FdObj::Group(g) => Ok(g),
        _ => Err(Errno::ENOTTY),
    }
}

fn ictx_of(k: &KernelState, fd: &KernelFd) -> KResult<u32> {
    match lookup(k, fd)? {
        FdObj::Iommufd(c) => Ok(c),
        _ => Err(Errno::ENOTTY),
    }
}

/// A device fd with access granted (`vfio_device_fops_unl_ioctl`: EINVAL before a cdev
/// is bound).
fn device_fd(k: &KernelState, fd: &KernelFd) -> KResult<DevFd> {
    match lookup(k, fd)? {
        FdObj::Device(d) if d.access_granted() => Ok(d),
        FdObj::Device(_) => Err(Errno::EINVAL),
        _ => Err(Errno::ENOTTY),
    }
}

fn sim(st: &HostState, addr: PciAddress) -> KResult<&SimDevice> {
    st.devices.get(&addr).ok_or(Errno::ENODEV)
}

/// Drops a container that has neither an open fd nor groups.
fn gc_container(k: &mut KernelState, cid: u32) {
    let dead = k.containers.get(&cid).is_some_and(|c| !c.fd_open && c.groups.is_empty());
    if dead {
        k.containers.remove(&cid);
    }
}

/// `vfio_group_detach_container` (container.c): the last group out releases the IOMMU
/// driver and with it every mapping (type1 `vfio_iommu_type1_release`).
fn detach_group(k: &mut KernelState, gid: u32) {
    let Some(cid) = k.groups.get_mut(&gid).and_then(|g| g.container.take()) else { return };
    let mut unpin = 0;
    if let Some(c) = k.containers.get_mut(&cid) {
        c.groups.remove(&gid);
        if c.groups.is_empty() {
            if let Some(Iommu::Type1(t)) = c.iommu.take() {
                unpin = t.dmas.values().map(|d| d.size / PAGE).sum::<u64>();
            }
        }
    }
    k.locked_mm = k.locked_mm.saturating_sub(unpin);
    gc_container(k, cid);
}

/// Releases a group file once neither the group fd nor a device fd holds it
/// (`vfio_group_fops_release`: device fds hold a group file reference).
fn maybe_release_group(k: &mut KernelState, gid: u32) {
    let release = k.groups.get(&gid).is_some_and(|g| !g.opened && g.device_fds == 0);
    if release {
        detach_group(k, gid);
        k.groups.remove(&gid);
    }
}

// SAFETY: `mmap` hands out memfd mappings of the length asked (BARs are memfd-backed)
// that live until `munmap`; DMA maps only record ranges, and the simulated devices read
// and write through them only while they are mapped.
unsafe impl VfioKernel for MockKernel {
    fn open_container(&self) -> KResult<KernelFd> {
        let mut st = self.enter(KernelOp::OpenContainer)?;
        let k = &mut st.kernel;
        if !k.config.container {
            return Err(Errno::ENOENT);
        }
        let cid = k.next_container;
        k.next_container += 1;
        k.containers.insert(cid, Container { fd_open: true, ..Default::default() });
        Ok(new_fd(k, FdObj::Container(cid)))
    }

    fn open_group(&self, group: GroupNode) -> KResult<KernelFd> {
        let mut st = self.enter(KernelOp::OpenGroup)?;
        let (id, noiommu) = match group {
            GroupNode::Iommu(n) => (n, false),
            GroupNode::NoIommu(n) => (n, true),
        };
        // The node exists only while a member is bound to vfio-pci
        // (vfio_register_group_dev creates the group).
        let members = group_members(&st, id, noiommu);
        let exists = members.iter().any(|a| st.devices.get(a).is_some_and(is_vfio));
        if !exists {
            return Err(Errno::ENOENT);
        }
        let k = &mut st.kernel;
        // group.c vfio_group_fops_open: one open at a time; EBUSY while a member is
        // bound through its cdev (cdev_device_open_cnt).
        // Device fds hold the group file, so it stays open after its fd is closed.
        if k.groups.get(&id).is_some_and(|g| g.opened || g.device_fds > 0) {
            return Err(Errno::EBUSY);
        }
        if members.iter().any(|a| k.devs.get(a).is_some_and(|d| d.cdev.is_some())) {
            return Err(Errno::EBUSY);
        }
        let g = k.groups.entry(id).or_default();
        g.opened = true;
        g.noiommu = noiommu;
        Ok(new_fd(k, FdObj::Group(id)))
    }

    fn open_iommufd(&self) -> KResult<KernelFd> {
        let mut st = self.enter(KernelOp::OpenIommufd)?;
        let k = &mut st.kernel;
        if !k.config.iommufd {
            return Err(Errno::ENOENT);
        }
        let id = k.next_ictx;
        k.next_ictx += 1;
        k.ictxs.insert(id, Ictx { fd_open: true, ..Default::default() });
        Ok(new_fd(k, FdObj::Iommufd(id)))
    }

    fn open_device_cdev(&self, index: u32) -> KResult<KernelFd> {
        let mut st = self.enter(KernelOp::OpenDeviceCdev)?;
        if !st.kernel.config.iommufd {
            return Err(Errno::ENOENT);
        }
        // The cdev exists while the device is bound to vfio-pci behind an IOMMU
        // (no-IOMMU cdevs are not modelled).
        let addr = st
            .devices
            .values()
            .find(|d| d.vfio_index == Some(index) && is_vfio(d) && d.spec.iommu_group.is_some())
            .map(|d| d.spec.address)
            .ok_or(Errno::ENOENT)?;
        Ok(new_fd(&mut st.kernel, FdObj::Device(DevFd { addr, group: None, bound: None })))
    }

    fn export(&self, fd: KernelFd) -> OwnedFd {
        let mut st = self.host.state();
        let raw = fd.raw();
        match st.kernel.backing.remove(&raw) {
            Some(owned) => owned,
            // Not one of ours: the caller handed over a descriptor it owns.
            // SAFETY: the KernelFd owns the descriptor and is consumed here.
            None => unsafe { OwnedFd::from_raw_fd(raw) },
        }
    }

    /// Recognises a descriptor the mock handed out (with [`VfioKernel::export`]), by the
    /// inode of its file, under whatever number it arrives (passed over a socket, dup'ed
    /// by a parent). The object moves to the new descriptor, as if the parent had closed
    /// its copy; a descriptor the mock never handed out is EBADF.
    fn adopt(&self, fd: OwnedFd) -> KResult<KernelFd> {
        let mut st = self.enter(KernelOp::AdoptFd)?;
        let k = &mut st.kernel;
        let ino = inode_of(fd.as_raw_fd()).ok_or(Errno::EBADF)?;
        let old = k.inodes.iter().find(|(_, i)| **i == ino).map(|(r, _)| *r).ok_or(Errno::EBADF)?;
        let obj = k.fds.remove(&old).ok_or(Errno::EBADF)?;
        k.inodes.remove(&old);
        k.backing.remove(&old);
        let raw = fd.as_raw_fd();
        k.fds.insert(raw, obj);
        k.inodes.insert(raw, ino);
        k.backing.insert(raw, fd);
        Ok(KernelFd::from_raw(raw))
    }

    fn close(&self, fd: KernelFd) {
        let mut st = match self.enter(KernelOp::Close) {
            Ok(st) => st,
            // close() releases the descriptor even when it reports an error.
            Err(_) => self.host.state(),
        };
        let HostState { devices, kernel: k, .. } = &mut *st;
        k.backing.remove(&fd.raw());
        k.inodes.remove(&fd.raw());
        let Some(obj) = k.fds.remove(&fd.raw()) else { return };
        match obj {
            FdObj::Container(cid) => {
                if let Some(c) = k.containers.get_mut(&cid) {
                    c.fd_open = false;
                }
                gc_container(k, cid);
            }
            FdObj::Group(gid) => {
                if let Some(g) = k.groups.get_mut(&gid) {
                    g.opened = false;
                }
                maybe_release_group(k, gid);
            }
            FdObj::Iommufd(id) => {
                if let Some(c) = k.ictxs.get_mut(&id) {
                    c.fd_open = false;
                }
                gc_ictx(k, id);
            }
            FdObj::Device(d) => {
                if d.access_granted() {
                    close_device(k, devices, d);
                }
            }
        }
    }

    fn get_api_version(&self, container: &KernelFd) -> KResult<i32> {
        let st = self.enter(KernelOp::GetApiVersion)?;
        container_of(&st.kernel, container)?;
        Ok(VFIO_API_VERSION as i32)
    }

    fn check_extension(&self, container: &KernelFd, extension: u32) -> KResult<u32> {
        let st = self.enter(KernelOp::CheckExtension)?;
        let k = &st.kernel;
        let c = k.containers.get(&container_of(k, container)?).ok_or(Errno::EBADF)?;
        let cfg = &k.config;
        let type1 = |ext: u32, iommu: Option<&Type1>| -> u32 {
            // type1 vfio_iommu_type1_check_extension.
            match ext {
                VFIO_TYPE1_IOMMU => u32::from(cfg.type1),
                TYPE1V2 => u32::from(cfg.type1v2),
                VFIO_UNMAP_ALL => u32::from(cfg.type1 || cfg.type1v2),
                // Answered by the container's IOMMU only (0 before SET_IOMMU).
                VFIO_UPDATE_VADDR => u32::from(iommu.is_some()),
                VFIO_DMA_CC_IOMMU => u32::from(iommu.is_some()),
                _ => 0,
            }
        };
        // noiommu: vfio_noiommu_ioctl answers 1 only for VFIO_NOIOMMU_IOMMU in noiommu mode.
        let noiommu = |ext: u32| u32::from(cfg.noiommu && ext == VFIO_NOIOMMU_IOMMU);
        Ok(match &c.iommu {
            Some(Iommu::Type1(t)) => type1(extension, Some(t)),
            Some(Iommu::NoIommu) => noiommu(extension),
            // container.c vfio_container_ioctl_check_extension: without a driver, ask every
            // driver allowed for the container's groups (all when it has none).
            None => {
                let any = c.groups.is_empty();
                let t = if any || !c.noiommu { type1(extension, None) } else { 0 };
                let n = if any || c.noiommu { noiommu(extension) } else { 0 };
                t.max(n)
            }
        })
    }

    fn set_iommu(&self, container: &KernelFd, iommu_type: u32) -> KResult<()> {
        let mut st = self.enter(KernelOp::SetIommu)?;
        let k = &mut st.kernel;
        let cid = container_of(k, container)?;
        let cfg = k.config.clone();
        let c = k.containers.get_mut(&cid).ok_or(Errno::EBADF)?;
        // container.c vfio_ioctl_set_iommu: a group must be in and no driver set yet.
        if c.groups.is_empty() || c.iommu.is_some() {
            return Err(Errno::EINVAL);
        }
        if c.noiommu {
            // Only the noiommu driver is allowed; it supports only its own type, and
            // any other type finds no driver (ENODEV).
            if !(cfg.noiommu && iommu_type == VFIO_NOIOMMU_IOMMU) {
                return Err(Errno::ENODEV);
            }
            c.iommu = Some(Iommu::NoIommu);
            return Ok(());
        }
        let v2 = match iommu_type {
            VFIO_TYPE1_IOMMU if cfg.type1 => false,
            TYPE1V2 if cfg.type1v2 => true,
            _ => return Err(Errno::ENODEV),
        };
        // type1 vfio_iommu_type1_attach_group: without isolated MSI, EPERM unless
        // allow_unsafe_interrupts.
        if !cfg.interrupt_remapping && !cfg.allow_unsafe_interrupts {
            return Err(Errno::EPERM);
        }
        c.iommu =
            Some(Iommu::Type1(Type1 { v2, dmas: BTreeMap::new(), avail: cfg.dma_entry_limit }));
        Ok(())
    }

    fn iommu_get_info(&self, container: &KernelFd, buf: &mut [u8]) -> KResult<()> {
        let st = self.enter(KernelOp::IommuGetInfo)?;
        let k = &st.kernel;
        let c = k.containers.get(&container_of(k, container)?).ok_or(Errno::EBADF)?;
        let t = match &c.iommu {
            Some(Iommu::Type1(t)) => t,
            // vfio_noiommu_ioctl: ENOTTY for everything but CHECK_EXTENSION.
            Some(Iommu::NoIommu) => return Err(Errno::ENOTTY),
            // container.c: unrecognised ioctls without a driver fail with EINVAL.
            None => return Err(Errno::EINVAL),
        };
        if buf.len() < 16 {
            return Err(Errno::EFAULT);
        }
        // type1 vfio_iommu_type1_get_info: minsz = offsetofend(iova_pgsizes).
        let argsz = rd32(buf, 0);
        if argsz < 16 {
            return Err(Errno::EINVAL);
        }
        let pgsizes = k.config.pgsize_bitmap & !(PAGE - 1);
        let mut caps = Caps::default();
        // Order as the kernel builds them: migration, DMA avail, IOVA ranges.
        let mut mig = vec![0u8; 24];
        wr32(&mut mig, 0, 1); // VFIO_IOMMU_DIRTY_PGSIZES
        wr64(&mut mig, 8, pgsizes);
        wr64(&mut mig, 16, DIRTY_BITMAP_SIZE_MAX);
        caps.add(VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION as u16, 1, &mig);
        caps.add(VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL as u16, 1, &t.avail.to_le_bytes());
        let ranges = &k.config.iova_ranges;
        let mut r = vec![0u8; 8 + 16 * ranges.len()];
        wr32(&mut r, 0, ranges.len() as u32);
        for (i, (s, e)) in ranges.iter().enumerate() {
            wr64(&mut r, 8 + 16 * i, *s);
            wr64(&mut r, 16 + 16 * i, *e);
        }
        caps.add(VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE as u16, 1, &r);
        let mut info = [0u8; 24];
        wr32(&mut info, 0, argsz);
        wr32(&mut info, 4, VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS);
        wr64(&mut info, 8, pgsizes);
        finish_info(buf, &mut info, argsz, &caps, 16)
    }

    unsafe fn map_dma(&self, container: &KernelFd, map: &vfio_iommu_type1_dma_map) -> KResult<()> {
        let mut st = self.enter(KernelOp::MapDma)?;
        let k = &mut st.kernel;
        let cid = container_of(k, container)?;
        let cfg = k.config.clone();
        let c = k.containers.get_mut(&cid).ok_or(Errno::EBADF)?;
        let t = match c.iommu.as_mut() {
            Some(Iommu::Type1(t)) => t,
            Some(Iommu::NoIommu) => return Err(Errno::ENOTTY),
            None => return Err(Errno::EINVAL),
        };
        // type1 vfio_iommu_type1_map_dma: argsz and known flags.
        let known = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE | VFIO_DMA_MAP_FLAG_VADDR;
        if map.argsz < 32 || map.flags & !known != 0 {
            return Err(Errno::EINVAL);
        }
        // vfio_dma_do_map: exactly one of prot / VADDR.
        let (read, write) =
            (map.flags & VFIO_DMA_MAP_FLAG_READ != 0, map.flags & VFIO_DMA_MAP_FLAG_WRITE != 0);
        let set_vaddr = map.flags & VFIO_DMA_MAP_FLAG_VADDR != 0;
        if (read || write) == set_vaddr {
            return Err(Errno::EINVAL);
        }
        let mask = (1u64 << cfg.pgsize_bitmap.trailing_zeros().max(12)) - 1;
        // vfio_dma_do_map: zero size or misaligned size/iova/vaddr.
        if map.size == 0 || (map.size | map.iova | map.vaddr) & mask != 0 {
            return Err(Errno::EINVAL);
        }
        // Wrap past 2^64: EOVERFLOW since 6.18 (check_add_overflow), EINVAL before.
        let wrap = if cfg.wrap_einval { Errno::EINVAL } else { Errno::EOVERFLOW };
        let last = map.iova.checked_add(map.size - 1).ok_or(wrap)?;
        map.vaddr.checked_add(map.size - 1).ok_or(wrap)?;
        if set_vaddr {
            // VFIO_DMA_MAP_FLAG_VADDR: ENOENT without an overlapping mapping, EINVAL unless
            // it is exactly an invalidated one; then the new vaddr is recorded.
            let hit =
                t.dmas.range(..=last).next_back().filter(|(i, d)| *i + (d.size - 1) >= map.iova);
            let Some((&at, _)) = hit else { return Err(Errno::ENOENT) };
            let d = t.dmas.get_mut(&at).ok_or(Errno::ENOENT)?;
            if !d.vaddr_invalid || at != map.iova || d.size != map.size {
                return Err(Errno::EINVAL);
            }
            d.vaddr = map.vaddr;
            d.vaddr_invalid = false;
            return Ok(());
        }
        // vfio_find_dma: any overlap -> EEXIST.
        if t.dmas.range(..=last).next_back().is_some_and(|(i, d)| i + (d.size - 1) >= map.iova) {
            return Err(Errno::EEXIST);
        }
        if t.avail == 0 {
            return Err(Errno::ENOSPC);
        }
        // vfio_iommu_iova_dma_valid: inside one usable range.
        if !cfg.iova_ranges.iter().any(|(s, e)| map.iova >= *s && last <= *e) {
            return Err(Errno::EINVAL);
        }
        // vfio_pin_pages_remote: pin_user_pages fails with EFAULT on unmapped memory, and
        // the locked_vm accounting fails with ENOMEM beyond RLIMIT_MEMLOCK.
        check_pinnable(map.vaddr, map.size, write)?;
        let pages = map.size / PAGE;
        let limit = cfg.memlock_limit / PAGE;
        if !cfg.cap_ipc_lock && k.locked_mm + pages > limit {
            return Err(Errno::ENOMEM);
        }
        k.locked_mm += pages;
        let Some(Some(Iommu::Type1(t))) = k.containers.get_mut(&cid).map(|c| c.iommu.as_mut())
        else {
            return Err(Errno::EBADF);
        };
        t.avail -= 1;
        t.dmas.insert(
            map.iova,
            Dma { size: map.size, vaddr: map.vaddr, vaddr_invalid: false, read, write },
        );
        Ok(())
    }

    fn unmap_dma(
        &self,
        container: &KernelFd,
        unmap: &mut vfio_iommu_type1_dma_unmap,
    ) -> KResult<()> {
        let mut st = self.enter(KernelOp::UnmapDma)?;
        let k = &mut st.kernel;
        let cid = container_of(k, container)?;
        let cfg = k.config.clone();
        let c = k.containers.get_mut(&cid).ok_or(Errno::EBADF)?;
        let t = match c.iommu.as_mut() {
            Some(Iommu::Type1(t)) => t,
            Some(Iommu::NoIommu) => return Err(Errno::ENOTTY),
            None => return Err(Errno::EINVAL),
        };
        // type1 vfio_iommu_type1_unmap_dma: argsz and flags.
        let known = VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP
            | VFIO_DMA_UNMAP_FLAG_VADDR
            | VFIO_DMA_UNMAP_FLAG_ALL;
        if unmap.argsz < 24 || unmap.flags & !known != 0 {
            return Err(Errno::EINVAL);
        }
        if unmap.flags & VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP != 0 {
            // Dirty tracking is not started by anything here: vfio_dma_do_unmap refuses.
            return Err(Errno::EINVAL);
        }
        let all = unmap.flags & VFIO_DMA_UNMAP_FLAG_ALL != 0;
        let mask = (1u64 << cfg.pgsize_bitmap.trailing_zeros().max(12)) - 1;
        // vfio_dma_do_unmap: iova aligned; ALL needs iova = size = 0; else a non-zero
        // aligned size that does not wrap.
        if unmap.iova & mask != 0 {
            return Err(Errno::EINVAL);
        }
        let (iova, end) = if all {
            if unmap.iova != 0 || unmap.size != 0 {
                return Err(Errno::EINVAL);
            }
            (0u64, u64::MAX)
        } else {
            if unmap.size == 0 || unmap.size & mask != 0 {
                return Err(Errno::EINVAL);
            }
            let wrap = if cfg.wrap_einval { Errno::EINVAL } else { Errno::EOVERFLOW };
            (unmap.iova, unmap.iova.checked_add(unmap.size - 1).ok_or(wrap)?)
        };
        let invalidate = unmap.flags & VFIO_DMA_UNMAP_FLAG_VADDR != 0;
        let overlaps = |t: &Type1, at: u64| -> Option<(u64, u64)> {
            t.dmas
                .range(..=at)
                .next_back()
                .filter(|(i, d)| *i + (d.size - 1) >= at)
                .map(|(i, d)| (*i, d.size))
        };
        // v2 refuses to bisect a mapping at either end (EINVAL).
        if t.v2 && !all {
            if overlaps(t, iova).is_some_and(|(i, _)| i != iova) {
                return Err(Errno::EINVAL);
            }
            if overlaps(t, end).is_some_and(|(i, s)| i + (s - 1) != end) {
                return Err(Errno::EINVAL);
            }
        }
        // Walk from the first mapping overlapping the range. v1: one starting before
        // `iova` stops the walk (success, size 0); one starting inside is removed whole.
        let first = overlaps(t, iova)
            .map(|(i, _)| i)
            .or_else(|| t.dmas.range(iova..).next().map(|(i, _)| *i));
        let mut unmapped = 0u64;
        let mut unpinned = 0u64;
        if let Some(first) = first {
            let keys: Vec<u64> = t.dmas.range(first..).map(|(i, _)| *i).collect();
            for i in keys {
                if i > end {
                    break;
                }
                if !t.v2 && iova > i {
                    break;
                }
                if invalidate {
                    // VFIO_DMA_UNMAP_FLAG_VADDR: mark the vaddr invalid, keep the mapping;
                    // invalidating twice is EINVAL (earlier ones in this call revert).
                    if t.dmas.get(&i).is_some_and(|d| d.vaddr_invalid) {
                        for j in t.dmas.range(first..i).map(|(j, _)| *j).collect::<Vec<_>>() {
                            if let Some(d) = t.dmas.get_mut(&j) {
                                d.vaddr_invalid = false;
                            }
                        }
                        return Err(Errno::EINVAL);
                    }
                    if let Some(d) = t.dmas.get_mut(&i) {
                        d.vaddr_invalid = true;
                        unmapped += d.size;
                    }
                    continue;
                }
                if let Some(d) = t.dmas.remove(&i) {
                    unmapped += d.size;
                    unpinned += d.size / PAGE;
                    t.avail += 1;
                }
            }
        }
        k.locked_mm = k.locked_mm.saturating_sub(unpinned);
        unmap.size = unmapped;
        Ok(())
    }

    fn group_get_status(&self, group: &KernelFd) -> KResult<u32> {
        let st = self.enter(KernelOp::GroupGetStatus)?;
        let gid = group_fd(&st.kernel, group)?;
        let g = st.kernel.groups.get(&gid).ok_or(Errno::EBADF)?;
        // group.c vfio_group_ioctl_get_status.
        if g.container.is_some() {
            return Ok(VFIO_GROUP_FLAGS_CONTAINER_SET | VFIO_GROUP_FLAGS_VIABLE);
        }
        if g.noiommu || group_viable(&st, gid, false) {
            Ok(VFIO_GROUP_FLAGS_VIABLE)
        } else {
            Ok(0)
        }
    }

    fn group_set_container(&self, group: &KernelFd, container: &KernelFd) -> KResult<()> {
        let mut st = self.enter(KernelOp::GroupSetContainer)?;
        let gid = group_fd(&st.kernel, group)?;
        // group.c vfio_group_ioctl_set_container: EBADF for a bad fd, EINVAL when the
        // group already has one, EBADFD for an fd that is not a container.
        let target = st.kernel.fds.get(&container.raw()).copied().ok_or(Errno::EBADF)?;
        let noiommu = st.kernel.groups.get(&gid).is_some_and(|g| g.noiommu);
        if st.kernel.groups.get(&gid).is_some_and(|g| g.container.is_some()) {
            return Err(Errno::EINVAL);
        }
        let FdObj::Container(cid) = target else { return Err(Errno::EBADFD) };
        let viable = noiommu || group_viable(&st, gid, false);
        let k = &mut st.kernel;
        let cfg = k.config.clone();
        let c = k.containers.get_mut(&cid).ok_or(Errno::EBADF)?;
        // container.c vfio_container_attach_group: real and no-IOMMU groups do not mix.
        if !c.groups.is_empty() && c.noiommu != noiommu {
            return Err(Errno::EPERM);
        }
        // iommu_group_claim_dma_owner: EPERM while a host driver owns DMA in the group.
        if !noiommu && !viable {
            return Err(Errno::EPERM);
        }
        // A container with an IOMMU attaches the group now (type1 attach_group rules).
        if matches!(c.iommu, Some(Iommu::Type1(_)))
            && !cfg.interrupt_remapping
            && !cfg.allow_unsafe_interrupts
        {
            return Err(Errno::EPERM);
        }
        c.groups.insert(gid);
        c.noiommu = noiommu;
        if let Some(g) = k.groups.get_mut(&gid) {
            g.container = Some(cid);
        }
        Ok(())
    }

    fn group_unset_container(&self, group: &KernelFd) -> KResult<()> {
        let mut st = self.enter(KernelOp::GroupUnsetContainer)?;
        let k = &mut st.kernel;
        let gid = group_fd(k, group)?;
        let g = k.groups.get(&gid).ok_or(Errno::EBADF)?;
        // group.c vfio_group_ioctl_unset_container: EINVAL without a container, EBUSY
        // while device fds use it (container_users != 1).
        if g.container.is_none() {
            return Err(Errno::EINVAL);
        }
        if g.device_fds > 0 {
            return Err(Errno::EBUSY);
        }
        detach_group(k, gid);
        Ok(())
    }

    fn group_get_device_fd(&self, group: &KernelFd, name: &CStr) -> KResult<KernelFd> {
        let mut st = self.enter(KernelOp::GroupGetDeviceFd)?;
        let gid = group_fd(&st.kernel, group)?;
        let noiommu = st.kernel.groups.get(&gid).is_some_and(|g| g.noiommu);
        // vfio_device_get_from_name: a vfio-pci member with that name, else ENODEV.
        let name = name.to_str().map_err(|_| Errno::ENODEV)?;
        let addr = group_members(&st, gid, noiommu)
            .into_iter()
            .find(|a| a.to_string() == name && st.devices.get(a).is_some_and(is_vfio))
            .ok_or(Errno::ENODEV)?;
        // vfio_df_group_open / vfio_group_use_container: the container must have an IOMMU.
        let cid = st.kernel.groups.get(&gid).and_then(|g| g.container).ok_or(Errno::EINVAL)?;
        if st.kernel.containers.get(&cid).is_none_or(|c| c.iommu.is_none()) {
            return Err(Errno::EINVAL);
        }
        let HostState { devices, kernel: k, .. } = &mut *st;
        // A device bound through its cdev cannot also be opened through the group.
        if k.devs.get(&addr).is_some_and(|d| d.cdev.is_some()) {
            return Err(Errno::EBUSY);
        }
        open_device(k, devices, addr);
        if let Some(g) = k.groups.get_mut(&gid) {
            g.device_fds += 1;
        }
        Ok(new_fd(k, FdObj::Device(DevFd { addr, group: Some(gid), bound: None })))
    }

    fn device_get_info(&self, device: &KernelFd, buf: &mut [u8]) -> KResult<()> {
        let st = self.enter(KernelOp::DeviceGetInfo)?;
        let d = device_fd(&st.kernel, device)?;
        let dev = sim(&st, d.addr)?;
        if buf.len() < 16 {
            return Err(Errno::EFAULT);
        }
        // pci_core vfio_pci_ioctl_get_info: minsz = offsetofend(num_irqs).
        let argsz = rd32(buf, 0);
        if argsz < 16 {
            return Err(Errno::EINVAL);
        }
        let mut flags = VFIO_DEVICE_FLAGS_PCI;
        if dev.spec.flr {
            flags |= VFIO_DEVICE_FLAGS_RESET;
        }
        let mut caps = Caps::default();
        // vfio_pci_info_atomic_cap: PCIe AtomicOp completer bits of DEVCAP2.
        if let Some(p) = find_cap(&dev.config, 0x10).filter(|_| dev.spec.pcie) {
            let devcap2 = rd32(&dev.config, p + 0x24);
            let mut f = 0u32;
            for (bit, v) in [(7, 1u32), (8, 2), (9, 4)] {
                if devcap2 & (1 << bit) != 0 {
                    f |= v;
                }
            }
            if f != 0 {
                caps.add(
                    VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP as u16,
                    1,
                    &[f.to_le_bytes(), [0; 4]].concat(),
                );
            }
        }
        if !caps.is_empty() {
            flags |= VFIO_DEVICE_FLAGS_CAPS;
        }
        let mut info = [0u8; 24];
        wr32(&mut info, 0, argsz);
        wr32(&mut info, 4, flags);
        wr32(&mut info, 8, NUM_REGIONS + dev.spec.extra_regions.len() as u32);
        wr32(&mut info, 12, NUM_IRQS);
        finish_info(buf, &mut info, argsz, &caps, 16)
    }

    fn device_get_region_info(&self, device: &KernelFd, buf: &mut [u8]) -> KResult<()> {
        let st = self.enter(KernelOp::DeviceGetRegionInfo)?;
        let d = device_fd(&st.kernel, device)?;
        let dev = sim(&st, d.addr)?;
        let cfg = &st.kernel.config;
        if buf.len() < 32 {
            return Err(Errno::EFAULT);
        }
        // pci_core vfio_pci_ioctl_get_region_info: minsz = offsetofend(offset).
        let argsz = rd32(buf, 0);
        if argsz < 32 {
            return Err(Errno::EINVAL);
        }
        let index = rd32(buf, 8);
        let mut caps = Caps::default();
        let (size, mut flags) = match index {
            CONFIG_INDEX => {
                (cfg_size(dev), VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE)
            }
            0..=5 => {
                let size = bar_len(dev, index);
                if size == 0 {
                    (0, 0)
                } else {
                    let mut f = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
                    let bar = dev.spec.bars[index as usize];
                    let trapped = model_bar(&st.kernel, d.addr) == Some(index);
                    if bar.is_some_and(|b| b.mmap && b.kind != BarKind::Io) && !trapped {
                        f |= VFIO_REGION_INFO_FLAG_MMAP;
                        if let Some((tb, toff, tsize)) = msix_table(dev).filter(|t| t.0 == index) {
                            if cfg.msix_mappable {
                                // msix_mappable_cap (kernel 4.16+).
                                caps.add(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE as u16, 1, &[]);
                            } else {
                                // msix_sparse_mmap_cap (before 4.16): areas around the
                                // table pages.
                                let _ = tb;
                                let mut areas = Vec::new();
                                let lo = toff & !(PAGE - 1);
                                let hi = (toff + tsize).div_ceil(PAGE) * PAGE;
                                if lo != 0 {
                                    areas.push((0, lo));
                                }
                                if hi < size {
                                    areas.push((hi, size - hi));
                                }
                                let mut b = vec![0u8; 8 + 16 * areas.len()];
                                wr32(&mut b, 0, areas.len() as u32);
                                for (i, (o, s)) in areas.iter().enumerate() {
                                    wr64(&mut b, 8 + 16 * i, *o);
                                    wr64(&mut b, 16 + 16 * i, *s);
                                }
                                caps.add(VFIO_REGION_INFO_CAP_SPARSE_MMAP as u16, 1, &b);
                            }
                        }
                    }
                    (size, f)
                }
            }
            ROM_INDEX => {
                // The ROM BAR size, readable only when pci_map_rom finds a valid image.
                let s = rom_bar_size(dev);
                if s > 0 && rom_image_len(dev) > 0 {
                    (s, VFIO_REGION_INFO_FLAG_READ)
                } else {
                    (0, 0)
                }
            }
            VGA_INDEX => {
                // Only VGA-class devices with CONFIG_VFIO_PCI_VGA have it; else EINVAL.
                if !(cfg.vga && dev.spec.class >> 8 == 0x0300) {
                    return Err(Errno::EINVAL);
                }
                (0xc0000, VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE)
            }
            i => {
                let r =
                    dev.spec.extra_regions.get((i - NUM_REGIONS) as usize).ok_or(Errno::EINVAL)?;
                let mut b = vec![0u8; 8];
                wr32(&mut b, 0, r.region_type);
                wr32(&mut b, 4, r.subtype);
                caps.add(VFIO_REGION_INFO_CAP_TYPE as u16, 1, &b);
                let mut f = VFIO_REGION_INFO_FLAG_READ;
                if r.writable {
                    f |= VFIO_REGION_INFO_FLAG_WRITE;
                }
                (r.size, f)
            }
        };
        if !caps.is_empty() {
            flags |= VFIO_REGION_INFO_FLAG_CAPS;
        }
        let mut info = [0u8; 32];
        wr32(&mut info, 0, argsz);
        wr32(&mut info, 4, flags);
        wr32(&mut info, 8, index);
        wr64(&mut info, 16, size);
        wr64(&mut info, 24, u64::from(index) << OFFSET_SHIFT);
        finish_info(buf, &mut info, argsz, &caps, 12)
    }

    fn device_get_irq_info(&self, device: &KernelFd, info: &mut vfio_irq_info) -> KResult<()> {
        let st = self.enter(KernelOp::DeviceGetIrqInfo)?;
        let d = device_fd(&st.kernel, device)?;
        let dev = sim(&st, d.addr)?;
        // pci_core vfio_pci_ioctl_get_irq_info.
        if info.argsz < 16 || info.index >= NUM_IRQS {
            return Err(Errno::EINVAL);
        }
        if info.index == ERR && !dev.spec.pcie {
            return Err(Errno::EINVAL);
        }
        info.flags = VFIO_IRQ_INFO_EVENTFD;
        info.count = irq_count(dev, info.index);
        if info.index == INTX {
            info.flags |= VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED;
        } else if info.index != MSIX || !(st.kernel.config.dyn_msix && dev.spec.msix.is_some()) {
            // vfio_pci_core_ioctl_get_irq_info: has_dyn_msix needs an MSI-X capability
            // (pci_msix_can_alloc_dyn); without one MSI-X is NORESIZE like MSI.
            info.flags |= VFIO_IRQ_INFO_NORESIZE;
        }
        Ok(())
    }

    fn device_set_irqs(&self, device: &KernelFd, buf: &[u8]) -> KResult<()> {
        let mut st = self.enter(KernelOp::DeviceSetIrqs)?;
        let d = device_fd(&st.kernel, device)?;
        if buf.len() < 20 {
            return Err(Errno::EFAULT);
        }
        let (argsz, flags, index, start, count) =
            (rd32(buf, 0), rd32(buf, 4), rd32(buf, 8), rd32(buf, 12), rd32(buf, 16));
        // vfio_set_irqs_validate_and_prepare (drivers/vfio/vfio_main.c).
        if argsz < 20
            || index >= NUM_IRQS
            || count >= u32::MAX - start
            || flags & !(VFIO_IRQ_SET_DATA_TYPE_MASK | VFIO_IRQ_SET_ACTION_TYPE_MASK) != 0
        {
            return Err(Errno::EINVAL);
        }
        let max = irq_count(sim(&st, d.addr)?, index);
        if start >= max || start + count > max {
            return Err(Errno::EINVAL);
        }
        let size = match flags & VFIO_IRQ_SET_DATA_TYPE_MASK {
            VFIO_IRQ_SET_DATA_NONE => 0,
            VFIO_IRQ_SET_DATA_BOOL => 1,
            VFIO_IRQ_SET_DATA_EVENTFD => 4,
            _ => return Err(Errno::EINVAL),
        };
        let data_len = count as usize * size;
        if size > 0 && (argsz as usize - 20) < data_len {
            return Err(Errno::EINVAL);
        }
        let data = buf.get(20..20 + data_len).ok_or(Errno::EFAULT)?;
        let action = flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
        let dtype = flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
        let spec = &sim(&st, d.addr)?.spec;
        let pcie = spec.pcie;
        let dyn_msix = st.kernel.config.dyn_msix && spec.msix.is_some();
        let dev = st.kernel.devs.entry(d.addr).or_default();
        let irq = &mut dev.irq;
        set_irqs(irq, index, action, dtype, start, count, data, pcie, dyn_msix)
    }

    fn device_reset(&self, device: &KernelFd) -> KResult<()> {
        let mut st = self.enter(KernelOp::DeviceReset)?;
        let d = device_fd(&st.kernel, device)?;
        // pci_core vfio_pci_ioctl_reset: EINVAL unless reset_works.
        if !sim(&st, d.addr)?.spec.flr {
            return Err(Errno::EINVAL);
        }
        // pci_try_reset_function saves and restores the config state around the FLR,
        // so the config image reads back as before; the device's own state is reset.
        reset_device(&mut st, d.addr);
        Ok(())
    }

    fn device_get_pci_hot_reset_info(&self, device: &KernelFd, buf: &mut [u8]) -> KResult<()> {
        let st = self.enter(KernelOp::DeviceGetPciHotResetInfo)?;
        let d = device_fd(&st.kernel, device)?;
        if buf.len() < 12 {
            return Err(Errno::EFAULT);
        }
        // pci_core vfio_pci_ioctl_get_pci_hot_reset_info.
        let argsz = rd32(buf, 0);
        if argsz < 12 {
            return Err(Errno::EINVAL);
        }
        // No slot reset is modelled; a bus reset needs a non-root bus.
        if !bus_resettable(d.addr) {
            return Err(Errno::ENODEV);
        }
        let affected = same_bus(&st, d.addr);
        let count = affected.len() as u32;
        let cdev = d.bound;
        let mut flags = 0;
        if cdev.is_some() {
            flags = VFIO_PCI_HOT_RESET_FLAG_DEV_ID | VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED;
        }
        if (argsz as usize) < 12 + 8 * affected.len() {
            wr32(buf, 4, 0);
            wr32(buf, 8, count);
            return Err(Errno::ENOSPC);
        }
        let mut entries = Vec::new();
        for a in &affected {
            let id = if let Some((ictx, _)) = cdev {
                // vfio_pci_fill_devs (cdev): devid when bound to the same iommufd,
                // OWNED when its group is owned through that iommufd, else NOT_OWNED.
                let k = &st.kernel;
                let id = match k.devs.get(a).and_then(|s| s.cdev) {
                    Some((c, devid)) if c == ictx => devid,
                    Some(_) => VFIO_PCI_DEVID_NOT_OWNED as u32,
                    None => {
                        let g = group_of(&st, *a);
                        let owned = g.is_some()
                            && k.devs.iter().any(|(b, s)| {
                                group_of(&st, *b) == g && s.cdev.is_some_and(|(c, _)| c == ictx)
                            })
                            && st.devices.get(a).is_some_and(is_vfio);
                        if owned {
                            VFIO_PCI_DEVID_OWNED
                        } else {
                            VFIO_PCI_DEVID_NOT_OWNED as u32
                        }
                    }
                };
                if id == VFIO_PCI_DEVID_NOT_OWNED as u32 {
                    flags &= !VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED;
                }
                id
            } else {
                // Legacy: the IOMMU group id; a device without one cannot be reset (EPERM).
                group_of(&st, *a).ok_or(Errno::EPERM)?
            };
            entries.push((id, *a));
        }
        let need = 12 + 8 * entries.len();
        if buf.len() < need {
            return Err(Errno::EFAULT);
        }
        for (i, (id, a)) in entries.iter().enumerate() {
            let o = 12 + 8 * i;
            wr32(buf, o, *id);
            buf[o + 4..o + 6].copy_from_slice(&(a.domain as u16).to_le_bytes());
            buf[o + 6] = a.bus;
            buf[o + 7] = (a.device << 3) | a.function;
        }
        wr32(buf, 4, flags);
        wr32(buf, 8, count);
        Ok(())
    }

    fn device_pci_hot_reset(&self, device: &KernelFd, buf: &[u8]) -> KResult<()> {
        let mut st = self.enter(KernelOp::DevicePciHotReset)?;
        let d = device_fd(&st.kernel, device)?;
        if buf.len() < 12 {
            return Err(Errno::EFAULT);
        }
        // pci_core vfio_pci_ioctl_pci_hot_reset.
        let (argsz, flags, count) = (rd32(buf, 0), rd32(buf, 4), rd32(buf, 8));
        if argsz < 12 || flags != 0 {
            return Err(Errno::EINVAL);
        }
        // A zero-length array is for cdev-opened devices only, and only then.
        if (count != 0) == d.bound.is_some() {
            return Err(Errno::EINVAL);
        }
        if !bus_resettable(d.addr) {
            return Err(Errno::ENODEV);
        }
        let affected = same_bus(&st, d.addr);
        // vfio_pci_dev_set_resettable: every device on the bus must be a vfio device.
        let all_vfio = affected.iter().all(|a| st.devices.get(a).is_some_and(is_vfio));
        let owned: Box<dyn Fn(&PciAddress) -> bool> = if count > 0 {
            // vfio_pci_ioctl_pci_hot_reset_groups.
            if count as usize > affected.len() {
                return Err(Errno::EINVAL);
            }
            let fds = buf.get(12..12 + 4 * count as usize).ok_or(Errno::EFAULT)?;
            let mut groups = BTreeSet::new();
            for c in fds.chunks_exact(4) {
                let fd = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                match st.kernel.fds.get(&fd) {
                    Some(FdObj::Group(g)) => {
                        groups.insert(*g);
                    }
                    Some(_) => return Err(Errno::EINVAL),
                    // A real descriptor that is not ours is not a vfio group either.
                    None if fd >= 0 && fd_is_open(fd) => return Err(Errno::EINVAL),
                    None => return Err(Errno::EBADF),
                }
            }
            let gids: Vec<Option<u32>> = affected.iter().map(|a| group_of(&st, *a)).collect();
            let aff = affected.clone();
            Box::new(move |a: &PciAddress| {
                aff.iter()
                    .position(|b| b == a)
                    .and_then(|i| gids[i])
                    .is_some_and(|g| groups.contains(&g))
            })
        } else {
            let ictx = d.bound.map(|b| b.0);
            let k = &st.kernel;
            let binds: Vec<(PciAddress, Option<u32>, Option<u32>)> = affected
                .iter()
                .map(|a| (*a, k.devs.get(a).and_then(|s| s.cdev).map(|c| c.0), group_of(&st, *a)))
                .collect();
            Box::new(move |a: &PciAddress| {
                let Some((_, bound, g)) = binds.iter().find(|b| b.0 == *a) else { return false };
                match bound {
                    Some(c) => Some(*c) == ictx,
                    // Unbound: owned when a device of its group is bound to this iommufd.
                    None => binds.iter().any(|b| b.2 == *g && g.is_some() && b.1 == ictx),
                }
            })
        };
        if !all_vfio || !affected.iter().all(&owned) {
            return Err(Errno::EINVAL);
        }
        drop(owned);
        for a in affected {
            reset_device(&mut st, a);
        }
        Ok(())
    }

    fn device_bind_iommufd(
        &self,
        device: &KernelFd,
        bind: &mut vfio_device_bind_iommufd,
    ) -> KResult<()> {
        let mut st = self.enter(KernelOp::DeviceBindIommufd)?;
        let k = &st.kernel;
        let FdObj::Device(d) = lookup(k, device)? else { return Err(Errno::ENOTTY) };
        // device_cdev.c vfio_df_ioctl_bind_iommufd.
        if bind.argsz < 16 || bind.flags & !1 != 0 || bind.iommufd < 0 {
            return Err(Errno::EINVAL);
        }
        // Only for cdev fds, and once.
        if d.group.is_some() || d.bound.is_some() {
            return Err(Errno::EINVAL);
        }
        // vfio_device_block_group: EBUSY while the group is open.
        let g = group_of(&st, d.addr);
        if g.is_some_and(|g| k.groups.get(&g).is_some_and(|g| g.opened || g.device_fds > 0)) {
            return Err(Errno::EBUSY);
        }
        // iommufd_ctx_from_fd: EBADF for a bad fd, EBADFD for a non-iommufd file.
        let ictx = match k.fds.get(&bind.iommufd) {
            Some(FdObj::Iommufd(c)) => *c,
            Some(_) => return Err(Errno::EBADFD),
            None if bind.iommufd >= 0 && fd_is_open(bind.iommufd) => return Err(Errno::EBADFD),
            None => return Err(Errno::EBADF),
        };
        // vfio_df_open: a cdev device opens once (EINVAL if already open).
        if k.devs.get(&d.addr).is_some_and(|s| s.open_count > 0) {
            return Err(Errno::EINVAL);
        }
        // iommufd_device_bind: EPERM without isolated MSI unless allow_unsafe_interrupts.
        if !k.config.interrupt_remapping && !k.config.allow_unsafe_interrupts {
            return Err(Errno::EPERM);
        }
        let HostState { devices, kernel: k, .. } = &mut *st;
        let c = k.ictxs.get_mut(&ictx).ok_or(Errno::EBADF)?;
        let devid = alloc_id(&c.objs);
        c.objs.insert(devid, IoObj::Device);
        c.bound_devices += 1;
        open_device(k, devices, d.addr);
        k.devs.entry(d.addr).or_default().cdev = Some((ictx, devid));
        if let Some(FdObj::Device(df)) = k.fds.get_mut(&device.raw()) {
            df.bound = Some((ictx, devid));
        }
        bind.out_devid = devid;
        Ok(())
    }

    fn device_attach_iommufd_pt(
        &self,
        device: &KernelFd,
        attach: &mut vfio_device_attach_iommufd_pt,
    ) -> KResult<()> {
        let mut st = self.enter(KernelOp::DeviceAttachIommufdPt)?;
        let k = &mut st.kernel;
        let d = device_fd(k, device)?;
        // vfio_device_fops_unl_ioctl: cdev-only ioctls; a group-opened device passes them
        // to vfio-pci, which does not know them (ENOTTY).
        let Some((ictx, _)) = d.bound else { return Err(Errno::ENOTTY) };
        // device_cdev.c vfio_df_ioctl_attach_pt.
        if attach.argsz < 12 || attach.flags & !1 != 0 {
            return Err(Errno::EINVAL);
        }
        if attach.flags != 0 {
            // PASID attach needs a PASID-capable device.
            return Err(Errno::EOPNOTSUPP);
        }
        let cfg = k.config.clone();
        let dev_state = k.devs.entry(d.addr).or_default();
        let prev = dev_state.attached;
        let c = k.ictxs.get_mut(&ictx).ok_or(Errno::EBADF)?;
        // iommufd device.c: the pt_id names an IOAS (auto domain) or a HWPT.
        let ioas_id = match c.objs.get(&attach.pt_id) {
            Some(IoObj::Ioas(_)) => attach.pt_id,
            Some(IoObj::Hwpt { ioas, .. }) => *ioas,
            Some(IoObj::Device) => return Err(Errno::EINVAL),
            None => return Err(Errno::ENOENT),
        };
        if prev.is_some_and(|p| p.1 == ioas_id) {
            attach.pt_id = prev.map_or(0, |p| p.2);
            return Ok(());
        }
        // Reuse the IOAS's auto domain, or make one: that fills the domain (pins every
        // area, accounted to RLIMIT_MEMLOCK) after reserving what lies outside the usable
        // ranges (EADDRINUSE if an area is there) and raising the IOVA alignment to the
        // IOMMU page size (EADDRINUSE for misaligned areas).
        let existing = match c.objs.get(&ioas_id) {
            Some(IoObj::Ioas(io)) => io.hwpts.iter().next().copied(),
            _ => None,
        };
        let hwpt = if let Some(h) = existing {
            h
        } else {
            let Some(IoObj::Ioas(io)) = c.objs.get(&ioas_id) else { return Err(Errno::ENOENT) };
            let align = 1u64 << cfg.pgsize_bitmap.trailing_zeros().max(12);
            let mut pin = 0u64;
            for (iova, a) in &io.areas {
                let last = iova + (a.len - 1);
                if !cfg.iova_ranges.iter().any(|(s, e)| *iova >= *s && last <= *e) {
                    return Err(Errno::EADDRINUSE);
                }
                if iova % align != 0 || a.len % align != 0 || a.uptr % align != 0 {
                    return Err(Errno::EADDRINUSE);
                }
                check_pinnable(a.uptr, a.len, a.write)?;
                pin += pages_spanned(a.uptr, a.len);
            }
            if !cfg.cap_ipc_lock && k.locked_user + pin > cfg.memlock_limit / PAGE {
                return Err(Errno::ENOMEM);
            }
            let c = k.ictxs.get_mut(&ictx).ok_or(Errno::EBADF)?;
            let h = alloc_id(&c.objs);
            c.objs.insert(h, IoObj::Hwpt { ioas: ioas_id, devices: 0 });
            if let Some(IoObj::Ioas(io)) = c.objs.get_mut(&ioas_id) {
                io.hwpts.insert(h);
                for a in io.areas.values_mut() {
                    a.pinned = pages_spanned(a.uptr, a.len);
                }
            }
            k.locked_user += pin;
            h
        };
        // Replace: leave the previous attachment.
        if prev.is_some() {
            detach_device(k, d.addr);
        }
        if let Some(IoObj::Hwpt { devices, .. }) =
            k.ictxs.get_mut(&ictx).and_then(|c| c.objs.get_mut(&hwpt))
        {
            *devices += 1;
        }
        k.devs.entry(d.addr).or_default().attached = Some((ictx, ioas_id, hwpt));
        attach.pt_id = hwpt;
        Ok(())
    }

    fn device_detach_iommufd_pt(
        &self,
        device: &KernelFd,
        detach: &mut vfio_device_detach_iommufd_pt,
    ) -> KResult<()> {
        let mut st = self.enter(KernelOp::DeviceDetachIommufdPt)?;
        let k = &mut st.kernel;
        let d = device_fd(k, device)?;
        if d.bound.is_none() {
            return Err(Errno::ENOTTY);
        }
        // device_cdev.c vfio_df_ioctl_detach_pt; detaching when not attached is a no-op.
        if detach.argsz < 8 || detach.flags != 0 {
            return Err(Errno::EINVAL);
        }
        detach_device(k, d.addr);
        Ok(())
    }

    fn region_read(&self, device: &KernelFd, offset: u64, buf: &mut [u8]) -> KResult<usize> {
        let mut st = self.enter(KernelOp::RegionRead)?;
        let d = device_fd(&st.kernel, device)?;
        // vfio_pci_core_read: a zero-length read returns 0 before any check.
        if buf.is_empty() {
            return Ok(0);
        }
        region_rw(&mut st, d.addr, offset, Rw::Read(buf))
    }

    fn region_write(&self, device: &KernelFd, offset: u64, buf: &[u8]) -> KResult<usize> {
        let mut st = self.enter(KernelOp::RegionWrite)?;
        let d = device_fd(&st.kernel, device)?;
        if buf.is_empty() {
            return Ok(0);
        }
        region_rw(&mut st, d.addr, offset, Rw::Write(buf))
    }

    fn mmap(&self, device: &KernelFd, offset: u64, len: usize, prot: i32) -> KResult<NonNull<u8>> {
        let mut st = self.enter(KernelOp::Mmap)?;
        let d = device_fd(&st.kernel, device)?;
        // mmap(2): zero length or an unaligned offset.
        if len == 0 || offset % PAGE != 0 {
            return Err(Errno::EINVAL);
        }
        let index = (offset >> OFFSET_SHIFT) as u32;
        let start = offset & ((1 << OFFSET_SHIFT) - 1);
        let HostState { devices, kernel: k, .. } = &mut *st;
        let dev = devices.get(&d.addr).ok_or(Errno::ENODEV)?;
        // pci_core vfio_pci_core_mmap: only BARs with mmap support, inside the BAR.
        if index >= NUM_REGIONS + dev.spec.extra_regions.len() as u32 || index >= ROM_INDEX {
            return Err(Errno::EINVAL);
        }
        let trapped = model_bar(k, d.addr) == Some(index);
        let bar =
            dev.spec.bars[index as usize].filter(|b| b.mmap && b.kind != BarKind::Io && !trapped);
        let Some(bar) = bar else { return Err(Errno::EINVAL) };
        let phys = bar.size.div_ceil(PAGE) * PAGE;
        if start.checked_add(len as u64).is_none_or(|e| e > phys) {
            return Err(Errno::EINVAL);
        }
        // Before 4.16 a mapping may not cover the MSI-X table.
        if !k.config.msix_mappable {
            if let Some((_, toff, tsize)) = msix_table(dev).filter(|t| t.0 == index) {
                if start < toff + tsize && toff < start + len as u64 {
                    return Err(Errno::EINVAL);
                }
            }
        }
        let memfd = bar_fd(k, dev, index)?;
        // SAFETY: a fresh shared mapping of our own memfd at a kernel-chosen address; it
        // aliases no Rust object and lives until munmap through this kernel.
        let p = unsafe {
            libc::mmap64(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, memfd, start as i64)
        };
        if p == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        k.mmaps.insert(p as usize, (d.addr, len));
        NonNull::new(p.cast()).ok_or(Errno::EFAULT)
    }

    unsafe fn munmap(&self, addr: NonNull<u8>, len: usize) -> KResult<()> {
        let mut st = self.enter(KernelOp::Munmap)?;
        let key = addr.as_ptr() as usize;
        match st.kernel.mmaps.get(&key) {
            Some((_, l)) if *l == len => {}
            _ => return Err(Errno::EINVAL),
        }
        // SAFETY: the caller guarantees this is exactly a mapping from our mmap that
        // nothing uses any more (the trait's contract); we checked it is one of ours.
        let r = unsafe { libc::munmap(addr.as_ptr().cast(), len) };
        if r != 0 {
            return Err(Errno::last());
        }
        st.kernel.mmaps.remove(&key);
        Ok(())
    }

    fn ioas_alloc(&self, iommufd: &KernelFd, alloc: &mut iommu_ioas_alloc) -> KResult<()> {
        let mut st = self.enter(KernelOp::IoasAlloc)?;
        let k = &mut st.kernel;
        let id = ictx_of(k, iommufd)?;
        // iommufd ioas.c iommufd_ioas_alloc_ioctl: no flags.
        if alloc.flags != 0 {
            return Err(Errno::EOPNOTSUPP);
        }
        let c = k.ictxs.get_mut(&id).ok_or(Errno::EBADF)?;
        let ioas = alloc_id(&c.objs);
        c.objs.insert(ioas, IoObj::Ioas(Ioas::default()));
        alloc.out_ioas_id = ioas;
        Ok(())
    }

    unsafe fn ioas_map(&self, iommufd: &KernelFd, map: &mut iommu_ioas_map) -> KResult<()> {
        let mut st = self.enter(KernelOp::IoasMap)?;
        let k = &mut st.kernel;
        let id = ictx_of(k, iommufd)?;
        let cfg = k.config.clone();
        // ioas.c iommufd_ioas_map.
        let known = IOAS_MAP_FIXED_IOVA | IOAS_MAP_WRITEABLE | IOAS_MAP_READABLE;
        if map.flags & !known != 0 || map.__reserved != 0 {
            return Err(Errno::EOPNOTSUPP);
        }
        if map.iova == u64::MAX || map.length == u64::MAX {
            return Err(Errno::EOVERFLOW);
        }
        if map.flags & (IOAS_MAP_WRITEABLE | IOAS_MAP_READABLE) == 0 {
            return Err(Errno::EINVAL);
        }
        let c = k.ictxs.get_mut(&id).ok_or(Errno::EBADF)?;
        let Some(IoObj::Ioas(io)) = c.objs.get_mut(&map.ioas_id) else { return Err(Errno::ENOENT) };
        // io_pagetable.c iopt_alloc_pages / iopt_alloc_user_pages.
        if map.length == 0 || map.length > u64::MAX - PAGE {
            return Err(Errno::EINVAL);
        }
        map.user_va.checked_add(map.length).ok_or(Errno::EOVERFLOW)?;
        // iopt_alloc_area_pages: length aligned to the IOVA alignment (1 until a domain
        // is attached, then the smallest IOMMU page).
        let attached = !io.hwpts.is_empty();
        let align = if attached { 1u64 << cfg.pgsize_bitmap.trailing_zeros().max(12) } else { 1 };
        if map.length % align != 0 {
            return Err(Errno::EINVAL);
        }
        let usable: Vec<(u64, u64)> =
            if attached { cfg.iova_ranges.clone() } else { vec![(0, u64::MAX)] };
        let iova = if map.flags & IOAS_MAP_FIXED_IOVA != 0 {
            // iopt_check_iova: alignment, wrap, reserved, overlap.
            if map.iova % align != 0 {
                return Err(Errno::EINVAL);
            }
            let last = map.iova.checked_add(map.length - 1).ok_or(Errno::EOVERFLOW)?;
            if !usable.iter().any(|(s, e)| map.iova >= *s && last <= *e) {
                return Err(Errno::EINVAL);
            }
            if io.areas.range(..=last).next_back().is_some_and(|(i, a)| i + (a.len - 1) >= map.iova)
            {
                return Err(Errno::EEXIST);
            }
            map.iova
        } else {
            alloc_iova(io, &usable, map.user_va, map.length, align)?
        };
        // iopt_insert_area: the page offset must respect the alignment.
        if (map.user_va % PAGE) % align != 0 {
            return Err(Errno::EINVAL);
        }
        // With a domain attached the pages are pinned now (EFAULT / ENOMEM).
        let mut pinned = 0;
        if attached {
            check_pinnable(map.user_va, map.length, map.flags & IOAS_MAP_WRITEABLE != 0)?;
            pinned = pages_spanned(map.user_va, map.length);
            if !cfg.cap_ipc_lock && k.locked_user + pinned > cfg.memlock_limit / PAGE {
                return Err(Errno::ENOMEM);
            }
        }
        let c = k.ictxs.get_mut(&id).ok_or(Errno::EBADF)?;
        let Some(IoObj::Ioas(io)) = c.objs.get_mut(&map.ioas_id) else { return Err(Errno::ENOENT) };
        io.areas.insert(
            iova,
            Area {
                len: map.length,
                uptr: map.user_va,
                read: map.flags & IOAS_MAP_READABLE != 0,
                write: map.flags & IOAS_MAP_WRITEABLE != 0,
                pinned,
            },
        );
        k.locked_user += pinned;
        map.iova = iova;
        Ok(())
    }

    fn ioas_unmap(&self, iommufd: &KernelFd, unmap: &mut iommu_ioas_unmap) -> KResult<()> {
        let mut st = self.enter(KernelOp::IoasUnmap)?;
        let k = &mut st.kernel;
        let id = ictx_of(k, iommufd)?;
        let c = k.ictxs.get_mut(&id).ok_or(Errno::EBADF)?;
        let Some(IoObj::Ioas(io)) = c.objs.get_mut(&unmap.ioas_id) else {
            return Err(Errno::ENOENT);
        };
        // ioas.c iommufd_ioas_unmap: iova 0 + length u64::MAX unmaps all.
        let (start, last) = if unmap.iova == 0 && unmap.length == u64::MAX {
            (0, u64::MAX)
        } else {
            if unmap.iova == u64::MAX || unmap.length == u64::MAX {
                return Err(Errno::EOVERFLOW);
            }
            // iopt_unmap_iova.
            if unmap.length == 0 {
                return Err(Errno::EINVAL);
            }
            (unmap.iova, unmap.iova.checked_add(unmap.length - 1).ok_or(Errno::EOVERFLOW)?)
        };
        // iopt_unmap_iova_range: areas are removed in order; an area only partly inside
        // the range stops the walk with ENOENT (areas before it stay unmapped). A range
        // with nothing mapped is ENOENT too, except for unmap-all (iopt_unmap_all turns
        // that ENOENT into success). Checked in the VM lab on 6.12.
        let unmap_all = unmap.iova == 0 && unmap.length == u64::MAX;
        let mut unmapped = 0u64;
        let mut unpinned = 0u64;
        let mut result = Ok(());
        loop {
            let first = io
                .areas
                .range(..=last)
                .find(|(i, a)| *i + (a.len - 1) >= start)
                .map(|(i, a)| (*i, a.len));
            let Some((i, len)) = first else { break };
            if i < start || i + (len - 1) > last {
                result = Err(Errno::ENOENT);
                break;
            }
            if let Some(a) = io.areas.remove(&i) {
                unmapped += a.len;
                unpinned += a.pinned;
            }
        }
        k.locked_user = k.locked_user.saturating_sub(unpinned);
        if unmapped == 0 && result.is_ok() && !unmap_all {
            result = Err(Errno::ENOENT);
        }
        unmap.length = unmapped;
        result
    }

    fn ioas_iova_ranges(&self, iommufd: &KernelFd, buf: &mut [u8]) -> KResult<()> {
        let st = self.enter(KernelOp::IoasIovaRanges)?;
        let k = &st.kernel;
        let id = ictx_of(k, iommufd)?;
        if buf.len() < 32 {
            return Err(Errno::EINVAL);
        }
        // ioas.c iommufd_ioas_iova_ranges.
        if rd32(buf, 12) != 0 {
            return Err(Errno::EOPNOTSUPP);
        }
        let ioas_id = rd32(buf, 4);
        let c = k.ictxs.get(&id).ok_or(Errno::EBADF)?;
        let Some(IoObj::Ioas(io)) = c.objs.get(&ioas_id) else { return Err(Errno::ENOENT) };
        let attached = !io.hwpts.is_empty();
        let ranges: Vec<(u64, u64)> =
            if attached { k.config.iova_ranges.clone() } else { vec![(0, u64::MAX)] };
        let align =
            if attached { 1u64 << k.config.pgsize_bitmap.trailing_zeros().max(12) } else { 1 };
        let room = ((buf.len() - 32) / 16) as u32;
        let max = rd32(buf, 8).min(room);
        for (i, (s, e)) in ranges.iter().enumerate().take(max as usize) {
            wr64(buf, 32 + 16 * i, *s);
            wr64(buf, 40 + 16 * i, *e);
        }
        wr32(buf, 8, ranges.len() as u32);
        wr64(buf, 24, align);
        if ranges.len() as u32 > max {
            return Err(Errno::EMSGSIZE);
        }
        Ok(())
    }

    fn iommufd_destroy(&self, iommufd: &KernelFd, id: u32) -> KResult<()> {
        let mut st = self.enter(KernelOp::IommufdDestroy)?;
        let k = &mut st.kernel;
        let cid = ictx_of(k, iommufd)?;
        let c = k.ictxs.get_mut(&cid).ok_or(Errno::EBADF)?;
        // main.c iommufd_destroy: ENOENT for an unknown id, EBUSY while referenced.
        let busy = match c.objs.get(&id) {
            None => return Err(Errno::ENOENT),
            Some(IoObj::Ioas(io)) => !io.hwpts.is_empty(),
            Some(IoObj::Hwpt { devices, .. }) => *devices > 0,
            Some(IoObj::Device) => true,
        };
        if busy {
            return Err(Errno::EBUSY);
        }
        let unpin = match c.objs.remove(&id) {
            Some(IoObj::Ioas(io)) => io.areas.values().map(|a| a.pinned).sum(),
            _ => 0,
        };
        k.locked_user = k.locked_user.saturating_sub(unpin);
        Ok(())
    }

    fn eventfd(&self) -> KResult<vmm_sys_util::eventfd::EventFd> {
        let _st = self.enter(KernelOp::EventFd)?;
        vmm_sys_util::eventfd::EventFd::new(libc::EFD_CLOEXEC)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
    }

    fn memlock_limit(&self) -> KResult<u64> {
        let st = self.enter(KernelOp::MemlockLimit)?;
        Ok(st.kernel.config.memlock_limit)
    }
}

fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only queries the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Lowest free iommufd object id (the ictx xarray allocates from 1).
fn alloc_id(objs: &BTreeMap<u32, IoObj>) -> u32 {
    (1..).find(|i| !objs.contains_key(i)).unwrap_or(u32::MAX)
}

/// io_pagetable.c iopt_alloc_iova: the lowest hole of the usable ranges (never IOVA 0:
/// the search runs from PAGE_SIZE to ULONG_MAX - PAGE_SIZE) aligned to
/// min(roundup_pow_of_two(length), lowest set bit of user_va, 2 MiB), keeping the user
/// address's page offset.
fn alloc_iova(
    io: &Ioas,
    usable: &[(u64, u64)],
    uptr: u64,
    length: u64,
    min_align: u64,
) -> KResult<u64> {
    if length == 0 || length >= u64::MAX / 2 {
        return Err(Errno::EOVERFLOW);
    }
    let mut align = length.next_power_of_two();
    if uptr != 0 {
        align = align.min(1u64 << uptr.trailing_zeros());
    }
    align = align.min(2 << 20);
    if align < min_align {
        return Err(Errno::EINVAL);
    }
    let page_offset = uptr % PAGE;
    for (s, e) in usable {
        let lo = (*s).max(PAGE);
        let hi = (*e).min(u64::MAX - PAGE);
        if lo > hi {
            continue;
        }
        // Holes between existing areas inside [lo, hi].
        let mut cursor = lo;
        let mut holes = Vec::new();
        for (i, a) in io.areas.range(..=hi) {
            let alast = i + (a.len - 1);
            if alast < lo {
                continue;
            }
            if *i > cursor {
                holes.push((cursor, i - 1));
            }
            cursor = cursor.max(alast.saturating_add(1));
        }
        if cursor <= hi {
            holes.push((cursor, hi));
        }
        for (hs, he) in holes {
            let Some(aligned) = hs.checked_add(align - 1).map(|v| (v & !(align - 1)) | page_offset)
            else {
                continue;
            };
            if aligned >= hs && aligned <= he && he - aligned >= length - 1 {
                return Ok(aligned);
            }
        }
    }
    Err(Errno::ENOSPC)
}

/// Detaches a device from its IOAS; the auto domain goes when its last device leaves,
/// unpinning the IOAS's pages.
fn detach_device(k: &mut KernelState, addr: PciAddress) {
    let Some((ictx, ioas, hwpt)) = k.devs.get_mut(&addr).and_then(|d| d.attached.take()) else {
        return;
    };
    let Some(c) = k.ictxs.get_mut(&ictx) else { return };
    let mut gone = false;
    if let Some(IoObj::Hwpt { devices, .. }) = c.objs.get_mut(&hwpt) {
        *devices = devices.saturating_sub(1);
        gone = *devices == 0;
    }
    if gone {
        c.objs.remove(&hwpt);
        let mut unpin = 0;
        if let Some(IoObj::Ioas(io)) = c.objs.get_mut(&ioas) {
            io.hwpts.remove(&hwpt);
            if io.hwpts.is_empty() {
                for a in io.areas.values_mut() {
                    unpin += a.pinned;
                    a.pinned = 0;
                }
            }
        }
        k.locked_user = k.locked_user.saturating_sub(unpin);
    }
}

/// Drops an iommufd context once its fd is closed and no device is bound to it.
fn gc_ictx(k: &mut KernelState, id: u32) {
    let dead = k.ictxs.get(&id).is_some_and(|c| !c.fd_open && c.bound_devices == 0);
    if dead {
        if let Some(c) = k.ictxs.remove(&id) {
            let unpin: u64 = c
                .objs
                .values()
                .map(|o| match o {
                    IoObj::Ioas(io) => io.areas.values().map(|a| a.pinned).sum(),
                    _ => 0,
                })
                .sum();
            k.locked_user = k.locked_user.saturating_sub(unpin);
        }
    }
}

/// First open of a device (`vfio_pci_core_enable`): pci_enable_device turns on memory
/// and I/O decoding for the BARs present, and the config is saved.
fn open_device(
    k: &mut KernelState,
    devices: &mut BTreeMap<PciAddress, SimDevice>,
    addr: PciAddress,
) {
    let ds = k.devs.entry(addr).or_default();
    ds.open_count += 1;
    if ds.open_count == 1 {
        if let Some(dev) = devices.get_mut(&addr) {
            let mut cmd = 0u8;
            for b in dev.spec.bars.iter().flatten() {
                cmd |= if b.kind == BarKind::Io { 1 } else { 2 };
            }
            if dev.spec.rom.is_some() {
                cmd |= 2;
            }
            dev.config[4] |= cmd;
            ds.saved_config = Some(dev.config.clone());
        }
        ds.irq = IrqState::default();
    }
}

/// Closes a device file; the last close disables interrupts, unbinds from iommufd and
/// restores the saved config (`vfio_pci_core_disable`).
fn close_device(k: &mut KernelState, devices: &mut BTreeMap<PciAddress, SimDevice>, d: DevFd) {
    if let Some(gid) = d.group {
        if let Some(g) = k.groups.get_mut(&gid) {
            g.device_fds = g.device_fds.saturating_sub(1);
        }
    }
    if let Some((ictx, devid)) = d.bound {
        detach_device(k, d.addr);
        if let Some(c) = k.ictxs.get_mut(&ictx) {
            c.objs.remove(&devid);
            c.bound_devices = c.bound_devices.saturating_sub(1);
        }
        if let Some(ds) = k.devs.get_mut(&d.addr) {
            ds.cdev = None;
        }
        gc_ictx(k, ictx);
    }
    if let Some(ds) = k.devs.get_mut(&d.addr) {
        ds.open_count = ds.open_count.saturating_sub(1);
        if ds.open_count == 0 {
            ds.irq = IrqState::default();
            // vfio_pci_core_disable: a device whose reset works is reset on the way out,
            // then the config saved at open is restored.
            if devices.get(&d.addr).is_some_and(|dev| dev.spec.flr) {
                ds.resets += 1;
                if let Some((_, m)) = k.models.get_mut(&d.addr) {
                    m.reset();
                }
            }
            if let (Some(saved), Some(dev)) = (ds.saved_config.take(), devices.get_mut(&d.addr)) {
                dev.config = saved;
            }
        }
    }
    if let Some(gid) = d.group {
        maybe_release_group(k, gid);
    }
}

/// The memfd backing a BAR (created on first use; device memory outlives opens).
fn bar_fd(k: &mut KernelState, dev: &SimDevice, index: u32) -> KResult<RawFd> {
    let key = (dev.spec.address, index);
    if let Some(fd) = k.bars.get(&key) {
        return Ok(fd.as_raw_fd());
    }
    let size = bar_len(dev, index).div_ceil(PAGE) * PAGE;
    let name = c"vfio-mock-bar";
    // SAFETY: memfd_create with a valid C string; the result is checked.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `fd` is a fresh descriptor that we now own.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ftruncate on our own memfd.
    if unsafe { libc::ftruncate(fd, size as i64) } != 0 {
        return Err(Errno::last());
    }
    k.bars.insert(key, owned);
    Ok(fd)
}

/// A VFIO capability chain under construction (`vfio_info_cap_add`): each capability
/// padded to 8 bytes, `next` offsets absolute from the start of the info struct.
#[derive(Default)]
struct Caps {
    buf: Vec<u8>,
    starts: Vec<usize>,
}

impl Caps {
    fn add(&mut self, id: u16, version: u16, body: &[u8]) {
        let start = self.buf.len();
        let size = (8 + body.len()).div_ceil(8) * 8;
        self.buf.resize(start + size, 0);
        self.buf[start..start + 2].copy_from_slice(&id.to_le_bytes());
        self.buf[start + 2..start + 4].copy_from_slice(&version.to_le_bytes());
        self.buf[start + 8..start + 8 + body.len()].copy_from_slice(body);
        self.starts.push(start);
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The chain shifted to sit after an info struct of `shift` bytes.
    fn shifted(&self, shift: usize) -> Vec<u8> {
        let mut b = self.buf.clone();
        for w in self.starts.windows(2) {
            wr32(&mut b, w[0] + 4, (w[1] + shift) as u32);
        }
        b
    }
}

/// Writes an info struct (`info`, its kernel size) and its capability chain back the way
/// vfio does: the chain only when `argsz` has room for all of it (else `argsz` raised to
/// the size needed and `cap_offset` 0), then `min(argsz, sizeof(info))` bytes of the
/// struct. `cap_at` is the offset of `cap_offset` in the struct.
fn finish_info(
    buf: &mut [u8],
    info: &mut [u8],
    argsz: u32,
    caps: &Caps,
    cap_at: usize,
) -> KResult<()> {
    let isz = info.len();
    if !caps.is_empty() {
        let need = isz + caps.buf.len();
        if (argsz as usize) < need {
            wr32(info, 0, need as u32);
            wr32(info, cap_at, 0);
        } else {
            let chain = caps.shifted(isz);
            buf.get_mut(isz..need).ok_or(Errno::EFAULT)?.copy_from_slice(&chain);
            wr32(info, cap_at, isz as u32);
        }
    }
    let n = (argsz as usize).min(isz);
    buf.get_mut(..n).ok_or(Errno::EFAULT)?.copy_from_slice(&info[..n]);
    Ok(())
}

enum Rw<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
}

/// pread/pwrite of a region (pci_core vfio_pci_rw).
fn region_rw(st: &mut HostState, addr: PciAddress, offset: u64, rw: Rw<'_>) -> KResult<usize> {
    let index = (offset >> OFFSET_SHIFT) as u32;
    let pos = offset & ((1 << OFFSET_SHIFT) - 1);
    if model_bar(&st.kernel, addr) == Some(index) {
        // A model-backed BAR: same bounds and memory-decode rules, then the model.
        let dev = st.devices.get(&addr).ok_or(Errno::ENODEV)?;
        let size = bar_len(dev, index);
        if pos >= size {
            return Err(Errno::EINVAL);
        }
        let io = dev.spec.bars[index as usize].is_some_and(|b| b.kind == BarKind::Io);
        if !io && dev.config[4] & 2 == 0 {
            return Err(Errno::EIO);
        }
        let room = (size - pos) as usize;
        return Ok(match rw {
            Rw::Read(buf) => {
                let n = buf.len().min(room);
                with_model(st, addr, |m, ctx| m.read(ctx, pos, &mut buf[..n]));
                n
            }
            Rw::Write(buf) => {
                let n = buf.len().min(room);
                with_model(st, addr, |m, ctx| m.write(ctx, pos, &buf[..n]));
                n
            }
        });
    }
    let HostState { devices, kernel: k, .. } = st;
    let dev = devices.get_mut(&addr).ok_or(Errno::ENODEV)?;
    let nregions = NUM_REGIONS + dev.spec.extra_regions.len() as u32;
    if index >= nregions {
        return Err(Errno::EINVAL);
    }
    match index {
        CONFIG_INDEX => {
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
                k.devs.entry(addr).or_default().resets += 1;
                if let Some((_, m)) = k.models.get_mut(&addr) {
                    m.reset();
                }
            }
            Ok(n)
        }
        ROM_INDEX => {
            // vfio_pci_rw: the ROM is read-only; reads past the image return 0xff.
            let Rw::Read(buf) = rw else { return Err(Errno::EINVAL) };
            let size = rom_bar_size(dev);
            if pos >= size {
                return Err(Errno::EINVAL);
            }
            // pci_map_rom fails on an invalid image (ENOMEM from vfio_pci_bar_rw); bytes
            // past the images (pci_get_rom_size) read as 0xff.
            let valid = rom_image_len(dev);
            if valid == 0 {
                return Err(Errno::ENOMEM);
            }
            let n = buf.len().min((size - pos) as usize);
            let rom = dev.spec.rom.as_deref().unwrap_or(&[]);
            for (i, b) in buf[..n].iter_mut().enumerate() {
                let o = pos as usize + i;
                *b = if o < valid { rom.get(o).copied().unwrap_or(0xff) } else { 0xff };
            }
            Ok(n)
        }
        VGA_INDEX => {
            if !(k.config.vga && dev.spec.class >> 8 == 0x0300) {
                return Err(Errno::EINVAL);
            }
            // Legacy VGA ranges: reads float high, writes are dropped.
            match rw {
                Rw::Read(buf) => {
                    buf.fill(0xff);
                    Ok(buf.len())
                }
                Rw::Write(buf) => Ok(buf.len()),
            }
        }
        0..=5 => {
            // pci_rdwr vfio_pci_bar_rw.
            let size = bar_len(dev, index);
            if size == 0 || pos >= size {
                return Err(Errno::EINVAL);
            }
            let io = dev.spec.bars[index as usize].is_some_and(|b| b.kind == BarKind::Io);
            // Memory BAR access needs memory decode on (EIO otherwise).
            if !io && dev.config[4] & 2 == 0 {
                return Err(Errno::EIO);
            }
            let fd = bar_fd(k, dev, index)?;
            // The MSI-X table is excluded: reads give 0xff, writes are dropped.
            let excl = msix_table(dev).filter(|t| t.0 == index).map(|t| (t.1, t.1 + t.2));
            match rw {
                Rw::Read(buf) => {
                    let n = buf.len().min((size - pos) as usize);
                    // SAFETY: reads at most `n` bytes into `buf` from our memfd.
                    let r = unsafe { libc::pread64(fd, buf.as_mut_ptr().cast(), n, pos as i64) };
                    if r < 0 {
                        return Err(Errno::last());
                    }
                    let r = r as usize;
                    buf[r..n].fill(0);
                    if let Some((xs, xe)) = excl {
                        for (i, b) in buf[..n].iter_mut().enumerate() {
                            let o = pos + i as u64;
                            if o >= xs && o < xe {
                                *b = 0xff;
                            }
                        }
                    }
                    Ok(n)
                }
                Rw::Write(buf) => {
                    let n = buf.len().min((size - pos) as usize);
                    let mut i = 0;
                    while i < n {
                        let o = pos + i as u64;
                        let in_excl = excl.is_some_and(|(xs, xe)| o >= xs && o < xe);
                        let mut j = i + 1;
                        while j < n
                            && excl.is_some_and(|(xs, xe)| {
                                let p = pos + j as u64;
                                (p >= xs && p < xe) == in_excl
                            })
                        {
                            j += 1;
                        }
                        if excl.is_none() {
                            j = n;
                        }
                        if !in_excl {
                            // SAFETY: writes `j - i` bytes from `buf` to our memfd.
                            let r = unsafe {
                                libc::pwrite64(fd, buf[i..j].as_ptr().cast(), j - i, o as i64)
                            };
                            if r < 0 {
                                return Err(Errno::last());
                            }
                        }
                        i = j;
                    }
                    Ok(n)
                }
            }
        }
        i => {
            let r = dev.spec.extra_regions[(i - NUM_REGIONS) as usize].clone();
            let data = k.extra.entry((addr, i)).or_insert_with(|| {
                let mut v = r.data.clone();
                v.resize(r.size as usize, 0);
                v
            });
            if pos >= r.size {
                return Err(Errno::EINVAL);
            }
            let p = pos as usize;
            match rw {
                Rw::Read(buf) => {
                    let n = buf.len().min(data.len() - p);
                    buf[..n].copy_from_slice(&data[p..p + n]);
                    Ok(n)
                }
                Rw::Write(buf) => {
                    if !r.writable {
                        return Err(Errno::EINVAL);
                    }
                    let n = buf.len().min(data.len() - p);
                    data[p..p + n].copy_from_slice(&buf[..n]);
                    Ok(n)
                }
            }
        }
    }
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
                BarKind::Mem32 => wr32(&mut m, off, (sizemask as u32) & !0xf),
                BarKind::Mem64 => {
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

/// pci_intrs vfio_pci_set_irqs_ioctl and its handlers.
#[allow(clippy::too_many_arguments)]
fn set_irqs(
    irq: &mut IrqState,
    index: u32,
    action: u32,
    dtype: u32,
    start: u32,
    count: u32,
    data: &[u8],
    pcie: bool,
    dyn_msix: bool,
) -> KResult<()> {
    let fd_at = |i: usize| {
        i32::from_le_bytes([data[4 * i], data[4 * i + 1], data[4 * i + 2], data[4 * i + 3]])
    };
    match (index, action) {
        (INTX, VFIO_IRQ_SET_ACTION_MASK) => {
            // vfio_pci_set_intx_mask.
            if irq.kind != Some(INTX) || start != 0 || count != 1 {
                return Err(Errno::EINVAL);
            }
            match dtype {
                VFIO_IRQ_SET_DATA_NONE => irq.intx_masked = true,
                VFIO_IRQ_SET_DATA_BOOL => {
                    if data[0] != 0 {
                        irq.intx_masked = true;
                    }
                }
                _ => return Err(Errno::ENOTTY),
            }
            Ok(())
        }
        (INTX, VFIO_IRQ_SET_ACTION_UNMASK) => {
            // vfio_pci_set_intx_unmask.
            if irq.kind != Some(INTX) || start != 0 || count != 1 {
                return Err(Errno::EINVAL);
            }
            match dtype {
                VFIO_IRQ_SET_DATA_NONE => intx_unmask(irq),
                VFIO_IRQ_SET_DATA_BOOL => {
                    if data[0] != 0 {
                        intx_unmask(irq);
                    }
                }
                _ => {
                    let fd = fd_at(0);
                    irq.intx_unmask_fd = if fd >= 0 { Some(dup_eventfd(fd)?) } else { None };
                }
            }
            Ok(())
        }
        (INTX, VFIO_IRQ_SET_ACTION_TRIGGER) => {
            // vfio_pci_set_intx_trigger.
            if irq.kind == Some(INTX) && count == 0 && dtype == VFIO_IRQ_SET_DATA_NONE {
                irq.kind = None;
                irq.intx_trigger = None;
                irq.intx_unmask_fd = None;
                irq.intx_masked = false;
                irq.intx_pending = false;
                return Ok(());
            }
            if !(irq.kind == Some(INTX) || irq.kind.is_none()) || start != 0 || count != 1 {
                return Err(Errno::EINVAL);
            }
            if dtype == VFIO_IRQ_SET_DATA_EVENTFD {
                let fd = fd_at(0);
                let trigger = if fd >= 0 { Some(dup_eventfd(fd)?) } else { None };
                if irq.kind.is_none() {
                    irq.kind = Some(INTX);
                    irq.intx_masked = false;
                    irq.intx_pending = false;
                }
                irq.intx_trigger = trigger;
                return Ok(());
            }
            if irq.kind != Some(INTX) {
                return Err(Errno::EINVAL);
            }
            // Loopback: signal without masking (vfio_send_intx_eventfd).
            if dtype == VFIO_IRQ_SET_DATA_NONE || data[0] != 0 {
                if let Some(t) = &irq.intx_trigger {
                    signal(t);
                }
            }
            Ok(())
        }
        (MSI | MSIX, VFIO_IRQ_SET_ACTION_TRIGGER) => {
            // vfio_pci_set_msi_trigger.
            if irq.kind == Some(index) && count == 0 && dtype == VFIO_IRQ_SET_DATA_NONE {
                irq.kind = None;
                irq.vectors.clear();
                irq.nvec = 0;
                return Ok(());
            }
            if !(irq.kind == Some(index) || irq.kind.is_none()) {
                return Err(Errno::EINVAL);
            }
            if dtype == VFIO_IRQ_SET_DATA_EVENTFD {
                let enabling = irq.kind.is_none();
                // vfio_msi_enable -> pci_alloc_irq_vectors(1, start + count): ERANGE for 0.
                if enabling && start + count == 0 {
                    return Err(Errno::ERANGE);
                }
                if enabling {
                    irq.kind = Some(index);
                    irq.nvec = start + count;
                }
                // vfio_msi_set_block: vectors beyond those allocated need dynamic MSI-X.
                let mut done: Vec<u32> = Vec::new();
                let mut res = Ok(());
                for i in 0..count {
                    let v = start + i;
                    let fd = fd_at(i as usize);
                    // vfio_msi_set_vector_signal: fd -1 only tears down; a new vector past
                    // those allocated needs dynamic MSI-X (pci_irq_vector: EINVAL).
                    if fd >= 0 && v >= irq.nvec {
                        if index == MSIX && dyn_msix {
                            irq.nvec = v + 1;
                        } else {
                            res = Err(Errno::EINVAL);
                            break;
                        }
                    }
                    irq.vectors.remove(&v);
                    if fd >= 0 {
                        match dup_eventfd(fd) {
                            Ok(o) => {
                                irq.vectors.insert(v, o);
                            }
                            Err(e) => {
                                res = Err(e);
                                break;
                            }
                        }
                    }
                    done.push(v);
                }
                if res.is_err() {
                    for v in done {
                        irq.vectors.remove(&v);
                    }
                    if enabling {
                        irq.kind = None;
                        irq.nvec = 0;
                        irq.vectors.clear();
                    }
                }
                return res;
            }
            if irq.kind != Some(index) {
                return Err(Errno::EINVAL);
            }
            for i in 0..count {
                let fire = dtype == VFIO_IRQ_SET_DATA_NONE || data[i as usize] != 0;
                if fire {
                    if let Some(t) = irq.vectors.get(&(start + i)) {
                        signal(t);
                    }
                }
            }
            Ok(())
        }
        (ERR, VFIO_IRQ_SET_ACTION_TRIGGER) | (REQ, VFIO_IRQ_SET_ACTION_TRIGGER) => {
            if index == ERR && !pcie {
                return Err(Errno::ENOTTY);
            }
            // vfio_pci_set_err_trigger / req_trigger -> vfio_pci_set_ctx_trigger_single.
            if start != 0 || count > 1 {
                return Err(Errno::EINVAL);
            }
            let slot = if index == ERR { &mut irq.err_trigger } else { &mut irq.req_trigger };
            match dtype {
                VFIO_IRQ_SET_DATA_NONE => {
                    if slot.is_none() {
                        return Err(Errno::EINVAL);
                    }
                    if count > 0 {
                        if let Some(t) = slot {
                            signal(t);
                        }
                    } else {
                        *slot = None;
                    }
                    Ok(())
                }
                VFIO_IRQ_SET_DATA_BOOL => {
                    if count == 0 {
                        return Err(Errno::EINVAL);
                    }
                    if data[0] != 0 {
                        if let Some(t) = slot {
                            signal(t);
                        }
                    }
                    Ok(())
                }
                _ => {
                    if count == 0 {
                        return Err(Errno::EINVAL);
                    }
                    let fd = fd_at(0);
                    if fd == -1 {
                        *slot = None;
                    } else if fd >= 0 {
                        *slot = Some(dup_eventfd(fd)?);
                    }
                    Ok(())
                }
            }
        }
        // MSI/MSI-X masking and anything else: no handler (ENOTTY).
        _ => Err(Errno::ENOTTY),
    }
}
