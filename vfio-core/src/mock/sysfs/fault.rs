//! Fault injection into the simulated filesystem: the `nth` read, write or `chown` of a
//! path (or of any path) fails with a chosen errno, as a flaky or hostile host would.

use std::io;
use std::path::{Path, PathBuf};

use super::err;
use crate::mock::{HostState, MockHost};

/// Which file operation a [`Fault`] applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// `read`/`read_at`.
    Read,
    /// `write`.
    Write,
    /// `chown`.
    Chown,
}

/// An injected failure: the `nth` (1-based) matching operation fails with `errno`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The operation.
    pub op: FaultOp,
    /// The path it applies to (as given by the caller), or any path.
    pub path: Option<PathBuf>,
    /// Which matching operation fails (1 = the next one).
    pub nth: u32,
    /// The errno returned.
    pub errno: i32,
    /// Matching operations seen so far.
    pub seen: u32,
}

impl MockHost {
    /// Makes the `nth` (1-based) future `op` on `path` (or on any path) fail with `errno`.
    pub fn inject_fault(&self, op: FaultOp, path: Option<&str>, nth: u32, errno: i32) {
        self.state().sys.faults.push(Fault {
            op,
            path: path.map(PathBuf::from),
            nth,
            errno,
            seen: 0,
        });
    }
}

/// Counts `op` on `path` against the injected faults: the error of the one whose turn
/// it is.
pub(super) fn check(st: &mut HostState, op: FaultOp, path: &Path) -> io::Result<()> {
    for f in st.sys.faults.iter_mut() {
        if f.op == op && f.path.as_deref().is_none_or(|p| p == path) && f.seen < f.nth {
            f.seen += 1;
            if f.seen == f.nth {
                return Err(err(f.errno));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostfs::HostFs;
    use crate::mock::sysfs::tests::{host, p};

    #[test]
    fn faults_hit_the_nth_matching_operation_only() {
        let h = host();
        let fs = h.fs();
        h.inject_fault(FaultOp::Write, None, 2, libc::EIO);
        fs.replace_file(p("/etc/a"), b"1", 0o644).unwrap();
        assert_eq!(fs.write(p("/etc/a"), b"2").unwrap_err().raw_os_error(), Some(libc::EIO));
        fs.write(p("/etc/a"), b"3").unwrap();
        assert_eq!(fs.read(p("/etc/a")).unwrap(), b"3");
        h.inject_fault(FaultOp::Read, Some("/proc/cmdline"), 1, libc::EACCES);
        assert!(fs.read(p("/proc/cmdline")).is_err());
        assert!(fs.read_string(p("/proc/cmdline")).unwrap().contains("intel_iommu=on"));
    }
}
