//! The kernel's own VFIO selftests (`tools/testing/selftests/vfio` of the newest
//! `linux-source`), built static on the host and run in the guest by the suite as an
//! outside check of the lab and of what the project's conformance covers.

use std::path::PathBuf;
use std::process::Command;

use crate::error::{LabError, Result};
use crate::host::{self, run_quiet};
use crate::kernel::{self, KernelKind};

/// The selftests the suite runs on edu (the others need a device with a driver in the
/// selftests' library, or SR-IOV set up their way, or measure speed).
pub const RUN: &[&str] = &[
    "vfio_iommufd_setup_test",
    "vfio_pci_device_test",
    "vfio_dma_mapping_test",
    "vfio_dma_mapping_mmio_test",
];

/// Packages the build needs besides the kernel build's (headers_install uses rsync; the
/// selftests link libuuid).
const PACKAGES: &[&str] = &["rsync", "uuid-dev", "libc6-dev"];

/// Declarations the selftests' library uses but some releases' trees lack (7.2.13 calls
/// `calloc_assert` without defining it), force-included only when the tree has none.
const SHIM: &str = "#include <stdlib.h>\n\
    #define calloc_assert(n, s) ({ void *p__ = calloc(n, s); if (!p__) abort(); p__; })\n";

/// Whether the tree defines `calloc_assert` itself.
pub fn defines_calloc_assert(sources: &[String]) -> bool {
    sources
        .iter()
        .any(|s| s.contains("#define calloc_assert") || s.contains("void *calloc_assert("))
}

/// Builds the selftests (once per source version) and returns the executables to run,
/// or why they cannot be had (an older tree without them).
pub fn ensure() -> Result<Vec<PathBuf>> {
    let cache = kernel::cache_dir();
    let (src, version) = kernel::source_tree(&cache, KernelKind::CustomNewest)?;
    let tests = src.join("tools/testing/selftests/vfio");
    if !tests.join("Makefile").is_file() {
        return Err(LabError::NoPackage {
            what: format!("tools/testing/selftests/vfio in linux-source {version}"),
            hint: "this kernel source predates the VFIO selftests".into(),
        });
    }
    let out = cache.join("selftests").join(&version);
    let bins: Vec<PathBuf> = RUN.iter().map(|t| out.join("bin").join(t)).collect();
    if bins.iter().all(|b| b.is_file()) {
        return Ok(bins);
    }
    host::ensure_packages(host::BUILD_PACKAGES)?;
    host::ensure_packages(PACKAGES)?;
    let headers = out.join("headers");
    std::fs::create_dir_all(out.join("bin")).map_err(|e| LabError::io("create", &out, e))?;
    eprintln!("vfio-lab: building the kernel's VFIO selftests from linux-source {version}");
    // Out of tree (O=): the source tree stays clean for the kernel builds that share it.
    run_quiet(
        Command::new("make")
            .arg("-s")
            .arg(format!("O={}", out.join("obj").display()))
            .arg("headers_install")
            .arg(format!("INSTALL_HDR_PATH={}", headers.display()))
            .current_dir(&src),
    )?;
    let mut sources = Vec::new();
    for dir in [tests.join("lib"), tests.join("lib/include"), tests.join("lib/include/libvfio")] {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            sources.push(std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    let mut extra = String::new();
    if !defines_calloc_assert(&sources) {
        let shim = out.join("shim.h");
        std::fs::write(&shim, SHIM).map_err(|e| LabError::io("write", &shim, e))?;
        extra = format!("-include {}", shim.display());
    }
    let make = |targets: &[&str]| {
        run_quiet(
            Command::new("make")
                .arg("-C")
                .arg(&tests)
                .arg(format!("OUTPUT={}", out.join("bin").display()))
                .arg(format!("KHDR_INCLUDES=-isystem {}", headers.join("include").display()))
                .arg(format!("EXTRA_CFLAGS={extra}"))
                .arg("LDFLAGS=-static -pthread")
                .args(targets),
        )
    };
    // `make TARGET` may name the outputs with OUTPUT's path: build everything then.
    make(RUN).or_else(|_| make(&[]))?;
    for b in &bins {
        if !b.is_file() {
            return Err(LabError::Command {
                command: format!("make -C {}", tests.display()),
                detail: format!("{} was not built", b.display()),
            });
        }
    }
    Ok(bins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shim_is_used_only_where_the_tree_lacks_the_helper() {
        let lacking = vec!["irq = calloc_assert(1, argsz);".to_string()];
        assert!(!defines_calloc_assert(&lacking));
        let defining =
            vec!["#define calloc_assert(n, s) __calloc_assert(n, s, __FILE__)".to_string()];
        assert!(defines_calloc_assert(&defining));
    }
}
