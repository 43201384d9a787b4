//! Capturing the files the toolkit reads from a host into a directory.
//!
//! The result is a real tree (symbolic links kept, relative as sysfs has them) that
//! [`RealFs::new(dir)`](crate::hostfs::RealFs::new) or `vfiotool --sysfs-root DIR` reads
//! back: a host's PCI devices, drivers, IOMMU groups and units, the VFIO modules'
//! parameters, the command line, mounts, routes and the boot configuration. Write-only
//! attributes, BAR resources and option ROMs are left out; device nodes become empty
//! files.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::host::{resolve_link, PCI_DEVICES};
use crate::hostfs::{HostFs, NodeKind, RealFs};

/// What a snapshot copied.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotReport {
    /// Regular files written.
    pub files: usize,
    /// Symbolic links made.
    pub links: usize,
    /// Directories made.
    pub dirs: usize,
    /// Paths that could not be read, with the reason.
    pub skipped: Vec<String>,
}

struct Copier<'a> {
    fs: &'a dyn HostFs,
    dest: RealFs,
    report: SnapshotReport,
}

const VFIO_MODULES: [&str; 7] =
    ["vfio", "vfio_iommu_type1", "vfio_pci", "vfio_pci_core", "vfio_virqfd", "iommufd", "kvm"];

const SINGLE_FILES: [&str; 12] = [
    "/proc/cmdline",
    "/proc/mounts",
    "/proc/net/route",
    "/proc/sys/kernel/osrelease",
    "/proc/self/limits",
    "/proc/cpuinfo",
    "/etc/default/grub",
    "/etc/kernel/cmdline",
    "/etc/passwd",
    "/usr/share/misc/pci.ids",
    "/usr/share/hwdata/pci.ids",
    "/var/log/kern.log",
];

/// Tools whose presence `doctor` uses to pick a fix; copied as empty marker files.
const TOOLS: [&str; 9] = [
    "/usr/sbin/update-grub",
    "/usr/sbin/update-initramfs",
    "/usr/sbin/proxmox-boot-tool",
    "/usr/bin/dracut",
    "/usr/sbin/dracut",
    "/usr/bin/bootctl",
    "/sbin/update-grub",
    "/sbin/update-initramfs",
    "/etc/kernel/proxmox-boot-uuids",
];

fn skip_name(name: &str) -> bool {
    name == "rom"
        || name == "remove"
        || name == "reset"
        || name == "rescan"
        || name.starts_with("resource") && name.len() > "resource".len()
}

impl Copier<'_> {
    fn target(&self, p: &Path) -> Result<PathBuf> {
        self.dest.display_path(p).map_err(|e| Error::host("resolve", p, e))
    }

    fn mkdir(&mut self, p: &Path) -> Result<()> {
        let t = self.target(p)?;
        if !t.is_dir() {
            std::fs::create_dir_all(&t).map_err(|e| Error::host("create directory", &t, e))?;
            self.report.dirs += 1;
        }
        Ok(())
    }

    fn put_file(&mut self, p: &Path, data: &[u8]) -> Result<()> {
        if let Some(parent) = p.parent() {
            self.mkdir(parent)?;
        }
        let t = self.target(p)?;
        std::fs::write(&t, data).map_err(|e| Error::host("write", &t, e))?;
        self.report.files += 1;
        Ok(())
    }

    fn copy_file(&mut self, p: &Path) -> Result<()> {
        match self.fs.read(p) {
            Ok(data) => self.put_file(p, &data),
            Err(e) => {
                self.report.skipped.push(format!("{}: {e}", p.display()));
                Ok(())
            }
        }
    }

    fn copy_link(&mut self, p: &Path) -> Result<Option<PathBuf>> {
        let Ok(target) = self.fs.read_link(p) else { return Ok(None) };
        if let Some(parent) = p.parent() {
            self.mkdir(parent)?;
        }
        let t = self.target(p)?;
        if std::fs::symlink_metadata(&t).is_err() {
            std::os::unix::fs::symlink(&target, &t).map_err(|e| Error::host("symlink", &t, e))?;
            self.report.links += 1;
        }
        Ok(Some(resolve_link(p, &target)))
    }

    /// Copies `p` and, for directories, `depth` levels below it (links are not followed).
    fn tree(&mut self, p: &Path, depth: u32) -> Result<()> {
        let Ok(meta) = self.fs.metadata(p) else { return Ok(()) };
        match meta.kind {
            NodeKind::Symlink => {
                self.copy_link(p)?;
            }
            NodeKind::Dir => {
                self.mkdir(p)?;
                if depth > 0 {
                    for n in self.fs.read_dir(p).unwrap_or_default() {
                        if !skip_name(&n) {
                            self.tree(&p.join(&n), depth - 1)?;
                        }
                    }
                }
            }
            NodeKind::File if meta.mode & 0o444 != 0 => self.copy_file(p)?,
            NodeKind::CharDevice => self.put_file(p, b"")?,
            _ => {}
        }
        Ok(())
    }

    /// Copies a link and the directory it points to.
    fn link_and_target(&mut self, link: &Path, depth: u32) -> Result<()> {
        if let Some(t) = self.copy_link(link)? {
            self.tree(&t, depth)?;
        }
        Ok(())
    }
}

/// Copies the host's relevant files from `fs` into the directory `dest`.
pub fn snapshot(fs: &dyn HostFs, dest: &Path) -> Result<SnapshotReport> {
    std::fs::create_dir_all(dest).map_err(|e| Error::host("create directory", dest, e))?;
    let mut c = Copier { fs, dest: RealFs::new(dest), report: SnapshotReport::default() };
    let devices = Path::new(PCI_DEVICES);
    c.mkdir(devices)?;
    for n in fs.read_dir(devices).map_err(|e| Error::host("read directory", devices, e))? {
        let link = devices.join(&n);
        if let Some(dir) = c.copy_link(&link)? {
            c.tree(&dir, 1)?;
            c.tree(&dir.join("mdev_supported_types"), 3)?;
            c.tree(&dir.join("vfio-dev"), 2)?;
        }
    }
    c.tree(Path::new("/sys/bus/pci/drivers"), 2)?;
    c.tree(Path::new("/sys/bus/mdev/devices"), 1)?;
    c.tree(Path::new("/sys/kernel/iommu_groups"), 3)?;
    for n in fs.read_dir(Path::new("/sys/class/iommu")).unwrap_or_default() {
        c.link_and_target(&Path::new("/sys/class/iommu").join(n), 2)?;
    }
    c.mkdir(Path::new("/sys/class/iommu"))?;
    for m in VFIO_MODULES {
        c.tree(&Path::new("/sys/module").join(m), 2)?;
    }
    c.tree(Path::new("/sys/class/net"), 1)?;
    c.tree(Path::new("/sys/block"), 1)?;
    for f in SINGLE_FILES {
        if fs.exists(Path::new(f)) {
            c.copy_file(Path::new(f))?;
        }
    }
    for d in ["/etc/modprobe.d", "/etc/modules-load.d", "/dev/vfio"] {
        c.tree(Path::new(d), 1)?;
    }
    c.tree(Path::new("/dev/iommu"), 0)?;
    for t in TOOLS {
        if fs.exists(Path::new(t)) {
            c.put_file(Path::new(t), b"")?;
        }
    }
    Ok(c.report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::doctor::{run_checks, DoctorOptions};
    use crate::host::{devices::list_devices, groups::list_groups, pci_ids::PciIds};
    use crate::mock::sysfs::SimNet;
    use crate::mock::{DeviceSpec, MockHost, SysState};

    #[test]
    fn a_snapshot_reads_back_like_the_host() {
        let h = MockHost::new([
            DeviceSpec::bridge("0000:00:1c.0").driver("pcieport").group(2),
            DeviceSpec::nvme("0000:01:00.0").driver("nvme").group(2),
            DeviceSpec::edu("0000:00:04.0").driver("vfio-pci").group(1),
        ])
        .with_sys(|s| {
            *s = SysState::intel_ready();
            s.load_vfio();
            s.nets.push(SimNet {
                name: "eth0".into(),
                device: crate::PciAddress::parse("01:00.0").unwrap(),
                default_route: true,
                ipv4: vec![],
            });
        });
        let fs = h.fs();
        let dir = tempfile::tempdir().unwrap();
        let r = snapshot(&*fs, dir.path()).unwrap();
        assert!(r.files > 20 && r.links > 5, "{r:?}");
        let back = RealFs::new(dir.path());
        let ids = PciIds::default();
        assert_eq!(
            list_devices(&back, &ids).unwrap().items,
            list_devices(&*fs, &ids).unwrap().items
        );
        let g1: Vec<(u32, bool)> =
            list_groups(&*fs, &ids).unwrap().items.iter().map(|g| (g.id, g.viable)).collect();
        let g2: Vec<(u32, bool)> =
            list_groups(&back, &ids).unwrap().items.iter().map(|g| (g.id, g.viable)).collect();
        assert_eq!(g1, g2);
        let c1 = run_checks(&*fs, &DoctorOptions::default());
        let c2 = run_checks(&back, &DoctorOptions::default());
        for id in ["iommu", "interrupt-remapping", "module:vfio_pci", "acs-override"] {
            let s =
                |c: &[crate::host::doctor::Check]| c.iter().find(|x| x.id == id).map(|x| x.status);
            assert_eq!(s(&c1), s(&c2), "{id}");
        }
        assert_eq!(
            crate::host::guards::host_uses(&back, crate::PciAddress::parse("01:00.0").unwrap()),
            crate::host::guards::host_uses(&*fs, crate::PciAddress::parse("01:00.0").unwrap())
        );
        assert!(std::fs::symlink_metadata(dir.path().join("sys/bus/pci/devices/0000:00:04.0"))
            .unwrap()
            .file_type()
            .is_symlink());
    }
}
