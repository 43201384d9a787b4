//! The two guest kernels: Debian's stock 6.12 (modules) and a custom 6.12 built from
//! Debian's `linux-source-6.12` with the lab's config fragment. Both are cached outside
//! the repository, in `$VFIO_LAB_CACHE` (default `~/.cache/vfio-lab`).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::error::{LabError, Result};
use crate::host::{self, run_quiet};

/// Which kernel to boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelKind {
    /// Debian's linux-image 6.12 (vfio as modules; legacy container only).
    Stock,
    /// Built from linux-source-6.12 with iommufd, the vfio cdev and no-IOMMU support.
    Custom,
}

impl KernelKind {
    /// The name used in the cache, in messages and in `VFIO_LAB_KERNEL`.
    pub fn name(self) -> &'static str {
        match self {
            KernelKind::Stock => "stock",
            KernelKind::Custom => "custom",
        }
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
    /// Modules to put in the initramfs and load, in order (empty for the custom kernel).
    pub modules: Vec<GuestModule>,
    /// A one-line description (package and version).
    pub description: String,
}

/// The modules the stock guest loads, in the order that works, with their parameters.
/// Dependencies from `modules.dep` are loaded first. virtio-iommu on x86 offers no interrupt
/// remapping, so type1 needs `allow_unsafe_interrupts=1` to attach.
pub const STOCK_MODULES: &[(&str, &str)] = &[
    ("irqbypass", ""),
    ("virtio-iommu", ""),
    ("vfio", ""),
    ("vfio_iommu_type1", "allow_unsafe_interrupts=1"),
    ("vfio-pci-core", ""),
    ("vfio-pci", ""),
    ("e1000e", ""),
    ("nvme", ""),
    // KVM in the guest (QEMU's TCG offers SVM with `-cpu qemu64,+svm,+npt`): the KVM VFIO
    // device and irqfds are checked on the real kernel; no vCPU has to run.
    ("kvm", ""),
    ("kvm-amd", ""),
];

/// The cache directory: `$VFIO_LAB_CACHE`, else `$HOME/.cache/vfio-lab`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VFIO_LAB_CACHE") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache/vfio-lab")
}

/// The config fragment of the custom kernel: `$VFIO_LAB_FRAGMENT` when set (to try a
/// change), else the committed `tools/vfio-lab/kernel/vfio-lab.config`.
pub fn fragment_path() -> PathBuf {
    std::env::var_os("VFIO_LAB_FRAGMENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| host::workspace_root().join("tools/vfio-lab/kernel/vfio-lab.config"))
}

/// Fetches (or builds) a kernel, using the cache when it is current.
pub fn ensure(kind: KernelKind) -> Result<Kernel> {
    match kind {
        KernelKind::Stock => ensure_stock(&cache_dir()),
        KernelKind::Custom => ensure_custom(&cache_dir(), &fragment_path()),
    }
}

fn mkdir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(|e| LabError::io("create directory", p, e))
}

/// Downloads a package's .deb into `cache/debs` unless present; returns its path.
fn download_deb(cache: &Path, name: &str) -> Result<PathBuf> {
    let debs = cache.join("debs");
    mkdir(&debs)?;
    let find = || -> Result<Option<PathBuf>> {
        let rd = std::fs::read_dir(&debs).map_err(|e| LabError::io("read directory", &debs, e))?;
        Ok(rd.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
            p.file_name()
                .map(|f| f.to_string_lossy().starts_with(&format!("{name}_")))
                .unwrap_or(false)
                && p.extension().is_some_and(|x| x == "deb")
        }))
    };
    if let Some(p) = find()? {
        return Ok(p);
    }
    eprintln!("vfio-lab: apt-get download {name}");
    run_quiet(Command::new("apt-get").args(["download", name]).current_dir(&debs))?;
    find()?.ok_or_else(|| LabError::NoPackage {
        what: name.into(),
        hint: "apt-get download produced no .deb; run `apt-get update`".into(),
    })
}

/// Picks the newest `linux-image-6.12.N+debM-amd64-unsigned` from `apt-cache search` output.
pub fn pick_stock_package(search_output: &str) -> Option<String> {
    search_output
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| {
            n.starts_with("linux-image-6.12.") && n.ends_with("-amd64-unsigned") && {
                let mid = &n["linux-image-".len()..n.len() - "-amd64-unsigned".len()];
                // "6.12.117+deb12": no flavour (cloud, rt) in between.
                mid.split_once('+')
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

/// The numeric components of a package name's version, for ordering.
fn version_key(name: &str) -> Vec<u32> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
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

fn ensure_stock(cache: &Path) -> Result<Kernel> {
    host::ensure_packages(&["xz-utils", "kmod"])?;
    let search = host::apt_cache(
        &["search", "--names-only", r"^linux-image-6\.12\.[0-9]+\+deb[0-9]+-amd64-unsigned$"],
        |out| pick_stock_package(out).is_some(),
    )?;
    let pkg = pick_stock_package(&search).ok_or_else(|| LabError::NoPackage {
        what: "linux-image-6.12.*-amd64-unsigned".into(),
        hint: "run `apt-get update` on a Debian 12 host with bookworm-updates/security".into(),
    })?;
    let dir = cache.join("stock").join(&pkg);
    let ready = dir.join("ready");
    let _lock = lock(cache, &format!("stock-{pkg}"))?;
    let root = dir.join("root");
    let kver = pkg.trim_start_matches("linux-image-").trim_end_matches("-unsigned").to_string();
    let modroot = root.join("lib/modules").join(&kver);
    if !ready.exists() {
        let deb = download_deb(cache, &pkg)?;
        let _ = std::fs::remove_dir_all(&dir);
        mkdir(&root)?;
        eprintln!("vfio-lab: extracting {}", deb.display());
        run_quiet(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
        run_quiet(Command::new("depmod").arg("-b").arg(&root).arg(&kver))?;
        write(&ready, pkg.as_bytes())?;
    }
    let dep = read(&modroot.join("modules.dep"))?;
    let wanted: Vec<&str> = STOCK_MODULES.iter().map(|m| m.0).collect();
    // Decompressed on demand, so a module added to STOCK_MODULES works with a warm cache.
    for f in load_order(&dep, &wanted)? {
        let src = modroot.join(&f);
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
    let modules = load_order(&dep, &wanted)?
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
    Ok(Kernel {
        kind: KernelKind::Stock,
        image: root.join("boot").join(format!("vmlinuz-{kver}")),
        modules,
        description: pkg,
    })
}

/// The cache key of the custom kernel: a hash of the source version and the fragment.
pub fn custom_key(source_version: &str, fragment: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"vfio-lab-kernel-v1\n");
    h.update(source_version.as_bytes());
    h.update(b"\n");
    h.update(fragment);
    h.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The `Version:` field of `apt-cache show` output (first stanza).
pub fn parse_show_version(show: &str) -> Option<String> {
    show.lines().find_map(|l| l.strip_prefix("Version:")).map(|v| v.trim().to_string())
}

/// Fragment lines (`CONFIG_X=y`, `# CONFIG_X is not set`) missing from a final `.config`.
pub fn missing_options(fragment: &str, config: &str) -> Vec<String> {
    let have: HashSet<&str> = config.lines().map(str::trim).collect();
    fragment
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.starts_with("CONFIG_") || (l.starts_with("# CONFIG_") && l.ends_with(" is not set"))
        })
        .filter(|l| {
            if have.contains(l) {
                return false;
            }
            // "CONFIG_X=n" and "# CONFIG_X is not set" mean the same.
            if let Some(name) = l.strip_suffix("=n") {
                return !have.contains(format!("# {name} is not set").as_str())
                    && have.iter().any(|h| h.starts_with(&format!("{name}=")));
            }
            if let Some(name) = l.strip_prefix("# ").and_then(|r| r.strip_suffix(" is not set")) {
                return have.iter().any(|h| h.starts_with(&format!("{name}=")));
            }
            true
        })
        .map(str::to_string)
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

fn read(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).map_err(|e| LabError::io("read", p, e))
}

fn write(p: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(p, data).map_err(|e| LabError::io("write", p, e))
}

fn ensure_custom(cache: &Path, fragment_file: &Path) -> Result<Kernel> {
    let fragment =
        std::fs::read(fragment_file).map_err(|e| LabError::io("read", fragment_file, e))?;
    let show = host::apt_cache(&["show", "--no-all-versions", "linux-source-6.12"], |out| {
        parse_show_version(out).is_some()
    })
    .map_err(|e| LabError::NoPackage {
        what: "linux-source-6.12".into(),
        hint: format!("{e}; run `apt-get update` on Debian 12"),
    })?;
    let version = parse_show_version(&show).ok_or_else(|| LabError::NoPackage {
        what: "linux-source-6.12".into(),
        hint: "apt-cache show printed no Version; run `apt-get update`".into(),
    })?;
    let key = custom_key(&version, &fragment);
    let dir = cache.join("custom").join(&key);
    let image = dir.join("bzImage");
    // One build directory per source version, shared by every fragment: a changed fragment
    // rebuilds incrementally. The lock covers it.
    let _lock = lock(cache, &format!("custom-{version}"))?;
    let description = format!(
        "linux-source-6.12 {version} + {} ({key})",
        fragment_file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    );
    if image.exists() {
        return Ok(Kernel { kind: KernelKind::Custom, image, modules: Vec::new(), description });
    }
    host::ensure_packages(host::BUILD_PACKAGES)?;
    let src_parent = cache.join("src").join(&version);
    let src = src_parent.join("linux-source-6.12");
    let src_done = src_parent.join("extracted");
    if !src_done.exists() {
        let deb = download_deb(cache, "linux-source-6.12")?;
        let _ = std::fs::remove_dir_all(&src_parent);
        mkdir(&src_parent)?;
        eprintln!("vfio-lab: unpacking {} (about 10 s)", deb.display());
        let script = format!(
            "dpkg-deb --fsys-tarfile '{}' | tar -xO --wildcards './usr/src/linux-source-6.12.tar.xz' | tar -xJ",
            deb.display()
        );
        run_quiet(Command::new("sh").arg("-c").arg(script).current_dir(&src_parent))?;
        write(&src_done, version.as_bytes())?;
    }
    let build = cache.join("custom").join(format!("build-{version}"));
    mkdir(&build)?;
    mkdir(&dir)?;
    let log_path = dir.join("build.log");
    let mut log =
        std::fs::File::create(&log_path).map_err(|e| LabError::io("create", &log_path, e))?;
    let jobs = std::thread::available_parallelism().map(|n| n.get() + 1).unwrap_or(3);
    let o = format!("O={}", build.display());
    let fragment_s = String::from_utf8_lossy(&fragment).into_owned();
    let steps: Vec<Vec<String>> = vec![
        vec!["make".into(), o.clone(), "allnoconfig".into()],
        vec![
            "scripts/kconfig/merge_config.sh".into(),
            "-m".into(),
            "-O".into(),
            build.display().to_string(),
            build.join(".config").display().to_string(),
            fragment_file.display().to_string(),
        ],
        vec!["make".into(), o.clone(), "olddefconfig".into()],
    ];
    eprintln!("vfio-lab: configuring the custom kernel in {}", build.display());
    for s in &steps {
        let out = run_quiet(Command::new(&s[0]).args(&s[1..]).current_dir(&src))?;
        let _ = log.write_all(out.as_bytes());
    }
    let config = read(&build.join(".config"))?;
    if let Some(option) = missing_options(&fragment_s, &config).into_iter().next() {
        return Err(LabError::ConfigDropped { option, fragment: fragment_file.to_path_buf() });
    }
    let start = Instant::now();
    eprintln!(
        "vfio-lab: building the custom kernel with make -j{jobs} (several minutes on 2 cores; log: {})",
        log_path.display()
    );
    let mut child = Command::new("make")
        .arg(&o)
        .arg(format!("-j{jobs}"))
        .arg("bzImage")
        .current_dir(&src)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LabError::Command { command: "make bzImage".into(), detail: e.to_string() })?;
    // stderr goes to the log through a thread; stdout is counted for progress.
    let err = child.stderr.take().expect("piped stderr");
    let log_err = log.try_clone().map_err(|e| LabError::io("open", &log_path, e))?;
    let err_thread = std::thread::spawn(move || {
        let mut log_err = log_err;
        for l in BufReader::new(err).lines().map_while(|l| l.ok()) {
            let _ = writeln!(log_err, "{l}");
        }
    });
    let mut compiled = 0u64;
    let mut last = Instant::now();
    for line in
        BufReader::new(child.stdout.take().expect("piped stdout")).lines().map_while(|l| l.ok())
    {
        let _ = writeln!(log, "{line}");
        if line.trim_start().starts_with("CC ") {
            compiled += 1;
        }
        if last.elapsed().as_secs() >= 30 {
            last = Instant::now();
            eprintln!(
                "vfio-lab: kernel build: {compiled} files compiled, {} s",
                start.elapsed().as_secs()
            );
        }
    }
    let status = child
        .wait()
        .map_err(|e| LabError::Command { command: "make bzImage".into(), detail: e.to_string() })?;
    let _ = err_thread.join();
    if !status.success() {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        return Err(LabError::Command {
            command: "make bzImage".into(),
            detail: format!(
                "{status}; last lines of {}:\n{}",
                log_path.display(),
                host::tail(&text, 30)
            ),
        });
    }
    let built = build.join("arch/x86/boot/bzImage");
    let config_copy = dir.join("config");
    std::fs::copy(build.join(".config"), &config_copy)
        .map_err(|e| LabError::io("copy", &config_copy, e))?;
    let tmp = dir.join("bzImage.tmp");
    std::fs::copy(&built, &tmp).map_err(|e| LabError::io("copy", &built, e))?;
    std::fs::rename(&tmp, &image).map_err(|e| LabError::io("rename", &tmp, e))?;
    eprintln!(
        "vfio-lab: custom kernel built in {} s ({compiled} files)",
        start.elapsed().as_secs()
    );
    Ok(Kernel { kind: KernelKind::Custom, image, modules: Vec::new(), description })
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

    #[test]
    fn custom_key_changes_with_fragment_and_version() {
        let k = custom_key("6.12.117-1", b"CONFIG_A=y\n");
        assert_eq!(k.len(), 16);
        assert_ne!(k, custom_key("6.12.118-1", b"CONFIG_A=y\n"));
        assert_ne!(k, custom_key("6.12.117-1", b"CONFIG_A=m\n"));
        assert_eq!(k, custom_key("6.12.117-1", b"CONFIG_A=y\n"));
    }

    #[test]
    fn version_from_apt_cache_show() {
        let show = "Package: linux-source-6.12\nVersion: 6.12.117-1~deb12u1\nArchitecture: all\n";
        assert_eq!(parse_show_version(show).as_deref(), Some("6.12.117-1~deb12u1"));
        assert_eq!(parse_show_version("Package: x\n"), None);
    }

    #[test]
    fn missing_options_finds_dropped_lines() {
        let frag = "# comment\nCONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\nCONFIG_D=n\n";
        let cfg = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\n";
        assert_eq!(missing_options(frag, cfg), vec!["CONFIG_B=y", "# CONFIG_C is not set"]);
        assert!(missing_options("CONFIG_A=y\n", "CONFIG_A=y\n").is_empty());
    }
}
