//! Debian packages from the host's own suites and from others (sid for the newest kernel,
//! bookworm-backports for the newest QEMU), fetched by name into the lab cache.
//!
//! Another suite is reached with a private source list and package lists in
//! `$VFIO_LAB_CACHE/apt/<suite>/`: the host's apt configuration and state are never
//! touched, and nothing from another suite is installed on the host (packages are
//! downloaded and unpacked into the cache).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{LabError, Result};
use crate::host::{self, run_quiet};

/// Where a package comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// The host's configured suites (Debian 12 and its updates).
    Host,
    /// Debian's development suite: the newest kernel and its source.
    Sid,
    /// Debian 12's backports: the newest QEMU built for Debian 12.
    Backports,
}

impl Suite {
    /// The suite's name in a source line (None for the host's own configuration).
    pub fn name(self) -> Option<&'static str> {
        match self {
            Suite::Host => None,
            Suite::Sid => Some("sid"),
            Suite::Backports => Some("bookworm-backports"),
        }
    }
}

/// The mirror the host's own sources name, so other suites come from the same place.
pub fn host_mirror(sources: &str) -> Option<String> {
    for line in sources.lines().map(str::trim) {
        if let Some(uris) = line.strip_prefix("URIs:") {
            if let Some(u) = uris.split_whitespace().find(|u| !u.contains("security")) {
                return Some(u.trim_end_matches('/').to_string());
            }
        }
        if let Some(rest) = line.strip_prefix("deb ") {
            let url = rest.split_whitespace().find(|w| w.contains("://"));
            if let Some(u) = url.filter(|u| !u.contains("security")) {
                return Some(u.trim_end_matches('/').to_string());
            }
        }
    }
    None
}

fn mirror() -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir("/etc/apt/sources.list.d")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|f| f.extension().is_some_and(|x| x == "sources" || x == "list"))
        .collect();
    files.sort();
    files.push(PathBuf::from("/etc/apt/sources.list"));
    let text: String =
        files.iter().map(|f| std::fs::read_to_string(f).unwrap_or_default() + "\n").collect();
    host_mirror(&text).unwrap_or_else(|| "http://deb.debian.org/debian".to_string())
}

/// The private apt state of one suite.
struct Private {
    dir: PathBuf,
}

impl Private {
    fn new(cache: &Path, suite: &str) -> Result<Private> {
        let dir = cache.join("apt").join(suite);
        let lists = dir.join("lists").join("partial");
        std::fs::create_dir_all(&lists).map_err(|e| LabError::io("create directory", &lists, e))?;
        let list = dir.join("sources.list");
        let line = format!(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {} {suite} main\n",
            mirror()
        );
        if std::fs::read_to_string(&list).ok().as_deref() != Some(line.as_str()) {
            std::fs::write(&list, line).map_err(|e| LabError::io("write", &list, e))?;
        }
        Ok(Private { dir })
    }

    fn options(&self) -> Vec<String> {
        let d = |s: &str| self.dir.join(s).display().to_string();
        vec![
            "-o".into(),
            format!("Dir::Etc::SourceList={}", d("sources.list")),
            "-o".into(),
            "Dir::Etc::SourceParts=/dev/null".into(),
            "-o".into(),
            format!("Dir::State::Lists={}", d("lists")),
            "-o".into(),
            format!("Dir::Cache={}", d("cache")),
            // The lists are the lab's own; downloads run as the invoking user.
            "-o".into(),
            "APT::Sandbox::User=root".into(),
        ]
    }

    /// Whether the suite's package lists were fetched: without them apt answers from the
    /// host's dpkg status alone (an installed version would pass for the suite's).
    fn has_lists(&self) -> bool {
        std::fs::read_dir(self.dir.join("lists"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
    }

    fn update(&self) -> Result<()> {
        eprintln!("vfio-lab: apt-get update of {} (private lists)", self.dir.display());
        run_quiet(Command::new("apt-get").args(self.options()).args(["-q", "update"])).map(|_| ())
    }
}

/// Runs an `apt-cache` query in a suite; when `accept` rejects the answer (no lists yet,
/// or lists too old to name the package) the suite's lists are updated and it asks again.
pub fn query(
    cache: &Path,
    suite: Suite,
    args: &[&str],
    accept: impl Fn(&str) -> bool,
) -> Result<String> {
    let Some(name) = suite.name() else {
        return host::apt_cache(args, accept);
    };
    let p = Private::new(cache, name)?;
    if !p.has_lists() {
        p.update()?;
    }
    let ask = || run_quiet(Command::new("apt-cache").args(p.options()).args(args));
    let first = ask().unwrap_or_default();
    if accept(&first) {
        return Ok(first);
    }
    p.update()?;
    ask()
}

/// Downloads a package's .deb from a suite into `cache/debs` unless present; returns its
/// path. `version` (from [`query`]) keeps a stale .deb of another version from being used.
pub fn download(cache: &Path, suite: Suite, name: &str, version: Option<&str>) -> Result<PathBuf> {
    let debs = cache.join("debs");
    std::fs::create_dir_all(&debs).map_err(|e| LabError::io("create directory", &debs, e))?;
    let prefix = match version {
        // apt writes the epoch's colon as %3a.
        Some(v) => format!("{name}_{}_", v.replace(':', "%3a")),
        None => format!("{name}_"),
    };
    let find = || -> Result<Option<PathBuf>> {
        let rd = std::fs::read_dir(&debs).map_err(|e| LabError::io("read directory", &debs, e))?;
        Ok(rd.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
            p.file_name().is_some_and(|f| f.to_string_lossy().starts_with(&prefix))
                && p.extension().is_some_and(|x| x == "deb")
        }))
    };
    if let Some(p) = find()? {
        return Ok(p);
    }
    eprintln!(
        "vfio-lab: apt-get download {name}{}",
        suite.name().map(|s| format!(" ({s})")).unwrap_or_default()
    );
    let mut cmd = Command::new("apt-get");
    if let Some(s) = suite.name() {
        let p = Private::new(cache, s)?;
        if !p.has_lists() {
            p.update()?;
        }
        cmd.args(p.options());
    }
    // The exact version asked for: an installed package of the host must not stand in
    // for another suite's.
    let what = match version {
        Some(v) => format!("{name}={v}"),
        None => name.to_string(),
    };
    run_quiet(cmd.args(["download", &what]).current_dir(&debs))?;
    find()?.ok_or_else(|| LabError::NoPackage {
        what: name.into(),
        hint: "apt-get download produced no .deb; check the network and the suite's lists".into(),
    })
}

/// Unpacks .debs into `root` (with `dpkg -x`), unless `root/../ready` says it was done for
/// the same packages. Returns `root`.
pub fn unpack(debs: &[PathBuf], dir: &Path) -> Result<PathBuf> {
    let root = dir.join("root");
    let ready = dir.join("ready");
    let want: String = debs.iter().map(|d| format!("{}\n", d.display())).collect();
    if std::fs::read_to_string(&ready).ok().as_deref() == Some(want.as_str()) {
        return Ok(root);
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(&root).map_err(|e| LabError::io("create directory", &root, e))?;
    for d in debs {
        eprintln!("vfio-lab: extracting {}", d.display());
        run_quiet(Command::new("dpkg").arg("-x").arg(d).arg(&root))?;
    }
    std::fs::write(&ready, want).map_err(|e| LabError::io("write", &ready, e))?;
    Ok(root)
}

/// The `Version:` field of `apt-cache show` output (first stanza).
pub fn parse_show_version(show: &str) -> Option<String> {
    show.lines().find_map(|l| l.strip_prefix("Version:")).map(|v| v.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_from_deb822_and_one_line_sources() {
        let deb822 = "Types: deb\n# http://snapshot.debian.org/archive/debian/2025\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\n";
        assert_eq!(host_mirror(deb822).as_deref(), Some("http://deb.debian.org/debian"));
        let sec_first = "URIs: http://security.debian.org/debian-security\nURIs: http://ftp.de.debian.org/debian/\n";
        assert_eq!(host_mirror(sec_first).as_deref(), Some("http://ftp.de.debian.org/debian"));
        let one_line = "deb [arch=amd64] http://mirror.example/debian bookworm main\n";
        assert_eq!(host_mirror(one_line).as_deref(), Some("http://mirror.example/debian"));
        assert_eq!(host_mirror("# nothing\n"), None);
    }

    #[test]
    fn version_from_apt_cache_show() {
        let show =
            "Package: linux-source-7.2\nVersion: 7.2.13-1\nArchitecture: all\n\nVersion: 7.1.0-1\n";
        assert_eq!(parse_show_version(show).as_deref(), Some("7.2.13-1"));
        assert_eq!(parse_show_version("Package: x\n"), None);
    }

    #[test]
    fn unpack_is_skipped_when_done_for_the_same_packages() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("x");
        std::fs::create_dir_all(dir.join("root")).unwrap();
        std::fs::write(dir.join("root/marker"), b"kept").unwrap();
        let debs = vec![PathBuf::from("/nonexistent/a.deb")];
        std::fs::write(dir.join("ready"), "/nonexistent/a.deb\n").unwrap();
        let root = unpack(&debs, &dir).unwrap();
        assert!(root.join("marker").exists());
        // Another package list: unpacked again (and this one does not exist: an error).
        let other = vec![PathBuf::from("/nonexistent/b.deb")];
        assert!(unpack(&other, &dir).is_err());
        assert!(!dir.join("root/marker").exists());
    }
}
