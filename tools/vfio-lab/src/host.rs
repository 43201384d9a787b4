//! Host-side helpers: running commands, installing packages, building the static binaries.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{LabError, Result};

/// Debian packages the VM needs on the host (QEMU, busybox, initramfs tools, the iPXE ROMs,
/// kmod's depmod for the stock modules, xz for decompressing them).
pub const VM_PACKAGES: &[&str] =
    &["qemu-system-x86", "busybox-static", "cpio", "ipxe-qemu", "xz-utils", "kmod", "pciutils"];

/// Debian packages the custom kernel build needs.
pub const BUILD_PACKAGES: &[&str] =
    &["make", "gcc", "flex", "bison", "bc", "libelf-dev", "libssl-dev", "xz-utils"];

/// Renders a command line for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command to completion, failing with its status and the tail of its output.
pub fn run_quiet(cmd: &mut Command) -> Result<String> {
    let what = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::Command { command: what.clone(), detail: e.to_string() })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(LabError::Command {
            command: what,
            detail: format!("{}: {}", out.status, tail(&format!("{stdout}{stderr}"), 20)),
        });
    }
    Ok(stdout)
}

/// Runs a command with inherited stdout/stderr (for long, chatty steps like cargo).
pub fn run_inherit(cmd: &mut Command) -> Result<()> {
    let what = describe(cmd);
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .map_err(|e| LabError::Command { command: what.clone(), detail: e.to_string() })?;
    if !status.success() {
        return Err(LabError::Command { command: what, detail: status.to_string() });
    }
    Ok(())
}

/// The last `n` lines of a text.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether a Debian package is installed, per dpkg's status database.
fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .stderr(Stdio::null())
        .output()
        .map(|o| parse_dpkg_installed(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or(false)
}

/// Whether a `dpkg-query -f='${Status}'` line says the package is installed.
pub fn parse_dpkg_installed(status: &str) -> bool {
    status.trim().ends_with(" installed") && status.starts_with("install ")
}

/// Prefix for commands that need root: nothing when root, `sudo -n` otherwise.
fn root_prefix() -> Vec<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        Vec::new()
    } else {
        vec!["sudo".into(), "-n".into()]
    }
}

/// Installs the missing ones among `pkgs` with `apt-get update` + `apt-get install -y`.
pub fn ensure_packages(pkgs: &[&str]) -> Result<()> {
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("vfio-lab: installing {}", missing.join(" "));
    apt_update()?;
    let mut args = vec!["apt-get", "install", "-y", "--no-install-recommends"];
    args.extend(&missing);
    run_quiet(&mut as_root(&args))?;
    Ok(())
}

/// A command run as root (directly when root, through `sudo -n` otherwise).
fn as_root(args: &[&str]) -> Command {
    let mut all: Vec<String> = root_prefix();
    all.extend(args.iter().map(|s| s.to_string()));
    let mut c = Command::new(&all[0]);
    c.args(&all[1..]).env("DEBIAN_FRONTEND", "noninteractive");
    c
}

/// Refreshes apt's package lists.
pub fn apt_update() -> Result<()> {
    run_quiet(&mut as_root(&["apt-get", "update"])).map(|_| ())
}

/// Runs an `apt-cache` query; when `accept` rejects the answer (fresh machine, empty lists),
/// runs `apt-get update` once and asks again.
pub fn apt_cache(args: &[&str], accept: impl Fn(&str) -> bool) -> Result<String> {
    let first = run_quiet(Command::new("apt-cache").args(args)).unwrap_or_default();
    if accept(&first) {
        return Ok(first);
    }
    apt_update()?;
    run_quiet(Command::new("apt-cache").args(args))
}

/// The workspace root (this crate lives in `tools/vfio-lab`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// What to build statically for the guest.
#[derive(Debug, Clone)]
pub struct StaticBuild {
    /// Workspace packages whose binaries go to the guest's `/bin`.
    pub packages: Vec<String>,
    /// Also build those packages' examples (they go to `/bin` too).
    pub examples: bool,
}

/// The target triple the static binaries are built for.
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

/// The library's checks against the real kernel (package, binary): the suite builds them
/// and runs them from the guest's `/tests` in every boot.
pub const VM_CHECKS: (&str, &str) = ("vfio-tests", "vfio-vm-checks");

/// The target directory of the static builds: `$CARGO_TARGET_DIR/lab-static`.
fn static_target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("lab-static")
}

/// A `cargo build` of static release binaries for the guest.
fn static_cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "--release", "--target", STATIC_TARGET])
        .arg("--target-dir")
        .arg(static_target_dir())
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    cmd
}

/// Builds one binary of one package statically and returns its path.
pub fn build_static_bin(package: &str, bin: &str) -> Result<PathBuf> {
    let mut cmd = static_cargo();
    cmd.args(["-p", package, "--bin", bin]);
    eprintln!("vfio-lab: building {}", describe(&cmd));
    run_inherit(&mut cmd)?;
    Ok(static_target_dir().join(STATIC_TARGET).join("release").join(bin))
}

/// Builds the benchmark binary (`benches/benches/hot_paths.rs`) statically and returns it
/// under the stable name `hot_paths` (cargo names bench executables with a hash).
pub fn build_static_bench() -> Result<PathBuf> {
    let mut cmd = static_cargo();
    cmd.args(["-p", "vfio-benches", "--bench", "hot_paths"]);
    eprintln!("vfio-lab: building {}", describe(&cmd));
    run_inherit(&mut cmd)?;
    let deps = static_target_dir().join(STATIC_TARGET).join("release").join("deps");
    let rd = std::fs::read_dir(&deps).map_err(|e| LabError::io("read directory", &deps, e))?;
    let newest = rd
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("hot_paths-") && !n.contains('.')
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max()
        .map(|(_, p)| p)
        .ok_or_else(|| LabError::Usage(format!("no hot_paths benchmark in {}", deps.display())))?;
    let dir = static_target_dir().join("lab-bench");
    std::fs::create_dir_all(&dir).map_err(|e| LabError::io("create directory", &dir, e))?;
    let out = dir.join("hot_paths");
    std::fs::copy(&newest, &out).map_err(|e| LabError::io("copy", &newest, e))?;
    Ok(out)
}

/// Builds the project's binaries statically (glibc, `+crt-static`) in a separate target
/// directory and returns the executables produced.
pub fn build_static(spec: &StaticBuild) -> Result<Vec<PathBuf>> {
    if spec.packages.is_empty() {
        return Ok(Vec::new());
    }
    let target_dir = static_target_dir();
    let mut cmd = static_cargo();
    cmd.arg("--bins");
    if spec.examples {
        cmd.arg("--examples");
    }
    for p in &spec.packages {
        cmd.args(["-p", p]);
    }
    eprintln!("vfio-lab: building static binaries: {}", describe(&cmd));
    run_inherit(&mut cmd)?;
    let rel = target_dir.join(STATIC_TARGET).join("release");
    let mut out = executables_in(&rel)?;
    if spec.examples {
        out.extend(executables_in(&rel.join("examples"))?);
    }
    Ok(out)
}

/// Regular executable files directly in `dir` (no build-script or hash-suffixed leftovers).
pub fn executables_in(dir: &Path) -> Result<Vec<PathBuf>> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(LabError::io("read directory", dir, e)),
    };
    for ent in rd {
        let ent = ent.map_err(|e| LabError::io("read directory", dir, e))?;
        let path = ent.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let name = ent.file_name();
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 && is_plain_name(&name) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// A binary name cargo gives a final artifact: no extension, no `-<hash>` suffix.
fn is_plain_name(name: &OsStr) -> bool {
    let n = name.to_string_lossy();
    if n.contains('.') {
        return false;
    }
    match n.rsplit_once('-') {
        Some((_, h)) => !(h.len() == 16 && h.chars().all(|c| c.is_ascii_hexdigit())),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status_parsing() {
        assert!(parse_dpkg_installed("install ok installed"));
        assert!(!parse_dpkg_installed("deinstall ok config-files"));
        assert!(!parse_dpkg_installed(""));
    }

    #[test]
    fn plain_names_exclude_hashed_and_dotted() {
        assert!(is_plain_name(OsStr::new("vfiotool")));
        assert!(is_plain_name(OsStr::new("edu-driver")));
        assert!(!is_plain_name(OsStr::new("edu_driver-0123456789abcdef")));
        assert!(!is_plain_name(OsStr::new("vfiotool.d")));
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }

    #[test]
    fn executables_are_found_and_filtered() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        for (n, mode) in [("tool", 0o755), ("data", 0o644), ("x.d", 0o755)] {
            let p = d.path().join(n);
            std::fs::write(&p, b"x").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let found = executables_in(d.path()).unwrap();
        assert_eq!(found, vec![d.path().join("tool")]);
        assert!(executables_in(&d.path().join("missing")).unwrap().is_empty());
    }
}
