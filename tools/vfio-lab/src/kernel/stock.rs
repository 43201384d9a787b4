//! Debian's stock kernels: the release's 6.12 LTS image and sid's newest, with vfio as
//! modules the guest loads from the initramfs.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{lock, read, version_key, write, GuestModule, Kernel, KernelKind};
use crate::apt::{self, Suite};
use crate::error::{LabError, Result};
use crate::host::{self, run_quiet};

/// The modules the stock guests load, in the order that works, with their parameters.
/// Dependencies from `modules.dep` are loaded first. virtio-iommu on x86 offers no interrupt
/// remapping, so type1 needs `allow_unsafe_interrupts=1` to attach.
pub const STOCK_MODULES: &[(&str, &str)] = &[
    ("irqbypass", ""),
    ("virtio-iommu", ""),
    ("vfio", ""),
    ("vfio_iommu_type1", "allow_unsafe_interrupts=1"),
    ("vfio-pci-core", ""),
    // enable_sriov: a PF on vfio-pci creates VFs (the VF token check).
    ("vfio-pci", "enable_sriov=1"),
    ("e1000e", ""),
    ("nvme", ""),
    // The SR-IOV NIC (QEMU 10's igb) and its VF driver.
    ("igb", ""),
    ("igbvf", ""),
    // KVM in the guest (QEMU's TCG offers SVM with `-cpu qemu64,+svm,+npt`): the KVM VFIO
    // device and irqfds are checked on the real kernel; no vCPU has to run.
    ("kvm", ""),
    ("kvm-amd", ""),
];

/// Which stock kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Debian 12's `linux-image-6.12.N+debM-amd64-unsigned`.
    Lts,
    /// sid's newest `linux-modules-X+debN-amd64` with its `linux-binary-unsigned-*`.
    Newest,
}

/// Picks the newest `linux-image-6.12.N+debM-amd64-unsigned` from `apt-cache search` output.
pub fn pick_stock_package(search_output: &str) -> Option<String> {
    pick(search_output, "linux-image-", "-amd64-unsigned", Some("6.12."))
}

/// Picks the newest plain amd64 `linux-modules-X.Y.Z+debN-amd64` and returns its kernel
/// release (`X.Y.Z+debN-amd64`).
pub fn pick_newest_modules(search_output: &str) -> Option<String> {
    pick(search_output, "linux-modules-", "-amd64", None)
        .map(|p| p.trim_start_matches("linux-modules-").to_string())
}

fn pick(search_output: &str, prefix: &str, suffix: &str, series: Option<&str>) -> Option<String> {
    search_output
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| {
            n.starts_with(prefix)
                && n.ends_with(suffix)
                && n.len() > prefix.len() + suffix.len()
                && {
                    let mid = &n[prefix.len()..n.len() - suffix.len()];
                    // "6.12.117+deb12": no flavour (cloud, rt) in between.
                    series.is_none_or(|s| mid.starts_with(s))
                        && mid
                            .split_once('+')
                            .map(|(v, d)| {
                                v.split('.').all(|x| x.parse::<u32>().is_ok())
                                    && d.starts_with("deb")
                                    && d[3..].parse::<u32>().is_ok()
                            })
                            .unwrap_or(false)
                }
        })
        .max_by_key(|n| version_key(n))
        .map(str::to_string)
}

/// Normalizes a module name as the kernel does (`-` and `_` are the same).
fn mod_name(s: &str) -> String {
    let base = s.rsplit('/').next().unwrap_or(s);
    let base = base.split(".ko").next().unwrap_or(base);
    base.replace('-', "_")
}

/// Resolves `wanted` against a `modules.dep` text: returns the module files (as written in
/// modules.dep) with each module's dependencies before it, each once.
pub fn load_order(modules_dep: &str, wanted: &[&str]) -> Result<Vec<String>> {
    let mut deps: HashMap<String, (String, Vec<String>)> = HashMap::new();
    for line in modules_dep.lines() {
        let Some((file, rest)) = line.split_once(':') else {
            continue;
        };
        let d = rest.split_whitespace().map(mod_name).collect();
        deps.insert(mod_name(file), (file.to_string(), d));
    }
    fn visit(
        name: &str,
        deps: &HashMap<String, (String, Vec<String>)>,
        seen: &mut HashSet<String>,
        out: &mut Vec<String>,
    ) -> Result<()> {
        if seen.contains(name) {
            return Ok(());
        }
        let (file, ds) = deps.get(name).ok_or_else(|| LabError::MissingModule(name.to_string()))?;
        seen.insert(name.to_string());
        for d in ds {
            visit(d, deps, seen, out)?;
        }
        out.push(file.clone());
        Ok(())
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for w in wanted {
        visit(&mod_name(w), &deps, &mut seen, &mut out)?;
    }
    Ok(out)
}

/// What to fetch for a source: (cache name, kernel release, packages, suite).
fn resolve(cache: &Path, source: Source) -> Result<(String, String, Vec<String>, Suite)> {
    match source {
        Source::Lts => {
            let search = apt::query(
                cache,
                Suite::Host,
                &[
                    "search",
                    "--names-only",
                    r"^linux-image-6\.12\.[0-9]+\+deb[0-9]+-amd64-unsigned$",
                ],
                |out| pick_stock_package(out).is_some(),
            )?;
            let pkg = pick_stock_package(&search).ok_or_else(|| LabError::NoPackage {
                what: "linux-image-6.12.*-amd64-unsigned".into(),
                hint: "run `apt-get update` on a Debian 12 host with bookworm-updates/security"
                    .into(),
            })?;
            let kver =
                pkg.trim_start_matches("linux-image-").trim_end_matches("-unsigned").to_string();
            Ok((pkg.clone(), kver, vec![pkg], Suite::Host))
        }
        Source::Newest => {
            let search = apt::query(
                cache,
                Suite::Sid,
                &["search", "--names-only", r"^linux-modules-[0-9.]+\+deb[0-9]+-amd64$"],
                |out| pick_newest_modules(out).is_some(),
            )?;
            let kver = pick_newest_modules(&search).ok_or_else(|| LabError::NoPackage {
                what: "linux-modules-*-amd64 (sid)".into(),
                hint: "the sid package lists name no plain amd64 kernel; check the mirror".into(),
            })?;
            let pkgs =
                vec![format!("linux-modules-{kver}"), format!("linux-binary-unsigned-{kver}")];
            Ok((kver.clone(), kver, pkgs, Suite::Sid))
        }
    }
}

/// The kernel image in an unpacked tree: `/boot/vmlinuz-KVER` (6.12's layout) or
/// `/usr/lib/modules/KVER/vmlinuz[.unsigned]` (sid's).
fn image_in(root: &Path, kver: &str) -> Option<PathBuf> {
    [
        root.join("boot").join(format!("vmlinuz-{kver}")),
        root.join("usr/lib/modules").join(kver).join("vmlinuz.unsigned"),
        root.join("usr/lib/modules").join(kver).join("vmlinuz"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

pub(super) fn ensure(cache: &Path, source: Source) -> Result<Kernel> {
    host::ensure_packages(&["xz-utils", "kmod"])?;
    let (name, kver, pkgs, suite) = resolve(cache, source)?;
    let dir = cache.join("stock").join(&name);
    let _lock = lock(cache, &format!("stock-{name}"))?;
    let ready = dir.join("depmod-done");
    let debs =
        pkgs.iter().map(|p| apt::download(cache, suite, p, None)).collect::<Result<Vec<_>>>()?;
    let root = apt::unpack(&debs, &dir)?;
    // depmod looks in ROOT/lib/modules; sid installs into /usr/lib/modules.
    if !root.join("lib").exists() && root.join("usr/lib/modules").exists() {
        std::os::unix::fs::symlink("usr/lib", root.join("lib"))
            .map_err(|e| LabError::io("symlink", root.join("lib"), e))?;
    }
    let modroot = root.join("lib/modules").join(&kver);
    if !ready.exists() {
        run_quiet(Command::new("depmod").arg("-b").arg(&root).arg(&kver))?;
        write(&ready, kver.as_bytes())?;
    }
    let dep = read(&modroot.join("modules.dep"))?;
    let wanted: Vec<&str> = STOCK_MODULES.iter().map(|m| m.0).collect();
    let order = load_order(&dep, &wanted)?;
    // Decompressed on demand, so a module added to STOCK_MODULES works with a warm cache.
    for f in &order {
        let src = modroot.join(f);
        let ko = modroot.join(f.trim_end_matches(".xz").trim_end_matches(".zst"));
        if ko.exists() {
            continue;
        }
        if f.ends_with(".xz") {
            run_quiet(Command::new("xz").args(["-d", "-k", "-f"]).arg(&src))?;
        } else if f.ends_with(".zst") {
            run_quiet(Command::new("zstd").args(["-d", "-f", "-q"]).arg(&src))?;
        }
    }
    let modules = order
        .into_iter()
        .map(|f| {
            let ko = f.trim_end_matches(".xz").trim_end_matches(".zst").to_string();
            let params = STOCK_MODULES
                .iter()
                .find(|(n, _)| mod_name(n) == mod_name(&ko))
                .map(|(_, p)| p.to_string())
                .unwrap_or_default();
            GuestModule { path: modroot.join(ko), params }
        })
        .collect();
    let image = image_in(&root, &kver).ok_or_else(|| LabError::NoPackage {
        what: format!("the kernel image of {kver}"),
        hint: format!("{} holds no vmlinuz; the package layout changed", root.display()),
    })?;
    let kind = match source {
        Source::Lts => KernelKind::Stock,
        Source::Newest => KernelKind::Newest,
    };
    Ok(Kernel { kind, image, modules, description: pkgs.join(" + ") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_newest_plain_amd64_image() {
        let out = "linux-image-6.12.107+deb12-amd64-unsigned - Linux 6.12\n\
                   linux-image-6.12.117+deb12-cloud-amd64-unsigned - cloud\n\
                   linux-image-6.12.99+deb12-amd64-unsigned - old\n\
                   linux-image-6.12.117+deb12-rt-amd64-unsigned - rt\n\
                   linux-image-6.12.113+deb12-amd64-unsigned - Linux 6.12\n";
        assert_eq!(
            pick_stock_package(out).as_deref(),
            Some("linux-image-6.12.113+deb12-amd64-unsigned")
        );
        assert_eq!(pick_stock_package("linux-image-6.1.0-amd64 - x\n"), None);
    }

    #[test]
    fn picks_newest_plain_modules_of_sid() {
        let out = "linux-modules-7.2.13+deb14-amd64 - Linux 7.2.13 for 64-bit PCs (modules)\n\
                   linux-modules-7.2.13+deb14-cloud-amd64 - cloud\n\
                   linux-modules-7.10.1+deb14-amd64 - newer\n\
                   linux-modules-7.2.13+deb14-rt-amd64 - rt\n\
                   linux-modules-7.1.9+deb14-amd64 - older\n";
        assert_eq!(pick_newest_modules(out).as_deref(), Some("7.10.1+deb14-amd64"));
        assert_eq!(pick_newest_modules("linux-modules-extra - x\n"), None);
    }

    #[test]
    fn image_found_in_either_layout() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(image_in(t.path(), "7.2.13+deb14-amd64"), None);
        let sid = t.path().join("usr/lib/modules/7.2.13+deb14-amd64");
        std::fs::create_dir_all(&sid).unwrap();
        std::fs::write(sid.join("vmlinuz.unsigned"), b"k").unwrap();
        assert_eq!(image_in(t.path(), "7.2.13+deb14-amd64"), Some(sid.join("vmlinuz.unsigned")));
        std::fs::create_dir_all(t.path().join("boot")).unwrap();
        std::fs::write(t.path().join("boot/vmlinuz-6.12.1+deb12-amd64"), b"k").unwrap();
        assert!(image_in(t.path(), "6.12.1+deb12-amd64").is_some());
    }

    #[test]
    fn load_order_puts_dependencies_first_once() {
        let dep = "kernel/drivers/vfio/vfio.ko.xz:\n\
                   kernel/drivers/vfio/vfio_iommu_type1.ko.xz: kernel/drivers/vfio/vfio.ko.xz\n\
                   kernel/drivers/vfio/pci/vfio-pci.ko.xz: kernel/drivers/vfio/pci/vfio-pci-core.ko.xz kernel/drivers/vfio/vfio.ko.xz kernel/virt/lib/irqbypass.ko.xz\n\
                   kernel/drivers/vfio/pci/vfio-pci-core.ko.xz: kernel/drivers/vfio/vfio.ko.xz kernel/virt/lib/irqbypass.ko.xz\n\
                   kernel/virt/lib/irqbypass.ko.xz:\n";
        let order = load_order(dep, &["vfio-pci", "vfio_iommu_type1"]).unwrap();
        assert_eq!(
            order,
            vec![
                "kernel/drivers/vfio/vfio.ko.xz",
                "kernel/virt/lib/irqbypass.ko.xz",
                "kernel/drivers/vfio/pci/vfio-pci-core.ko.xz",
                "kernel/drivers/vfio/pci/vfio-pci.ko.xz",
                "kernel/drivers/vfio/vfio_iommu_type1.ko.xz",
            ]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
        );
    }

    #[test]
    fn load_order_reports_missing_module() {
        let err = load_order("a.ko: b.ko\n", &["a"]).unwrap_err();
        assert!(matches!(err, LabError::MissingModule(ref m) if m == "b"), "{err}");
    }
}
