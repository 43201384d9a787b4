//! The conventions of vfio's `*_GET_INFO` ioctls: the `argsz` handshake and capability
//! chains (`vfio_info_cap_add`, drivers/vfio/vfio_main.c).

use super::le::{rd32, wr16, wr32, wr64};
use crate::kernel::{Errno, KResult};

/// Reads `argsz` of a variable-size ioctl struct: EFAULT when the buffer cannot hold the
/// `minsz` bytes the kernel copies in, EINVAL when `argsz` is below `minsz`.
pub(super) fn argsz(buf: &[u8], minsz: usize) -> KResult<u32> {
    if buf.len() < minsz {
        return Err(Errno::EFAULT);
    }
    let argsz = rd32(buf, 0);
    if (argsz as usize) < minsz {
        return Err(Errno::EINVAL);
    }
    Ok(argsz)
}

/// A capability body listing `(u64, u64)` pairs after a `u32` count and 4 bytes of
/// padding (type1's IOVA ranges, a region's sparse mmap areas).
pub(super) fn pairs(list: &[(u64, u64)]) -> Vec<u8> {
    let mut b = vec![0u8; 8 + 16 * list.len()];
    wr32(&mut b, 0, list.len() as u32);
    for (i, (x, y)) in list.iter().enumerate() {
        wr64(&mut b, 8 + 16 * i, *x);
        wr64(&mut b, 16 + 16 * i, *y);
    }
    b
}

/// A VFIO capability chain under construction (`vfio_info_cap_add`): each capability
/// padded to 8 bytes, `next` offsets absolute from the start of the info struct.
#[derive(Default)]
pub(super) struct Caps {
    buf: Vec<u8>,
    starts: Vec<usize>,
}

impl Caps {
    pub(super) fn add(&mut self, id: u16, version: u16, body: &[u8]) {
        let start = self.buf.len();
        let size = (8 + body.len()).div_ceil(8) * 8;
        self.buf.resize(start + size, 0);
        wr16(&mut self.buf, start, id);
        wr16(&mut self.buf, start + 2, version);
        self.buf[start + 8..start + 8 + body.len()].copy_from_slice(body);
        self.starts.push(start);
    }

    pub(super) fn is_empty(&self) -> bool {
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
pub(super) fn finish_info(
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
