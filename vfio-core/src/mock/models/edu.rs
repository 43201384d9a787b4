//! QEMU's `edu` educational device behind BAR0 (register map in QEMU's
//! `hw/misc/edu.c` and docs/specs/edu.rst).
//!
//! DMA runs at once when started (QEMU runs it from a timer) through the mock IOMMU; an
//! IOVA that is not mapped makes the transfer fault (no data moves) but the completion
//! interrupt is still raised, as on QEMU with an IOMMU.

use super::super::kernel::{DeviceModel, ModelCtx};

const IDENT: u32 = 0x0100_00ed;
const STATUS_COMPUTING: u32 = 0x01;
const STATUS_IRQFACT: u32 = 0x80;
const DMA_RUN: u64 = 0x1;
const DMA_DIR_FROM_DEVICE: u64 = 0x2;
const DMA_IRQ: u64 = 0x4;
const DMA_START: u64 = 0x40000;
const DMA_SIZE: u64 = 4096;
const FACT_IRQ: u32 = 0x001;
const DMA_DONE_IRQ: u32 = 0x100;

/// The `edu` device's registers and its 4 KiB DMA buffer.
#[derive(Debug, Clone)]
pub struct EduModel {
    liveness: u32,
    fact: u32,
    status: u32,
    irq_status: u32,
    dma_src: u64,
    dma_dst: u64,
    dma_cnt: u64,
    dma_cmd: u64,
    dma_mask: u64,
    buffer: Vec<u8>,
    faults: u64,
}

impl Default for EduModel {
    fn default() -> Self {
        EduModel::new()
    }
}

impl EduModel {
    /// A freshly reset edu with QEMU's default 28-bit DMA mask.
    pub fn new() -> Self {
        EduModel {
            liveness: 0,
            fact: 0,
            status: 0,
            irq_status: 0,
            dma_src: 0,
            dma_dst: 0,
            dma_cnt: 0,
            dma_cmd: 0,
            dma_mask: (1 << 28) - 1,
            buffer: vec![0; DMA_SIZE as usize],
            faults: 0,
        }
    }

    /// The device's DMA buffer (device address 0x40000..0x41000).
    pub fn buffer(&self) -> &[u8] {
        &self.buffer
    }

    /// DMA transfers that hit an IOMMU fault.
    pub fn dma_faults(&self) -> u64 {
        self.faults
    }

    fn raise(&mut self, ctx: &mut ModelCtx<'_>, bits: u32) {
        self.irq_status |= bits;
        if self.irq_status != 0 {
            ctx.raise_interrupt();
        }
    }

    fn run_dma(&mut self, ctx: &mut ModelCtx<'_>) {
        let cnt = self.dma_cnt;
        let inside = |a: u64| {
            a >= DMA_START && a.checked_add(cnt).is_some_and(|e| e <= DMA_START + DMA_SIZE)
        };
        if self.dma_cmd & DMA_DIR_FROM_DEVICE != 0 {
            // Device buffer -> RAM.
            if inside(self.dma_src) {
                let off = (self.dma_src - DMA_START) as usize;
                let data = self.buffer[off..off + cnt as usize].to_vec();
                if ctx.dma_write(self.dma_dst & self.dma_mask, &data).is_err() {
                    self.faults += 1;
                }
            }
        } else if inside(self.dma_dst) {
            // RAM -> device buffer.
            let off = (self.dma_dst - DMA_START) as usize;
            let mut data = vec![0u8; cnt as usize];
            if ctx.dma_read(self.dma_src & self.dma_mask, &mut data).is_ok() {
                self.buffer[off..off + cnt as usize].copy_from_slice(&data);
            } else {
                self.faults += 1;
            }
        }
        self.dma_cmd &= !DMA_RUN;
        if self.dma_cmd & DMA_IRQ != 0 {
            self.raise(ctx, DMA_DONE_IRQ);
        }
    }
}

impl DeviceModel for EduModel {
    fn read(&mut self, _ctx: &mut ModelCtx<'_>, offset: u64, data: &mut [u8]) {
        // Registers below 0x80 take 4-byte accesses only, from 0x80 on 4 or 8; anything
        // else reads all ones.
        let ok = match offset {
            o if o < 0x80 => data.len() == 4,
            _ => data.len() == 4 || data.len() == 8,
        };
        let v: u64 = if !ok {
            u64::MAX
        } else {
            match offset {
                0x00 => IDENT.into(),
                0x04 => self.liveness.into(),
                0x08 => self.fact.into(),
                0x20 => self.status.into(),
                0x24 => self.irq_status.into(),
                0x80 => self.dma_src,
                0x88 => self.dma_dst,
                0x90 => self.dma_cnt,
                0x98 => self.dma_cmd,
                _ => u64::MAX,
            }
        };
        let bytes = v.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(i).copied().unwrap_or(0xff);
        }
    }

    fn write(&mut self, ctx: &mut ModelCtx<'_>, offset: u64, data: &[u8]) {
        let ok = match offset {
            o if o < 0x80 => data.len() == 4,
            _ => data.len() == 4 || data.len() == 8,
        };
        if !ok {
            return;
        }
        let mut raw = [0u8; 8];
        raw[..data.len()].copy_from_slice(data);
        let v = u64::from_le_bytes(raw);
        let v32 = v as u32;
        match offset {
            0x04 => self.liveness = !v32,
            0x08 if self.status & STATUS_COMPUTING == 0 => {
                self.status |= STATUS_COMPUTING;
                self.fact = (1..=v32).fold(1u32, |acc, n| acc.wrapping_mul(n));
                self.status &= !STATUS_COMPUTING;
                if self.status & STATUS_IRQFACT != 0 {
                    self.raise(ctx, FACT_IRQ);
                }
            }
            0x20 => {
                if v32 & STATUS_IRQFACT != 0 {
                    self.status |= STATUS_IRQFACT;
                } else {
                    self.status &= !STATUS_IRQFACT;
                }
            }
            0x60 => self.raise(ctx, v32),
            0x64 => self.irq_status &= !v32,
            0x80 => self.dma_src = v,
            0x88 => self.dma_dst = v,
            0x90 => self.dma_cnt = v,
            0x98 if v & DMA_RUN != 0 && self.dma_cmd & DMA_RUN == 0 => {
                self.dma_cmd = v;
                self.run_dma(ctx);
            }
            _ => {}
        }
    }

    fn reset(&mut self) {
        *self = EduModel { dma_mask: self.dma_mask, ..EduModel::new() };
    }
}
