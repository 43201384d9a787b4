//! `--dry-run`: a host view that reads the real host and records every change instead
//! of making it.
//!
//! A command runs its normal code against a [`DryRunFs`]; reads see the host as it is,
//! and each write, `chown`, `mkdir`, `modprobe` or removal is recorded as the shell
//! command that would make it. The host itself receives no change.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use vfio_core::hostfs::{HeldLock, HostFs, NodeMeta};

/// The lock a dry run holds: none.
#[derive(Debug)]
struct NoLock;

impl HeldLock for NoLock {}

use crate::context::{out, Context};

/// A recording, change-free view of another [`HostFs`].
#[derive(Debug)]
pub struct DryRunFs {
    inner: Arc<dyn HostFs>,
    steps: Mutex<Vec<String>>,
}

impl DryRunFs {
    /// Wraps the host view `inner`.
    pub fn new(inner: Arc<dyn HostFs>) -> Self {
        DryRunFs { inner, steps: Mutex::new(Vec::new()) }
    }

    /// The changes recorded so far, as shell commands.
    pub fn steps(&self) -> Vec<String> {
        self.steps.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn record(&self, step: String) {
        self.steps.lock().unwrap_or_else(|p| p.into_inner()).push(step);
    }

    /// Prints the recorded changes ("nothing to do" when there are none).
    pub fn print(&self, ctx: &mut Context) {
        let steps = self.steps();
        if steps.is_empty() {
            out!(ctx, "nothing to do");
        } else {
            out!(ctx, "would run:");
            for s in steps {
                out!(ctx, "  {s}");
            }
        }
    }
}

fn shown(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(t) if !t.trim().contains('\n') => t.trim().to_string(),
        Ok(t) => format!("<{} lines>", t.lines().count()),
        Err(_) => format!("<{} bytes>", data.len()),
    }
}

impl HostFs for DryRunFs {
    fn read_limited(&self, path: &Path, max: usize) -> io::Result<Vec<u8>> {
        self.inner.read_limited(path, max)
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_at(path, offset, buf)
    }

    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.record(format!("echo {} > {}", shown(data), path.display()));
        Ok(())
    }

    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        self.inner.read_link(path)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.read_dir(path)
    }

    fn metadata(&self, path: &Path) -> io::Result<NodeMeta> {
        self.inner.metadata(path)
    }

    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        let id = |v: Option<u32>| v.map_or(String::new(), |v| v.to_string());
        self.record(format!("chown {}:{} {}", id(uid), id(gid), path.display()));
        Ok(())
    }

    fn replace_file(&self, path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
        let _ = mode;
        self.record(format!("echo {} > {}", shown(data), path.display()));
        Ok(())
    }

    fn lock(&self, _path: &Path) -> io::Result<Box<dyn HeldLock>> {
        // A dry run changes nothing, so it needs no lock and takes none (taking it would
        // create the lock file).
        Ok(Box::new(NoLock))
    }

    fn create_dir_all(&self, path: &Path, _mode: u32) -> io::Result<()> {
        if !self.inner.exists(path) {
            self.record(format!("mkdir -p {}", path.display()));
        }
        Ok(())
    }

    fn modprobe(&self, module: &str) -> io::Result<()> {
        self.record(format!("modprobe {module}"));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.record(format!("rm {}", path.display()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfio_core::mock::{DeviceSpec, MockHost};

    #[test]
    fn records_changes_and_passes_reads_through() {
        let h = MockHost::new([DeviceSpec::edu("0000:00:04.0").driver("edu")]);
        let fs = h.fs();
        let dry = DryRunFs::new(fs.clone());
        let p = Path::new("/sys/bus/pci/devices/0000:00:04.0/driver_override");
        dry.write(p, b"vfio-pci\n").unwrap();
        dry.create_dir_all(Path::new("/etc/modprobe.d"), 0o755).unwrap();
        dry.replace_file(Path::new("/etc/modprobe.d/vfio.conf"), b"a\nb\n", 0o644).unwrap();
        dry.modprobe("vfio-pci").unwrap();
        assert_eq!(
            dry.steps(),
            vec![
                format!("echo vfio-pci > {}", p.display()),
                "mkdir -p /etc/modprobe.d".to_string(),
                "echo <2 lines> > /etc/modprobe.d/vfio.conf".to_string(),
                "modprobe vfio-pci".to_string(),
            ]
        );
        assert_eq!(fs.read_string(p).unwrap(), "(null)");
        assert!(!fs.exists(Path::new("/etc/modprobe.d")));
        assert_eq!(
            dry.read_string(Path::new("/sys/bus/pci/devices/0000:00:04.0/vendor")).unwrap(),
            "0x1234"
        );
    }
}
