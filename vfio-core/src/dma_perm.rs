//! What the container and IOAS map calls share, below [`crate::dma`] (which builds on
//! them): the permission of a mapping, and the hint for a map call's ENOMEM.

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
