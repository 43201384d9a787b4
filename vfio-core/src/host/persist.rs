//! The boot-time configuration that binds devices to vfio-pci on every boot:
//! `options vfio-pci ids=...` so vfio-pci claims the ids, `softdep DRIVER pre: vfio-pci`
//! so it loads before the native driver, the VFIO modules in `modules-load.d`, then an
//! initramfs rebuild and a reboot.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::host::devices::read_device;
use crate::host::pci_ids::PciIds;
use crate::host::{doctor::initramfs_command, journal::read_journal, pci_addresses};
use crate::hostfs::HostFs;
use crate::pci::PciAddress;

/// The modprobe configuration file written.
pub const MODPROBE_CONF: &str = "/etc/modprobe.d/vfio.conf";
/// The modules-load configuration file written.
pub const MODULES_CONF: &str = "/etc/modules-load.d/vfio.conf";

/// What `persist` would write and run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PersistPlan {
    /// The devices to claim at boot.
    pub devices: Vec<PciAddress>,
    /// Their vendor:device ids.
    pub ids: Vec<String>,
    /// Native driver modules that must load after vfio-pci.
    pub softdeps: Vec<String>,
    /// Files and their contents.
    pub files: Vec<(PathBuf, String)>,
    /// Other devices with the same ids, which `ids=` claims too.
    pub also_claimed: Vec<PciAddress>,
    /// Commands to run afterwards.
    pub after: Vec<String>,
}

/// Plans the configuration for `devices` (those bound to vfio-pci now when empty).
pub fn plan_persist(fs: &dyn HostFs, devices: &[PciAddress]) -> Result<PersistPlan> {
    let ids_db = PciIds::default();
    let all = pci_addresses(fs)?;
    let chosen: Vec<PciAddress> = if devices.is_empty() {
        all.iter()
            .copied()
            .filter(|a| crate::host::current_driver(fs, *a).as_deref() == Some("vfio-pci"))
            .collect()
    } else {
        devices.to_vec()
    };
    if chosen.is_empty() {
        return Err(Error::NotFound {
            what: "devices to persist".into(),
            hint: Some(
                "bind them first (vfiotool bind ADDRESS) or name them: vfiotool persist ADDRESS..."
                    .into(),
            ),
        });
    }
    let journal = read_journal(fs).unwrap_or_default();
    let mut ids = vec![];
    let mut softdeps = vec![];
    let mut vga = false;
    for a in &chosen {
        let d = read_device(fs, *a, &ids_db)?;
        ids.push(format!("{:04x}:{:04x}", d.vendor, d.device));
        vga |= d.class >> 8 == 0x0300;
        let native = journal
            .devices
            .iter()
            .find(|e| e.address == a.to_string())
            .and_then(|e| e.driver.clone())
            .or(d.driver.clone())
            .filter(|n| n != "vfio-pci");
        if let Some(n) = native {
            softdeps.push(n.replace('-', "_"));
        }
    }
    ids.sort();
    ids.dedup();
    softdeps.sort();
    softdeps.dedup();
    let mut also = vec![];
    for a in &all {
        if chosen.contains(a) {
            continue;
        }
        if let Ok(d) = read_device(fs, *a, &ids_db) {
            if ids.contains(&format!("{:04x}:{:04x}", d.vendor, d.device)) {
                also.push(*a);
            }
        }
    }
    let mut conf =
        String::from("# vfio-pci claims these devices at boot (written by vfiotool persist).\n");
    conf += &format!(
        "options vfio-pci ids={}{}\n",
        ids.join(","),
        if vga { " disable_vga=1" } else { "" }
    );
    for s in &softdeps {
        conf += &format!("softdep {s} pre: vfio-pci\n");
    }
    let modules = "vfio\nvfio_iommu_type1\nvfio_pci\n".to_string();
    Ok(PersistPlan {
        devices: chosen,
        ids: ids.clone(),
        softdeps,
        files: vec![(MODPROBE_CONF.into(), conf), (MODULES_CONF.into(), modules)],
        also_claimed: also,
        after: vec![
            initramfs_command(fs).to_string(),
            "reboot".into(),
            format!("vfiotool list -d {}  (the driver column should read vfio-pci)", ids[0]),
        ],
    })
}

/// Writes the plan's files.
pub fn write_persist(fs: &dyn HostFs, plan: &PersistPlan) -> Result<()> {
    for (path, text) in &plan.files {
        if let Some(dir) = path.parent() {
            fs.create_dir_all(dir, 0o755).map_err(|e| Error::host("create directory", dir, e))?;
        }
        fs.replace_file(path, text.as_bytes(), 0o644).map_err(|e| Error::host("write", path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::bind::{bind, BindRequest};
    use crate::mock::{DeviceSpec, MockHost, SysState};
    use std::path::Path;

    #[test]
    fn options_softdeps_and_shared_ids() {
        let mut vga = DeviceSpec::new("0000:05:00.0").driver("nouveau").group(7);
        vga.vendor = 0x10de;
        vga.device = 0x1b80;
        vga.class = 0x030000;
        let h = MockHost::new([
            vga,
            DeviceSpec::edu("0000:00:04.0").driver("edu").group(1),
            DeviceSpec::edu("0000:00:05.0").driver("edu").group(2),
        ])
        .with_sys(|s| *s = SysState::intel_ready());
        let fs = h.fs();
        assert!(plan_persist(&*fs, &[]).is_err());
        bind(&*fs, &BindRequest::vfio("0000:00:04.0")).unwrap();
        bind(&*fs, &BindRequest::vfio("0000:05:00.0")).unwrap();
        let p = plan_persist(&*fs, &[]).unwrap();
        assert_eq!(p.ids, vec!["10de:1b80", "1234:11e8"]);
        assert_eq!(p.softdeps, vec!["edu", "nouveau"]);
        assert_eq!(p.also_claimed, vec![PciAddress::parse("00:05.0").unwrap()]);
        let conf = &p.files[0].1;
        assert!(
            conf.contains("options vfio-pci ids=10de:1b80,1234:11e8 disable_vga=1\n"),
            "{conf}"
        );
        assert!(conf.contains("softdep nouveau pre: vfio-pci\n"));
        assert_eq!(p.after[0], "update-initramfs -u -k all");
        write_persist(&*fs, &p).unwrap();
        assert_eq!(fs.read_string(Path::new(MODPROBE_CONF)).unwrap(), conf.trim());
        assert!(fs.read_string(Path::new(MODULES_CONF)).unwrap().contains("vfio_pci"));
    }
}
