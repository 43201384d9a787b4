//! The lab's error type: every failure names what was being done and how to fix it.

use std::path::PathBuf;

/// A failure of the lab (host side). Guest failures are reported as exit statuses.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A host command could not be started or ended with a non-zero status.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line, for the message.
        command: String,
        /// Why: the exit status and the tail of its output, or the spawn error.
        detail: String,
    },
    /// A file or directory operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("read", "create", ...).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error (carries the errno).
        source: std::io::Error,
    },
    /// The kernel package or source could not be found.
    #[error("no package matches {what}: {hint}")]
    NoPackage {
        /// The package pattern searched for.
        what: String,
        /// How to fix it.
        hint: String,
    },
    /// The custom kernel's configuration lost an option the fragment asks for.
    #[error(
        "kernel config option `{option}` from {fragment} did not survive olddefconfig: \
         add its dependencies to the fragment"
    )]
    ConfigDropped {
        /// The fragment line that is missing from the final .config.
        option: String,
        /// The fragment file.
        fragment: PathBuf,
    },
    /// A module the guest needs is missing from the stock kernel package.
    #[error("module {0} is not in the stock kernel package (or its modules.dep)")]
    MissingModule(String),
    /// The VM did not print the exit marker before the timeout.
    #[error(
        "the VM did not finish within {0} s (killed); raise --timeout or look at the console above"
    )]
    Timeout(u64),
    /// QEMU ended without the guest printing its exit marker.
    #[error("QEMU exited ({status}) before the guest command finished; see the console above")]
    NoMarker {
        /// QEMU's exit status.
        status: String,
    },
    /// Bad input on the command line.
    #[error("{0}")]
    Usage(String),
}

impl LabError {
    /// Builds an [`LabError::Io`] from an operation, a path and an error.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LabError::Io { op, path: path.into(), source }
    }
}

/// The lab's result type.
pub type Result<T> = std::result::Result<T, LabError>;
