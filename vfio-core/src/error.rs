//! The toolkit's error type.
//!
//! Every error says what was attempted, on what, and what the kernel or the filesystem
//! answered (the errno), with a hint on how to fix it where one is known. `Display`
//! gives one line fit for a command-line user.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::kernel::{Errno, KernelOp};
use crate::pci::DecodeError;

/// A `Result` with the toolkit's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong. Variants are sorted by name; each has a one-line `Display`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Binding a device to a driver did not complete; says whether it was rolled back.
    #[error("binding {device} to {driver} failed: {reason}")]
    BindFailed {
        /// The device.
        device: String,
        /// The driver asked for.
        driver: String,
        /// What went wrong, and the state the host was left in.
        reason: String,
    },

    /// A path that must not exist yet does (a new directory is written only where
    /// nothing was, so nothing planted there can redirect a write).
    #[error("{} exists; {what}", path.display())]
    Exists {
        /// The path.
        path: PathBuf,
        /// Why it must be new, and what to do.
        what: String,
    },

    /// A VFIO group cannot be used because some of its devices are bound to host drivers.
    #[error("IOMMU group {group} is not viable: {}; bind the whole group to vfio-pci (a group bind of {first}) or unbind them", blockers_text(blockers))]
    GroupNotViable {
        /// The group number.
        group: u32,
        /// The first blocking member, for the suggested group bind.
        first: String,
        /// Members holding the group back, with the driver each is bound to.
        blockers: Vec<(String, String)>,
    },

    /// A filesystem operation on the host view (sysfs, procfs, /dev) failed.
    #[error("{op} {}: {source}{}", path.display(), hint_suffix(hint))]
    Host {
        /// What was attempted ("read", "write", "readlink", ...).
        op: &'static str,
        /// The path, as the host sees it (`/sys/bus/pci/...`).
        path: PathBuf,
        /// The underlying error, with its errno.
        #[source]
        source: io::Error,
        /// How to fix it, when known.
        hint: Option<String>,
    },

    /// A device the host itself is using (its console, network or storage).
    #[error("{device} is in use by the host: {reason}; stop that use first, or force the change to take it anyway")]
    InUse {
        /// The device.
        device: String,
        /// What uses it.
        reason: String,
    },

    /// Input that does not parse (an address, a filter, a file).
    #[error("invalid {what} {input:?}: {reason}")]
    Invalid {
        /// What kind of input ("PCI address", "device filter", ...).
        what: &'static str,
        /// The input as given.
        input: String,
        /// Why it was refused.
        reason: String,
    },

    /// A kernel operation failed.
    #[error("{op} on {target} failed: {errno}{}", hint_suffix(hint))]
    Kernel {
        /// The operation.
        op: KernelOp,
        /// What it was issued on ("device 0000:01:00.0", "group 5", "container", ...).
        target: String,
        /// The errno the kernel returned.
        errno: Errno,
        /// How to fix it, when known.
        hint: Option<String>,
    },

    /// Another process holds the host lock (a concurrent bind, unbind or restore).
    #[error("another process holds the host lock (pid {pid}): {} is locked; wait for it to finish", path.display())]
    Locked {
        /// The process holding the lock.
        pid: u32,
        /// The lock file.
        path: PathBuf,
    },

    /// Something that does not exist: a device, a group, a region, a capability.
    #[error("{what} not found{}", hint_suffix(hint))]
    NotFound {
        /// What was looked for.
        what: String,
        /// How to fix it, when known.
        hint: Option<String>,
    },

    /// An access outside a region, mapping or buffer, refused before reaching the kernel.
    #[error("{what}: offset {offset:#x} + {len:#x} is outside the {size:#x} bytes available")]
    OutOfBounds {
        /// What was accessed ("BAR0 mapping", "config space", ...).
        what: String,
        /// Offset of the access.
        offset: u64,
        /// Length of the access.
        len: u64,
        /// Size of what was accessed.
        size: u64,
    },

    /// An operation the device, kernel or IOMMU mode does not offer.
    #[error("{what} is not supported{}", hint_suffix(hint))]
    Unsupported {
        /// What was asked for.
        what: String,
        /// Why, or what to use instead.
        hint: Option<String>,
    },

    /// The kernel refused to open a VF whose PF is on vfio-pci (or such a PF while its
    /// VFs are open) for its VF token (EACCES).
    #[error("opening {device} was refused: {reason}; set a token on the PF (Device::set_vf_token) and open with the same one (Vfio::open_with_token)")]
    VfToken {
        /// The device.
        device: String,
        /// Missing, or not the PF's.
        reason: String,
    },

    /// Changing a PF's VF count would remove VFs that are on vfio-pci or used by the
    /// host.
    #[error("{action} would remove VFs in use: {}; {fix}, or force the change to remove them anyway", vfs.join(", "))]
    VfsInUse {
        /// The change (`disabling the VFs of 0000:02:00.0`).
        action: String,
        /// The VFs in use, each with what uses it.
        vfs: Vec<String>,
        /// How to free them.
        fix: String,
    },
}

impl From<DecodeError> for Error {
    /// A decoder's refusal as [`Error::Invalid`], with the same message.
    fn from(e: DecodeError) -> Self {
        Error::Invalid { what: e.what, input: e.input, reason: e.reason }
    }
}

fn hint_suffix(hint: &Option<String>) -> String {
    match hint {
        Some(h) => format!("; {h}"),
        None => String::new(),
    }
}

fn blockers_text(blockers: &[(String, String)]) -> String {
    blockers
        .iter()
        .map(|(dev, drv)| format!("{dev} is bound to {drv}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Error {
    /// A kernel error for `op` on `target`, without a hint.
    pub fn kernel(op: KernelOp, target: impl fmt::Display, errno: Errno) -> Self {
        Error::Kernel { op, target: target.to_string(), errno, hint: None }
    }

    /// A host filesystem error.
    pub fn host(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Host { op, path: path.into(), source, hint: None }
    }

    /// Adds (or replaces) the hint of a `Kernel`, `Host`, `NotFound` or `Unsupported` error.
    pub fn with_hint(mut self, new: impl Into<String>) -> Self {
        match &mut self {
            Error::Kernel { hint, .. }
            | Error::Host { hint, .. }
            | Error::NotFound { hint, .. }
            | Error::Unsupported { hint, .. } => *hint = Some(new.into()),
            _ => {}
        }
        self
    }

    /// The errno behind this error, when there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Kernel { errno, .. } => Some(*errno),
            Error::Host { source, .. } => source.raw_os_error().map(Errno::from_raw),
            _ => None,
        }
    }

    /// The kernel operation behind this error, when there is one.
    pub fn kernel_op(&self) -> Option<KernelOp> {
        match self {
            Error::Kernel { op, .. } => Some(*op),
            _ => None,
        }
    }
}
