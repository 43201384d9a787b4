//! Fault injection, one API for both views of a [`MockHost`]: a call of the mock kernel
//! (a [`KernelOp`]) or a file operation of the simulated filesystem (a [`FaultOp`], on
//! one path or on any) fails with a chosen errno, on the nth matching call or on every
//! one, as a flaky or hostile host would.
//!
//! ```
//! use vfio_core::kernel::{Errno, KernelOp, VfioKernel};
//! use vfio_core::mock::{DeviceSpec, Fault, FaultOp, MockHost};
//!
//! let host = MockHost::new([DeviceSpec::edu("0000:00:04.0").group(3).driver("vfio-pci")]);
//! // The next open of /dev/vfio/vfio fails with EMFILE.
//! host.inject(Fault::kernel(KernelOp::OpenContainer).errno(Errno::EMFILE));
//! // Every SET_IRQS fails with EINVAL.
//! host.inject(Fault::kernel(KernelOp::DeviceSetIrqs).errno(Errno::EINVAL).always());
//! // The second write to drivers_probe fails with EIO.
//! host.inject(Fault::fs(FaultOp::Write).path("/sys/bus/pci/drivers_probe").nth(2));
//!
//! assert_eq!(host.kernel().open_container().unwrap_err(), Errno::EMFILE);
//! assert_eq!(host.faults_fired(), 1);
//! host.clear_faults();
//! ```
//!
//! An injected fault is checked before the operation's own rules and leaves the state
//! untouched. The faults are tried in the order they were injected; each matching one
//! not yet due counts the call, and the first one due fails it (the later ones do not
//! count that call).

use std::io;
use std::path::{Path, PathBuf};

use crate::kernel::{Errno, KernelOp};
use crate::mock::{HostState, MockHost};

/// Which file operation of the simulated filesystem a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// `read`/`read_at`.
    Read,
    /// `write` and `replace_file`.
    Write,
    /// `chown`.
    Chown,
}

/// What an injected [`Fault`] makes fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultTarget {
    /// A call of the mock kernel.
    Kernel(KernelOp),
    /// A file operation of the simulated filesystem.
    Fs {
        /// The operation.
        op: FaultOp,
        /// The path it applies to (compared with the path as the caller gives it), or
        /// any path.
        path: Option<PathBuf>,
    },
}

/// Which matching calls an injected [`Fault`] fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultWhen {
    /// The nth matching call from now (1 = the next one, as is 0), once.
    Nth(u32),
    /// Every matching call from now on, until [`MockHost::clear_faults`].
    Always,
}

/// A fault to inject with [`MockHost::inject`]: [`Fault::kernel`] or [`Fault::fs`], by
/// default failing the next matching call with EIO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// What fails.
    pub target: FaultTarget,
    /// Which matching calls fail.
    pub when: FaultWhen,
    /// The errno they fail with.
    pub errno: Errno,
}

impl Fault {
    /// The next call of kernel operation `op` fails with EIO.
    pub fn kernel(op: KernelOp) -> Self {
        Fault::new(FaultTarget::Kernel(op))
    }

    /// The next file operation `op` of the simulated filesystem, on any path, fails
    /// with EIO.
    pub fn fs(op: FaultOp) -> Self {
        Fault::new(FaultTarget::Fs { op, path: None })
    }

    fn new(target: FaultTarget) -> Self {
        Fault { target, when: FaultWhen::Nth(1), errno: Errno::EIO }
    }

    /// Only operations on `path` (as the caller gives it) fail.
    ///
    /// # Panics
    ///
    /// On a kernel fault: kernel calls have no path.
    pub fn path(mut self, path: impl Into<PathBuf>) -> Self {
        match &mut self.target {
            FaultTarget::Fs { path: p, .. } => *p = Some(path.into()),
            FaultTarget::Kernel(op) => panic!("a fault on {op:?} has no path"),
        }
        self
    }

    /// The nth matching call from now fails (1 = the next one), once.
    pub fn nth(mut self, n: u32) -> Self {
        self.when = FaultWhen::Nth(n);
        self
    }

    /// Every matching call fails, until [`MockHost::clear_faults`].
    pub fn always(mut self) -> Self {
        self.when = FaultWhen::Always;
        self
    }

    /// The failing calls fail with `errno`.
    pub fn errno(mut self, errno: Errno) -> Self {
        self.errno = errno;
        self
    }
}

/// The injected faults of a host and how many calls they failed.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    armed: Vec<Fault>,
    fired: u64,
}

impl MockHost {
    /// Injects a fault into the mock kernel or the simulated filesystem (see [`Fault`]).
    pub fn inject(&self, fault: Fault) {
        self.state().faults.armed.push(fault);
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        self.state().faults.armed.clear();
    }

    /// How many calls injected faults have failed on this host (those cleared
    /// included): whether a run reached the call a fault was waiting for.
    pub fn faults_fired(&self) -> u64 {
        self.state().faults.fired
    }
}

/// The errno of the injected fault on kernel operation `op` due now, if any.
pub(crate) fn kernel_fault(st: &mut HostState, op: KernelOp) -> Option<Errno> {
    take(&mut st.faults, |t| *t == FaultTarget::Kernel(op))
}

/// Counts file operation `op` on `path` against the injected faults: the error of the
/// one whose turn it is.
pub(crate) fn check_fs(st: &mut HostState, op: FaultOp, path: &Path) -> io::Result<()> {
    let hit = |t: &FaultTarget| match t {
        FaultTarget::Fs { op: o, path: p } => *o == op && p.as_deref().is_none_or(|p| p == path),
        FaultTarget::Kernel(_) => false,
    };
    match take(&mut st.faults, hit) {
        Some(errno) => Err(io::Error::from_raw_os_error(errno as i32)),
        None => Ok(()),
    }
}

/// The errno of the first fault on a call `hit` selects that is due now: a fault due
/// once is used up, an `Nth` one not yet due counts down.
fn take(faults: &mut Faults, hit: impl Fn(&FaultTarget) -> bool) -> Option<Errno> {
    let i = faults.armed.iter_mut().position(|f| {
        if !hit(&f.target) {
            return false;
        }
        match &mut f.when {
            FaultWhen::Always => true,
            FaultWhen::Nth(n) if *n <= 1 => true,
            FaultWhen::Nth(n) => {
                *n -= 1;
                false
            }
        }
    })?;
    let f = &faults.armed[i];
    let errno = f.errno;
    if f.when != FaultWhen::Always {
        faults.armed.remove(i);
    }
    faults.fired += 1;
    Some(errno)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostfs::HostFs;
    use crate::kernel::VfioKernel;
    use crate::mock::sysfs::tests::{host, p};

    #[test]
    fn faults_hit_the_nth_matching_operation_only() {
        let h = host();
        let fs = h.fs();
        h.inject(Fault::fs(FaultOp::Write).nth(2));
        fs.replace_file(p("/etc/a"), b"1", 0o644).unwrap();
        assert_eq!(fs.write(p("/etc/a"), b"2").unwrap_err().raw_os_error(), Some(libc::EIO));
        fs.write(p("/etc/a"), b"3").unwrap();
        assert_eq!(fs.read(p("/etc/a")).unwrap(), b"3");
        h.inject(Fault::fs(FaultOp::Read).path("/proc/cmdline").errno(Errno::EACCES));
        assert_eq!(fs.read(p("/proc/cmdline")).unwrap_err().raw_os_error(), Some(libc::EACCES));
        assert!(fs.read_string(p("/proc/cmdline")).unwrap().contains("intel_iommu=on"));
        assert_eq!(h.faults_fired(), 2);
    }

    #[test]
    fn one_list_serves_both_views_in_order() {
        let h = host();
        let k = h.kernel();
        let fs = h.fs();
        fs.replace_file(p("/etc/a"), b"1", 0o644).unwrap();
        h.inject(Fault::kernel(KernelOp::OpenIommufd).errno(Errno::ENOMEM).always());
        h.inject(Fault::fs(FaultOp::Chown).path("/etc/a").errno(Errno::EPERM));
        // A file operation leaves the kernel's fault alone, and the other way round.
        let e = fs.chown(p("/etc/a"), Some(1), None).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        for _ in 0..2 {
            assert_eq!(k.open_iommufd().unwrap_err(), Errno::ENOMEM);
        }
        assert_eq!(h.faults_fired(), 3);
        h.clear_faults();
        fs.chown(p("/etc/a"), Some(1), None).unwrap();
        k.open_iommufd().map(|fd| k.close(fd)).unwrap();
        assert_eq!(h.faults_fired(), 3);
    }

    #[test]
    #[should_panic(expected = "has no path")]
    fn a_kernel_fault_takes_no_path() {
        let _ = Fault::kernel(KernelOp::Close).path("/dev/vfio/vfio");
    }
}
