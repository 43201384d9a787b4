//! The custom kernels: Debian's kernel source (6.12 LTS, or sid's newest) configured from
//! `allnoconfig` plus the lab's fragments, built once per source version and fragment.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::{lock, mkdir, read, version_key, write, Kernel, KernelKind};
use crate::apt::{self, Suite};
use crate::error::{LabError, Result};
use crate::host::{self, run_quiet};

/// The cache key of the custom kernel: a hash of the source version and the fragment.
pub fn custom_key(source_version: &str, fragment: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"vfio-lab-kernel-v1\n");
    h.update(source_version.as_bytes());
    h.update(b"\n");
    h.update(fragment);
    h.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect()
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

/// The suite, source package and version of a custom kind: Debian 12's
/// `linux-source-6.12`, or the newest `linux-source-X.Y` in sid.
fn source_package(cache: &Path, kind: KernelKind) -> Result<(Suite, String, String)> {
    let (suite, pkg) = if kind == KernelKind::CustomNewest {
        let search = apt::query(
            cache,
            Suite::Sid,
            &["search", "--names-only", r"^linux-source-[0-9]+\.[0-9]+$"],
            |out| pick_newest_source(out).is_some(),
        )?;
        let pkg = pick_newest_source(&search).ok_or_else(|| LabError::NoPackage {
            what: "linux-source-X.Y (sid)".into(),
            hint: "the sid package lists name no kernel source; check the mirror".into(),
        })?;
        (Suite::Sid, pkg)
    } else {
        (Suite::Host, "linux-source-6.12".to_string())
    };
    let show = apt::query(cache, suite, &["show", "--no-all-versions", &pkg], |out| {
        apt::parse_show_version(out).is_some()
    })
    .map_err(|e| LabError::NoPackage {
        what: pkg.clone(),
        hint: format!("{e}; run `apt-get update` on Debian 12"),
    })?;
    let version = apt::parse_show_version(&show).ok_or_else(|| LabError::NoPackage {
        what: pkg.clone(),
        hint: "apt-cache show printed no Version; run `apt-get update`".into(),
    })?;
    Ok((suite, pkg, version))
}

/// The source tree of a kernel kind, downloaded and unpacked once into
/// `$VFIO_LAB_CACHE/src/<version>/<package>`; returns it and the package version.
pub fn source_tree(cache: &Path, kind: KernelKind) -> Result<(PathBuf, String)> {
    let (suite, pkg, version) = source_package(cache, kind)?;
    let _lock = lock(cache, &format!("custom-{version}"))?;
    Ok((unpacked_source(cache, suite, &pkg, &version)?, version))
}

/// Unpacks a `linux-source-X.Y` package once (the caller holds the version's lock).
fn unpacked_source(cache: &Path, suite: Suite, pkg: &str, version: &str) -> Result<PathBuf> {
    let src_parent = cache.join("src").join(version);
    let src = src_parent.join(pkg);
    let src_done = src_parent.join("extracted");
    if !src_done.exists() {
        let deb = apt::download(cache, suite, pkg, Some(version))?;
        let _ = std::fs::remove_dir_all(&src_parent);
        mkdir(&src_parent)?;
        eprintln!("vfio-lab: unpacking {} (about 10 s)", deb.display());
        let script = format!(
            "dpkg-deb --fsys-tarfile '{}' | tar -xO --wildcards './usr/src/{pkg}.tar.xz' | tar -xJ",
            deb.display()
        );
        run_quiet(Command::new("sh").arg("-c").arg(script).current_dir(&src_parent))?;
        write(&src_done, version.as_bytes())?;
    }
    Ok(src)
}

/// The newest `linux-source-X.Y` in `apt-cache search` output.
pub fn pick_newest_source(search_output: &str) -> Option<String> {
    search_output
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| {
            n.strip_prefix("linux-source-").is_some_and(|v| {
                v.split('.').count() == 2 && v.split('.').all(|x| x.parse::<u32>().is_ok())
            })
        })
        .max_by_key(|n| version_key(n))
        .map(str::to_string)
}

/// The fragments merged as `merge_config.sh` merges them: for each option the last line
/// naming it wins, in the order options first appear; comments and blank lines dropped.
pub fn effective_fragment(fragments: &[String]) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut value: std::collections::HashMap<String, String> = Default::default();
    for f in fragments {
        for l in f.lines().map(str::trim) {
            let name = if let Some(rest) = l.strip_prefix("# ") {
                match rest.strip_suffix(" is not set") {
                    Some(n) if n.starts_with("CONFIG_") => n,
                    _ => continue,
                }
            } else if l.starts_with("CONFIG_") {
                l.split('=').next().unwrap_or(l)
            } else {
                continue;
            };
            if !value.contains_key(name) {
                order.push(name.to_string());
            }
            value.insert(name.to_string(), l.to_string());
        }
    }
    order.iter().map(|n| format!("{}\n", value[n])).collect()
}

pub(super) fn ensure(cache: &Path, kind: KernelKind, fragment_files: &[PathBuf]) -> Result<Kernel> {
    let mut texts = Vec::new();
    for f in fragment_files {
        texts.push(read(f)?);
    }
    let fragment_s = effective_fragment(&texts);
    let fragment = fragment_s.as_bytes();
    let (suite, pkg, version) = source_package(cache, kind)?;
    let key = custom_key(&version, fragment);
    let dir = cache.join("custom").join(&key);
    let image = dir.join("bzImage");
    // One build directory per source version, shared by every fragment: a changed fragment
    // rebuilds incrementally. The lock covers it.
    let _lock = lock(cache, &format!("custom-{version}"))?;
    let names: Vec<String> = fragment_files
        .iter()
        .map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
        .collect();
    let description = format!("{pkg} {version} + {} ({key})", names.join(" + "));
    if image.exists() {
        return Ok(Kernel { kind, image, modules: Vec::new(), description });
    }
    host::ensure_packages(host::BUILD_PACKAGES)?;
    let src = unpacked_source(cache, suite, &pkg, &version)?;
    let build = cache.join("custom").join(format!("build-{version}"));
    mkdir(&build)?;
    mkdir(&dir)?;
    let log_path = dir.join("build.log");
    let mut log =
        std::fs::File::create(&log_path).map_err(|e| LabError::io("create", &log_path, e))?;
    let jobs = std::thread::available_parallelism().map(|n| n.get() + 1).unwrap_or(3);
    let o = format!("O={}", build.display());
    let merged = build.join("vfio-lab-fragment.config");
    write(&merged, fragment)?;
    let steps: Vec<Vec<String>> = vec![
        // Builds use O=; a source tree something built in place refuses them.
        vec!["make".into(), "-s".into(), "mrproper".into()],
        vec!["make".into(), o.clone(), "allnoconfig".into()],
        vec![
            "scripts/kconfig/merge_config.sh".into(),
            "-m".into(),
            "-O".into(),
            build.display().to_string(),
            build.join(".config").display().to_string(),
            merged.display().to_string(),
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
        // Name the fragment file the line came from.
        let from = fragment_files
            .iter()
            .zip(&texts)
            .rev()
            .find(|(_, t)| t.lines().any(|l| l.trim() == option))
            .map(|(f, _)| f.clone())
            .unwrap_or_else(|| merged.clone());
        return Err(LabError::ConfigDropped { option, fragment: from });
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
    Ok(Kernel { kind, image, modules: Vec::new(), description })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_key_changes_with_fragment_and_version() {
        let k = custom_key("6.12.117-1", b"CONFIG_A=y\n");
        assert_eq!(k.len(), 16);
        assert_ne!(k, custom_key("6.12.118-1", b"CONFIG_A=y\n"));
        assert_ne!(k, custom_key("6.12.117-1", b"CONFIG_A=m\n"));
        assert_eq!(k, custom_key("6.12.117-1", b"CONFIG_A=y\n"));
    }

    #[test]
    fn missing_options_finds_dropped_lines() {
        let frag = "# comment\nCONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\nCONFIG_D=n\n";
        let cfg = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\n";
        assert_eq!(missing_options(frag, cfg), vec!["CONFIG_B=y", "# CONFIG_C is not set"]);
        assert!(missing_options("CONFIG_A=y\n", "CONFIG_A=y\n").is_empty());
    }

    #[test]
    fn later_fragment_lines_win() {
        let common = "# base\nCONFIG_A=y\nCONFIG_B=y\n\nCONFIG_C=y\n".to_string();
        let own = "# CONFIG_B is not set\nCONFIG_D=y\nCONFIG_A=m\n".to_string();
        assert_eq!(
            effective_fragment(&[common, own]),
            "CONFIG_A=m\n# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_D=y\n"
        );
    }

    #[test]
    fn picks_newest_kernel_source() {
        let out = "linux-source - meta\nlinux-source-7.2 - Linux 7.2\nlinux-source-7.10 - newer\n\
                   linux-source-6.12 - LTS\nlinux-source-7.2-rt - no\n";
        assert_eq!(pick_newest_source(out).as_deref(), Some("linux-source-7.10"));
        assert_eq!(pick_newest_source("linux-source - meta\n"), None);
    }

    #[test]
    fn the_committed_fragments_merge_without_contradiction() {
        for kind in [KernelKind::Custom, KernelKind::CustomNewest] {
            let texts: Vec<String> = super::super::fragment_paths(kind)
                .iter()
                .map(|p| std::fs::read_to_string(p).unwrap())
                .collect();
            let merged = effective_fragment(&texts);
            // VFIO's container is either the legacy one or iommufd's compat, never both.
            let legacy = merged.contains("CONFIG_VFIO_CONTAINER=y\n");
            let compat = merged.contains("CONFIG_IOMMUFD_VFIO_CONTAINER=y\n");
            assert!(legacy != compat, "{kind:?}: legacy {legacy}, compat {compat}");
        }
    }
}
