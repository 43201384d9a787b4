//! A userspace driver for QEMU's `edu` test device (1234:11e8), on vfio-core.
//!
//! Register map (QEMU's hw/misc/edu.c): 0x00 ident, 0x04 liveness (reads back the NOT of
//! what was written), 0x08 factorial, 0x20 status (bit 0 computing, bit 7 raise an
//! interrupt when done), 0x24 interrupt status, 0x60 raise, 0x64 acknowledge, 0x80 DMA
//! source, 0x88 DMA destination, 0x90 DMA count, 0x98 DMA command (bit 0 start, bit 1
//! edu-to-RAM, bit 2 interrupt when done). The device's 4 KiB buffer is at 0x40000.

#![allow(dead_code)]

use std::os::fd::AsRawFd;
use std::time::Duration;

use vfio_core::region::{Bar, RegionIndex};
use vfio_core::{Device, DmaBuffer, DmaPool, IrqIndex, Result};
use vmm_sys_util::eventfd::EventFd;

/// edu's registers.
pub mod reg {
    /// Identification: 0xRRrr00ED (major, minor).
    pub const IDENT: u64 = 0x00;
    /// Liveness check.
    pub const LIVENESS: u64 = 0x04;
    /// Factorial.
    pub const FACTORIAL: u64 = 0x08;
    /// Status.
    pub const STATUS: u64 = 0x20;
    /// Interrupt status.
    pub const IRQ_STATUS: u64 = 0x24;
    /// Raise an interrupt.
    pub const IRQ_RAISE: u64 = 0x60;
    /// Acknowledge an interrupt.
    pub const IRQ_ACK: u64 = 0x64;
    /// DMA source address.
    pub const DMA_SRC: u64 = 0x80;
    /// DMA destination address.
    pub const DMA_DST: u64 = 0x88;
    /// DMA byte count.
    pub const DMA_COUNT: u64 = 0x90;
    /// DMA command.
    pub const DMA_CMD: u64 = 0x98;
}

/// The device-side address of edu's DMA buffer.
pub const EDU_BUFFER: u64 = 0x40000;
/// edu masks DMA addresses to 28 bits unless told otherwise.
pub const EDU_DMA_LIMIT: u64 = 1 << 28;
/// Largest DMA this driver issues (QEMU 7.2 refuses a full 4096-byte transfer).
pub const MAX_DMA: u64 = 2048;

/// Waits for an eventfd to be signalled; returns its counter, or `None` on timeout.
pub fn wait_eventfd(fd: &EventFd, timeout: Duration) -> Option<u64> {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `p` is a valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    if n == 1 {
        fd.read().ok()
    } else {
        None
    }
}

/// A driven edu device.
pub struct Edu<'d> {
    /// The VFIO device.
    pub device: &'d Device,
    /// BAR0.
    pub bar: Bar<'d>,
    /// The MSI vector's eventfd, once enabled.
    pub irq: Option<EventFd>,
}

impl<'d> Edu<'d> {
    /// Takes BAR0 and turns on memory decoding and bus mastering.
    pub fn new(device: &'d Device) -> Result<Self> {
        device.enable_bus_master()?;
        Ok(Edu { device, bar: device.bar(RegionIndex::BAR0)?, irq: None })
    }

    /// (major, minor) from the identification register, if it carries edu's signature.
    pub fn identify(&self) -> Result<Option<(u8, u8)>> {
        let id: u32 = self.bar.read(reg::IDENT)?;
        Ok((id & 0xff == 0xed).then_some(((id >> 24) as u8, (id >> 16) as u8)))
    }

    /// Writes a value to the liveness register and checks that its complement comes back.
    pub fn liveness(&self, value: u32) -> Result<bool> {
        self.bar.write(reg::LIVENESS, value)?;
        let back: u32 = self.bar.read(reg::LIVENESS)?;
        Ok(back == !value)
    }

    /// Routes the MSI vector to a new eventfd.
    pub fn enable_msi(&mut self) -> Result<()> {
        let fds = self.device.new_eventfds(1)?;
        self.device.enable_irqs_all(IrqIndex::Msi, 0, &fds)?;
        self.irq = fds.into_iter().next();
        Ok(())
    }

    /// Waits for the interrupt, then acknowledges what the device raised. Returns the
    /// interrupt status read, or `None` on timeout.
    pub fn wait_irq(&self, timeout: Duration) -> Result<Option<u32>> {
        let Some(fd) = &self.irq else { return Ok(None) };
        if wait_eventfd(fd, timeout).is_none() {
            return Ok(None);
        }
        let status: u32 = self.bar.read(reg::IRQ_STATUS)?;
        self.bar.write(reg::IRQ_ACK, status)?;
        Ok(Some(status))
    }

    /// Computes n! on the device, with the completion interrupt on; returns the result
    /// and whether the interrupt arrived.
    pub fn factorial(&self, n: u32, timeout: Duration) -> Result<(u32, bool)> {
        self.bar.write(reg::STATUS, 0x80u32)?;
        self.bar.write(reg::FACTORIAL, n)?;
        let got_irq = self.wait_irq(timeout)?.is_some();
        // Without an interrupt, poll the "computing" bit.
        let deadline = std::time::Instant::now() + timeout;
        while self.bar.read::<u32>(reg::STATUS)? & 1 != 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok((self.bar.read(reg::FACTORIAL)?, got_irq))
    }

    fn dma(&self, src: u64, dst: u64, count: u64, to_ram: bool, timeout: Duration) -> Result<bool> {
        self.bar.write(reg::DMA_SRC, src)?;
        self.bar.write(reg::DMA_DST, dst)?;
        self.bar.write(reg::DMA_COUNT, count)?;
        let cmd: u64 = 1 | if to_ram { 2 } else { 0 } | if self.irq.is_some() { 4 } else { 0 };
        self.bar.write(reg::DMA_CMD, cmd)?;
        let irq = if self.irq.is_some() { self.wait_irq(timeout)?.is_some() } else { false };
        let deadline = std::time::Instant::now() + timeout;
        while self.bar.read::<u64>(reg::DMA_CMD)? & 1 != 0 {
            if std::time::Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(irq || self.irq.is_none())
    }

    /// DMA `count` bytes from RAM (IOVA `src`) into edu's buffer.
    pub fn dma_to_device(&self, src: u64, count: u64, timeout: Duration) -> Result<bool> {
        self.dma(src, EDU_BUFFER, count, false, timeout)
    }

    /// DMA `count` bytes from edu's buffer to RAM (IOVA `dst`).
    pub fn dma_from_device(&self, dst: u64, count: u64, timeout: Duration) -> Result<bool> {
        self.dma(EDU_BUFFER, dst, count, true, timeout)
    }
}

/// A pool for edu: IOVAs kept under the 28-bit DMA mask.
pub fn edu_pool(device: &Device) -> Result<DmaPool> {
    let pool = DmaPool::new(device.address_space())?;
    pool.limit_iova(EDU_DMA_LIMIT);
    Ok(pool)
}

/// Fills a buffer with a recognisable pattern derived from `seed`.
pub fn fill(buf: &DmaBuffer, seed: u8, len: usize) -> Result<Vec<u8>> {
    let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    buf.write(0, &data)?;
    Ok(data)
}
