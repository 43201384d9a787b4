//! What the container and IOAS map calls share, below [`crate::dma`] (which builds on
//! them): the permission of a mapping, the range check, and the hint for a map call's
//! ENOMEM.

use crate::error::{Error, Result};
use crate::kernel::VfioKernel;

/// What a device may do with a DMA mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DmaPerm {
    /// The device may only read the memory (memory-to-device transfers).
    Read,
    /// The device may read and write it.
    ReadWrite,
}

/// The hint for an ENOMEM from a map call: the RLIMIT_MEMLOCK in force.
pub(crate) fn memlock_hint(kernel: &dyn VfioKernel, size: u64) -> String {
    match kernel.memlock_limit() {
        Ok(u64::MAX) => "out of memory pinning pages (RLIMIT_MEMLOCK is unlimited)".to_string(),
        Ok(limit) => format!(
            "pinned memory would pass RLIMIT_MEMLOCK ({} KiB, mapping {} KiB more): \
             raise it with `ulimit -l`, LimitMEMLOCK= in a systemd unit, or limits.conf",
            limit / 1024,
            size / 1024
        ),
        Err(_) => "out of memory pinning pages: check RLIMIT_MEMLOCK (ulimit -l)".to_string(),
    }
}

/// Refuses a DMA range that wraps past 2^64 (`iova + size - 1`, or `vaddr + size - 1`
/// when given) before the kernel sees it. Kernels disagree on the errno (type1 before
/// 6.18 answers EINVAL, iommufd and type1 since 6.18 EOVERFLOW, as the VM lab records);
/// callers get one error on every kernel and in every mode.
#[inline]
pub(crate) fn check_range(iova: u64, vaddr: Option<u64>, size: u64) -> Result<()> {
    let Some(last) = size.checked_sub(1) else { return Ok(()) };
    if iova.checked_add(last).is_none() || vaddr.is_some_and(|v| v.checked_add(last).is_none()) {
        return Err(wrapping(iova, vaddr, size));
    }
    Ok(())
}

#[cold]
fn wrapping(iova: u64, vaddr: Option<u64>, size: u64) -> Error {
    let what = if iova.checked_add(size - 1).is_none() { "iova" } else { "vaddr" };
    Error::Invalid {
        what: "DMA range",
        input: match vaddr {
            Some(v) => format!("iova {iova:#x}, vaddr {v:#x}, size {size:#x}"),
            None => format!("iova {iova:#x}, size {size:#x}"),
        },
        reason: format!("{what} + size wraps past 2^64"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_up_to_the_top_pass_and_wrapping_ones_are_refused() {
        assert!(check_range(u64::MAX - 0xfff, Some(0x1000), 0x1000).is_ok());
        assert!(check_range(0, None, u64::MAX).is_ok());
        assert!(check_range(5, None, 0).is_ok());
        let e = check_range(u64::MAX - 0xfff, Some(0x1000), 0x2000).unwrap_err();
        assert_eq!(e.to_string(), "invalid DMA range \"iova 0xfffffffffffff000, vaddr 0x1000, size 0x2000\": iova + size wraps past 2^64");
        let e = check_range(0x1000, Some(u64::MAX - 0xfff), 0x2000).unwrap_err();
        assert!(e.to_string().ends_with("vaddr + size wraps past 2^64"), "{e}");
    }
}
