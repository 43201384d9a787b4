//! The QEMU the lab runs: the release's own (`qemu-system-x86`, installed on the host) or
//! the newest Debian builds for this release (bookworm-backports), fetched by package name
//! and unpacked into the lab cache, so the host keeps its own QEMU and both can run.
//!
//! The newest QEMU brings devices the release's lacks: `igb` (an 82576 with SR-IOV VFs).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::apt::{self, Suite};
use crate::error::{LabError, Result};
use crate::host::run_quiet;

/// Which QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QemuKind {
    /// The host's `qemu-system-x86_64` (Debian 12: QEMU 7.2).
    Host,
    /// The newest QEMU of the release's backports (QEMU 10 for Debian 12), from the cache.
    Newest,
}

/// A QEMU ready to run.
#[derive(Debug, Clone)]
pub struct Qemu {
    /// The binary.
    pub binary: PathBuf,
    /// Firmware directories, each passed with `-L` (empty: QEMU's built-in search path).
    pub firmware: Vec<PathBuf>,
    /// Environment for the process (the module directory of an unpacked QEMU).
    pub env: Vec<(String, String)>,
    /// `major.minor.patch` as `qemu -version` prints it.
    pub version: String,
}

impl Qemu {
    /// The host's QEMU at `binary` (its version asked from the binary).
    pub fn host(binary: &Path) -> Result<Qemu> {
        let mut q = Qemu {
            binary: binary.to_path_buf(),
            firmware: vec![],
            env: vec![],
            version: "".into(),
        };
        q.version = q.ask_version()?;
        Ok(q)
    }

    /// Whether this QEMU emulates `igb` (QEMU 8.0 and later).
    pub fn has_igb(&self) -> bool {
        parse_major(&self.version).is_some_and(|m| m >= 8)
    }

    /// A `Command` for this QEMU with its environment and firmware paths.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        for d in &self.firmware {
            c.arg("-L").arg(d);
        }
        c
    }

    fn ask_version(&self) -> Result<String> {
        let out = run_quiet(self.command().arg("-version")).map_err(|e| LabError::Command {
            command: format!("{} -version", self.binary.display()),
            detail: format!("{e} (apt-get install qemu-system-x86)"),
        })?;
        parse_version(&out).ok_or_else(|| LabError::Command {
            command: format!("{} -version", self.binary.display()),
            detail: format!("no version in {out:?}"),
        })
    }
}

/// `10.0.2` from `QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2...)`.
pub fn parse_version(out: &str) -> Option<String> {
    let rest = out.lines().next()?.split("version ").nth(1)?;
    let v = rest.split_whitespace().next()?;
    v.split('.').all(|p| p.parse::<u32>().is_ok()).then(|| v.to_string())
}

fn parse_major(version: &str) -> Option<u32> {
    version.split('.').next()?.parse().ok()
}

/// The newest QEMU: `qemu-system-x86`, its common and data packages and the SeaBIOS it
/// wants, from the release's backports, unpacked into `$VFIO_LAB_CACHE/qemu/<version>/`.
pub fn ensure_newest(cache: &Path) -> Result<Qemu> {
    let show = apt::query(
        cache,
        Suite::Backports,
        &["show", "--no-all-versions", "qemu-system-x86"],
        |o| apt::parse_show_version(o).is_some(),
    )?;
    let version = apt::parse_show_version(&show).ok_or_else(|| LabError::NoPackage {
        what: "qemu-system-x86 (bookworm-backports)".into(),
        hint: "the backports lists name no QEMU; check the mirror".into(),
    })?;
    let seabios =
        apt::query(cache, Suite::Backports, &["show", "--no-all-versions", "seabios"], |o| {
            apt::parse_show_version(o).is_some()
        })
        .ok()
        .and_then(|s| apt::parse_show_version(&s));
    let mut debs = Vec::new();
    for p in ["qemu-system-x86", "qemu-system-common", "qemu-system-data"] {
        debs.push(apt::download(cache, Suite::Backports, p, Some(&version))?);
    }
    debs.push(apt::download(cache, Suite::Backports, "seabios", seabios.as_deref())?);
    let dir = cache.join("qemu").join(version.replace([':', '/'], "_"));
    let root = apt::unpack(&debs, &dir)?;
    let modules = root.join("usr/lib/x86_64-linux-gnu/qemu");
    let q = Qemu {
        binary: root.join("usr/bin/qemu-system-x86_64"),
        // The data package's ROM links point into ../seabios and the host's ipxe-qemu.
        firmware: vec![
            root.join("usr/share/qemu"),
            root.join("usr/share/seabios"),
            PathBuf::from("/usr/lib/ipxe/qemu"),
        ],
        env: vec![("QEMU_MODULE_DIR".into(), modules.display().to_string())],
        version: String::new(),
    };
    let version = q.ask_version()?;
    Ok(Qemu { version, ..q })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        let ten = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright";
        assert_eq!(parse_version(ten).as_deref(), Some("10.0.2"));
        let seven = "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\n";
        assert_eq!(parse_version(seven).as_deref(), Some("7.2.22"));
        assert_eq!(parse_version("garbage"), None);
        assert_eq!(parse_major("10.0.2"), Some(10));
    }

    #[test]
    fn igb_needs_qemu_8() {
        let q =
            |v: &str| Qemu { binary: "q".into(), firmware: vec![], env: vec![], version: v.into() };
        assert!(!q("7.2.22").has_igb());
        assert!(q("8.0.0").has_igb());
        assert!(q("10.0.2").has_igb());
    }
}
