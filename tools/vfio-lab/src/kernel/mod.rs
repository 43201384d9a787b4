//! The guest kernels, cached outside the repository in `$VFIO_LAB_CACHE` (default
//! `~/.cache/vfio-lab`):
//!
//! | kind | what | VFIO |
//! |---|---|---|
//! | `stock` | Debian 12's `linux-image-6.12.*` (the LTS the release ships) | modules; legacy container |
//! | `newest` | Debian sid's newest `linux-binary-*` + `linux-modules-*` | modules; legacy container |
//! | `custom` | built from Debian 12's `linux-source-6.12` | built in: legacy container, iommufd + cdev, no-IOMMU |
//! | `custom-newest` | built from sid's newest `linux-source-X.Y` | built in: iommufd's compat container, iommufd + cdev, no-IOMMU, the mtty mdev sample |
//!
//! Packages from sid are fetched with a private apt configuration ([`crate::apt`]).

mod custom;
mod stock;

pub use custom::source_tree;

use std::path::{Path, PathBuf};

use crate::error::{LabError, Result};
use crate::host;

/// Which kernel to boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelKind {
    /// Debian 12's linux-image 6.12 (vfio as modules; legacy container only).
    Stock,
    /// Debian sid's newest stock kernel (vfio as modules; legacy container only).
    Newest,
    /// Built from linux-source-6.12: legacy container, iommufd with the cdev, no-IOMMU.
    Custom,
    /// Built from sid's newest linux-source: iommufd's compat container, iommufd with the
    /// cdev, no-IOMMU, the mtty mdev sample driver.
    CustomNewest,
}

impl KernelKind {
    /// Every kind, in the order the suite boots them.
    pub const ALL: [KernelKind; 4] =
        [KernelKind::Stock, KernelKind::Newest, KernelKind::Custom, KernelKind::CustomNewest];

    /// The name used in the cache, in messages and in `VFIO_LAB_KERNEL`.
    pub fn name(self) -> &'static str {
        match self {
            KernelKind::Stock => "stock",
            KernelKind::Newest => "newest",
            KernelKind::Custom => "custom",
            KernelKind::CustomNewest => "custom-newest",
        }
    }

    /// Whether the kernel is built by the lab (vfio built in, no-IOMMU and iommufd).
    pub fn is_custom(self) -> bool {
        matches!(self, KernelKind::Custom | KernelKind::CustomNewest)
    }
}

/// A kernel module to load in the guest, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestModule {
    /// The decompressed `.ko` on the host.
    pub path: PathBuf,
    /// Parameters for insmod (may be empty).
    pub params: String,
}

/// A kernel ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Which one.
    pub kind: KernelKind,
    /// The bzImage.
    pub image: PathBuf,
    /// Modules to put in the initramfs and load, in order (empty for the custom kernels).
    pub modules: Vec<GuestModule>,
    /// A one-line description (package and version).
    pub description: String,
}

/// The cache directory: `$VFIO_LAB_CACHE`, else `$HOME/.cache/vfio-lab`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VFIO_LAB_CACHE") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache/vfio-lab")
}

/// The config fragments of a custom kernel, applied in order (a later line wins):
/// `$VFIO_LAB_FRAGMENT` when set (to try a change) replaces the committed common
/// `tools/vfio-lab/kernel/vfio-lab.config`; the kind's own fragment follows.
pub fn fragment_paths(kind: KernelKind) -> Vec<PathBuf> {
    let dir = host::workspace_root().join("tools/vfio-lab/kernel");
    let common = std::env::var_os("VFIO_LAB_FRAGMENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("vfio-lab.config"));
    let own = match kind {
        KernelKind::CustomNewest => "newest.config",
        _ => "lts.config",
    };
    vec![common, dir.join(own)]
}

/// Fetches (or builds) a kernel, using the cache when it is current.
pub fn ensure(kind: KernelKind) -> Result<Kernel> {
    let cache = cache_dir();
    match kind {
        KernelKind::Stock => stock::ensure(&cache, stock::Source::Lts),
        KernelKind::Newest => stock::ensure(&cache, stock::Source::Newest),
        KernelKind::Custom | KernelKind::CustomNewest => {
            custom::ensure(&cache, kind, &fragment_paths(kind))
        }
    }
}

fn mkdir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(|e| LabError::io("create directory", p, e))
}

fn read(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).map_err(|e| LabError::io("read", p, e))
}

fn write(p: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(p, data).map_err(|e| LabError::io("write", p, e))
}

/// The numeric components of a package name's version, for ordering.
fn version_key(name: &str) -> Vec<u32> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Takes an exclusive lock in the cache (released when the file is dropped), so that two
/// lab runs do not fetch or build the same kernel at once.
fn lock(cache: &Path, name: &str) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let dir = cache.join("locks");
    mkdir(&dir)?;
    let p = dir.join(name);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| LabError::io("open", &p, e))?;
    // SAFETY: the descriptor is valid for the lifetime of `f`; flock has no memory effects.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    if rc != 0 {
        return Err(LabError::io("lock", &p, std::io::Error::last_os_error()));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_lock_is_exclusive_and_released_on_drop() {
        use std::os::fd::AsRawFd;
        let d = tempfile::tempdir().unwrap();
        let held = lock(d.path(), "k").unwrap();
        let other = std::fs::File::open(d.path().join("locks/k")).unwrap();
        // SAFETY: valid descriptor; a non-blocking flock attempt.
        let busy = unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(busy, -1);
        drop(held);
        // SAFETY: as above.
        let free = unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(free, 0);
    }

    #[test]
    fn each_custom_kind_has_its_own_fragment_after_the_common_one() {
        let lts = fragment_paths(KernelKind::Custom);
        let newest = fragment_paths(KernelKind::CustomNewest);
        assert_eq!(lts[0], newest[0]);
        assert_ne!(lts[1], newest[1]);
        for p in lts.iter().chain(&newest) {
            assert!(p.is_file(), "{} is missing", p.display());
        }
    }
}
