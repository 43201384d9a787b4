//! Mediated devices: the parents, the types each offers, the instances, create and
//! remove.
//!
//! The parents are the kernel's list, `/sys/class/mdev_bus/NAME`: a link to each device
//! that registered mdev types, whatever its bus (a PCI GPU or NIC, the virtual `mtty`
//! sample, s390's `ap` matrix or a `ccw` subchannel). A parent is named by that link name,
//! which for a PCI device is its address (`0000:00:02.0`). Trees captured before the
//! list was read (older snapshots) still show PCI parents through their
//! `mdev_supported_types` directory.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::host::{device_path, pci_addresses, read_opt, resolve_link, write_text};
pub use crate::hostfs::is_uuid;
use crate::hostfs::{parse_uuid, HostFs, SysfsMdev, MDEV_BUS, MDEV_DEVICES};
use crate::pci::PciAddress;

/// The longest parent name accepted (a path component's limit).
const MAX_NAME: usize = 255;

/// A device that offers mediated device types, by the name the kernel lists it under in
/// `/sys/class/mdev_bus` (its device name: `0000:00:02.0`, `mtty`, `matrix`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct MdevParent(String);

impl MdevParent {
    /// A parent as a person names it: a PCI address, short or full (`00:02.0`, made
    /// canonical), or any other device name (`mtty`). A name must be one plain path
    /// component: no `/`, not `.` or `..`, no white space or control characters.
    pub fn parse(s: &str) -> Result<MdevParent> {
        match PciAddress::parse(s) {
            Ok(a) => Ok(MdevParent::from(a)),
            Err(_) => MdevParent::from_name(s),
        }
    }

    /// A parent by its exact device name, as sysfs lists it (no PCI canonicalisation);
    /// refused as in [`MdevParent::parse`].
    pub fn from_name(s: &str) -> Result<MdevParent> {
        let bad = |reason: &str| Error::Invalid {
            what: "mdev parent",
            input: s.chars().take(64).collect(),
            reason: format!("{reason}; expected a PCI address (00:02.0) or a device name (mtty)"),
        };
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if s.len() > MAX_NAME {
            return Err(bad(&format!("longer than {MAX_NAME} bytes")));
        }
        if s == "." || s == ".." || s.contains('/') {
            return Err(bad("not a plain device name"));
        }
        if s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == char::REPLACEMENT_CHARACTER)
        {
            return Err(bad("holds white space, control characters or invalid UTF-8"));
        }
        Ok(MdevParent(s.to_string()))
    }

    /// The device name (`0000:00:02.0`, `mtty`).
    pub fn name(&self) -> &str {
        &self.0
    }

    /// The PCI address, when the parent is a PCI device (its name is a canonical
    /// address).
    pub fn pci(&self) -> Option<PciAddress> {
        PciAddress::parse(&self.0).ok().filter(|a| a.to_string() == self.0)
    }
}

impl From<PciAddress> for MdevParent {
    fn from(a: PciAddress) -> Self {
        MdevParent(a.to_string())
    }
}

impl fmt::Display for MdevParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for MdevParent {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        MdevParent::parse(s)
    }
}

/// One mediated device type of a parent device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MdevType {
    /// The parent device.
    pub parent: MdevParent,
    /// Type id (directory name).
    pub id: String,
    /// `name`.
    pub name: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// `device_api`.
    pub device_api: Option<String>,
    /// `available_instances`.
    pub available: u32,
    /// Instances of this type (UUIDs).
    pub instances: Vec<String>,
}

/// One mediated device instance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MdevInstance {
    /// Its UUID.
    pub uuid: String,
    /// The parent device.
    pub parent: Option<MdevParent>,
    /// Its type id.
    pub type_id: Option<String>,
    /// Its IOMMU group (a virtual group of its own, `/dev/vfio/N`; `None` while no mdev
    /// driver has made it a VFIO device).
    pub iommu_group: Option<u32>,
}

/// The attributes of a type directory as read (`None`: absent or unreadable).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MdevTypeText {
    /// `name`.
    pub name: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// `device_api`.
    pub device_api: Option<String>,
    /// `available_instances`.
    pub available_instances: Option<String>,
}

/// Builds a type from its attributes' text: text attributes trimmed, an
/// `available_instances` that is not a number counted as 0. Pure; fuzzed.
pub fn parse_mdev_type(
    parent: MdevParent,
    id: String,
    text: &MdevTypeText,
    instances: Vec<String>,
) -> MdevType {
    let trimmed = |s: &Option<String>| s.as_deref().map(|s| s.trim().to_string());
    MdevType {
        parent,
        name: trimmed(&text.name),
        description: trimmed(&text.description),
        device_api: trimmed(&text.device_api),
        available: text
            .available_instances
            .as_deref()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0),
        instances,
        id,
    }
}

/// Every mdev parent of the host, sorted: the names in `/sys/class/mdev_bus`, and PCI
/// devices with an `mdev_supported_types` directory that the list lacks (a tree captured
/// without it). Names that cannot be a device name are left out.
pub fn parents(fs: &dyn HostFs) -> Result<Vec<MdevParent>> {
    let listed = fs.read_dir(Path::new(MDEV_BUS));
    let mut out: Vec<MdevParent> = match &listed {
        Ok(names) => names.iter().filter_map(|n| MdevParent::from_name(n).ok()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => return Err(Error::host("read directory", MDEV_BUS, clone_io(e))),
    };
    let pci = match pci_addresses(fs) {
        Ok(v) => v,
        Err(_) if listed.is_ok() => vec![],
        Err(e) => return Err(e),
    };
    for a in pci {
        if fs.exists(&device_path(a).join("mdev_supported_types")) {
            out.push(MdevParent::from(a));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn clone_io(e: &std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(n) => std::io::Error::from_raw_os_error(n),
        None => std::io::Error::new(e.kind(), e.to_string()),
    }
}

/// The sysfs directory of a parent: its `/sys/class/mdev_bus` link, or for a PCI device
/// missing from that list, its PCI directory when it offers types.
fn parent_dir(fs: &dyn HostFs, parent: &MdevParent) -> Option<PathBuf> {
    let listed = Path::new(MDEV_BUS).join(parent.name());
    if fs.exists(&listed) {
        return Some(listed);
    }
    let a = parent.pci()?;
    let dir = device_path(a);
    fs.exists(&dir.join("mdev_supported_types")).then_some(dir)
}

/// The types one parent offers (none when it is not a parent).
pub fn parent_types(fs: &dyn HostFs, parent: &MdevParent) -> Vec<MdevType> {
    let Some(dir) = parent_dir(fs, parent) else { return vec![] };
    let dir = dir.join("mdev_supported_types");
    let mut out = vec![];
    for id in fs.read_dir(&dir).unwrap_or_default() {
        if id.contains('/') || id.contains(char::REPLACEMENT_CHARACTER) {
            continue;
        }
        let t = dir.join(&id);
        let text = MdevTypeText {
            name: read_opt(fs, &t.join("name")),
            description: read_opt(fs, &t.join("description")),
            device_api: read_opt(fs, &t.join("device_api")),
            available_instances: read_opt(fs, &t.join("available_instances")),
        };
        let instances = fs.read_dir(&t.join("devices")).unwrap_or_default();
        out.push(parse_mdev_type(parent.clone(), id, &text, instances));
    }
    out
}

/// Every mdev type offered on the host, by parent.
pub fn list_types(fs: &dyn HostFs) -> Result<Vec<MdevType>> {
    Ok(parents(fs)?.iter().flat_map(|p| parent_types(fs, p)).collect())
}

/// Every mdev instance (`/sys/bus/mdev/devices`). The parent is the directory the
/// instance sits in (`/sys/devices/virtual/mtty/mtty/UUID` → `mtty`).
pub fn list_instances(fs: &dyn HostFs) -> Vec<MdevInstance> {
    let bus = Path::new(MDEV_DEVICES);
    fs.read_dir(bus)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|u| {
            let dev = SysfsMdev::new(fs, &u).ok()?;
            let link = bus.join(&u);
            let target = fs.read_link(&link).ok().map(|t| resolve_link(&link, &t));
            let parent = target
                .as_ref()
                .and_then(|t| t.parent())
                .and_then(|p| p.file_name())
                .and_then(|n| MdevParent::from_name(&n.to_string_lossy()).ok());
            Some(MdevInstance {
                parent,
                type_id: dev.type_id(),
                iommu_group: dev.iommu_group(),
                uuid: u,
            })
        })
        .collect()
}

/// A random (version 4) UUID.
pub fn random_uuid() -> String {
    let mut b = [0u8; 16];
    // SAFETY: getrandom writes at most `b.len()` bytes into the buffer we own.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 16 {
        let t =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let seed = t.as_nanos() ^ ((std::process::id() as u128) << 64);
        b = seed.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// The parents' names, for a hint.
fn parents_hint(fs: &dyn HostFs) -> String {
    let all = parents(fs).unwrap_or_default();
    if all.is_empty() {
        "no device offers mdev types (is the parent's driver loaded?)".into()
    } else {
        let names: Vec<&str> = all.iter().map(MdevParent::name).collect();
        format!("the mdev parents are {} (vfiotool mdev list)", names.join(", "))
    }
}

/// Creates an instance of `type_id` on `parent` with `uuid` (a random one when `None`).
/// `parent` is a PCI address, short or full, or another parent's name (`mtty`), as
/// [`MdevParent::parse`] takes it.
pub fn create(fs: &dyn HostFs, parent: &str, type_id: &str, uuid: Option<&str>) -> Result<String> {
    let parent = MdevParent::parse(parent)?;
    let Some(dir) = parent_dir(fs, &parent) else {
        return Err(Error::NotFound {
            what: format!("mdev parent {parent}"),
            hint: Some(parents_hint(fs)),
        });
    };
    let types = dir.join("mdev_supported_types");
    let plain = !type_id.is_empty() && type_id != "." && type_id != ".." && !type_id.contains('/');
    let t = types.join(type_id);
    if !plain || !fs.exists(&t) {
        let offered = fs.read_dir(&types).unwrap_or_default();
        return Err(Error::NotFound {
            what: format!("mdev type {type_id:?} on {parent}"),
            hint: Some(if offered.is_empty() {
                "the device offers no mdev types (is its driver loaded?)".into()
            } else {
                format!("types offered: {}", offered.join(", "))
            }),
        });
    }
    let uuid = match uuid {
        Some(u) => parse_uuid(u)?,
        None => random_uuid(),
    };
    write_text(fs, &t.join("create"), &uuid).map_err(|e| match e.errno() {
        Some(nix::errno::Errno::EUSERS) | Some(nix::errno::Errno::ENOSPC) => {
            e.with_hint("no instances of this type are available; remove one first")
        }
        Some(nix::errno::Errno::EEXIST) => e.with_hint("that UUID is already used"),
        _ => e,
    })?;
    Ok(uuid)
}

/// Removes an instance.
pub fn remove(fs: &dyn HostFs, uuid: &str) -> Result<()> {
    let dev = SysfsMdev::new(fs, uuid)?;
    if !dev.exists() {
        return Err(Error::NotFound {
            what: format!("mediated device {}", dev.uuid()),
            hint: Some("the instances are under /sys/bus/mdev/devices".into()),
        });
    }
    write_text(fs, &dev.path().join("remove"), "1")
}

#[cfg(all(test, feature = "mock"))]
mod tests {
    use super::*;
    use crate::mock::{DeviceSpec, MdevTypeSpec, MockHost, SimMdevParent};

    fn gpu() -> DeviceSpec {
        let mut gpu = DeviceSpec::new("0000:00:02.0").driver("i915").group(0);
        gpu.mdev_types = vec![MdevTypeSpec {
            id: "i915-GVTg_V5_4".into(),
            name: "GVTg_V5_4".into(),
            description: "low_gm_size: 128MB".into(),
            device_api: "vfio-pci".into(),
            max_instances: 1,
            device: None,
        }];
        gpu
    }

    #[test]
    fn lists_creates_and_removes() {
        let h = MockHost::new([gpu()]);
        let fs = h.fs();
        let p = MdevParent::parse("00:02.0").unwrap();
        assert_eq!((p.name(), p.pci()), ("0000:00:02.0", PciAddress::parse("00:02.0").ok()));
        assert_eq!(parents(&*fs).unwrap(), vec![p.clone()]);
        let t = list_types(&*fs).unwrap();
        assert_eq!(
            (&t[0].parent, t[0].id.as_str(), t[0].available, t[0].device_api.as_deref()),
            (&p, "i915-GVTg_V5_4", 1, Some("vfio-pci"))
        );
        let u = create(&*fs, "00:02.0", "i915-GVTg_V5_4", None).unwrap();
        assert!(is_uuid(&u) && u.as_bytes()[14] == b'4');
        let i = list_instances(&*fs);
        assert_eq!(
            i,
            vec![MdevInstance {
                uuid: u.clone(),
                parent: Some(p.clone()),
                type_id: Some("i915-GVTg_V5_4".into()),
                iommu_group: i[0].iommu_group,
            }]
        );
        let e = create(&*fs, "0000:00:02.0", "i915-GVTg_V5_4", None).unwrap_err().to_string();
        assert!(e.contains("no instances"), "{e}");
        assert!(create(&*fs, "00:02.0", "nope", None)
            .unwrap_err()
            .to_string()
            .contains("types offered: i915-GVTg_V5_4"));
        assert!(create(&*fs, "00:02.0", "i915-GVTg_V5_4", Some("xyz")).is_err());
        remove(&*fs, &u).unwrap();
        assert!(list_instances(&*fs).is_empty());
        assert!(remove(&*fs, &u).is_err());
    }

    #[test]
    fn a_virtual_parent_is_listed_by_the_mdev_bus_class() {
        let h = MockHost::new([gpu()]).with_sys(|s| s.mdev_parents.push(SimMdevParent::mtty()));
        let fs = h.fs();
        let names: Vec<String> = parents(&*fs).unwrap().iter().map(|p| p.to_string()).collect();
        assert_eq!(names, ["0000:00:02.0", "mtty"]);
        let mtty = MdevParent::parse("mtty").unwrap();
        let t = parent_types(&*fs, &mtty);
        let got: Vec<_> =
            t.iter().map(|t| (t.id.as_str(), t.available, t.description.is_none())).collect();
        assert_eq!(got, [("mtty-1", 24, true), ("mtty-2", 12, true)]);
        assert_eq!(t[1].name.as_deref(), Some("Dual port serial"));
        assert_eq!(list_types(&*fs).unwrap().len(), 3);
        let u =
            create(&*fs, "mtty", "mtty-2", Some("83B8F4F2-509F-382F-3C1E-E6BFE0FA1001")).unwrap();
        assert_eq!(u, "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001");
        let i = list_instances(&*fs);
        assert_eq!((i[0].parent.as_ref(), i[0].type_id.as_deref()), (Some(&mtty), Some("mtty-2")));
        assert_eq!(parent_types(&*fs, &mtty)[1].instances, vec![u.as_str()]);
        let e = create(&*fs, "nosuch", "mtty-1", None).unwrap_err().to_string();
        assert_eq!(
            e,
            "mdev parent nosuch not found; the mdev parents are 0000:00:02.0, mtty \
             (vfiotool mdev list)"
        );
        let e = create(&*fs, "mtty", "../mtty-1", None).unwrap_err().to_string();
        assert!(e.contains("types offered: mtty-1, mtty-2"), "{e}");
        remove(&*fs, &u).unwrap();
        assert!(list_instances(&*fs).is_empty());
        // Without its driver a PCI parent offers nothing and is not listed.
        h.set_driver(PciAddress::parse("00:02.0").unwrap(), None);
        let e = create(&*fs, "00:02.0", "i915-GVTg_V5_4", None).unwrap_err().to_string();
        assert!(
            e.starts_with("mdev parent 0000:00:02.0 not found; the mdev parents are mtty"),
            "{e}"
        );
    }

    #[test]
    fn parent_names_are_plain_device_names() {
        assert_eq!(MdevParent::parse("mtty").unwrap().pci(), None);
        assert_eq!(MdevParent::parse("0000:00:02.0").unwrap().name(), "0000:00:02.0");
        assert_eq!(MdevParent::from_name("0:00:02.0").unwrap().pci(), None, "not canonical");
        for bad in ["", ".", "..", "../mtty", "a/b", "a b", "a\nb", "x\u{fffd}"] {
            let e = MdevParent::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid mdev parent") && !e.contains('\n'), "{bad:?}: {e}");
        }
        assert!(MdevParent::parse(&"a".repeat(256)).is_err());
        let json = serde_json::to_string(&MdevParent::parse("00:02.0").unwrap()).unwrap();
        assert_eq!(json, "\"0000:00:02.0\"");
    }

    #[test]
    fn a_parent_missing_from_the_bus_list_is_found_by_its_pci_directory() {
        // A tree captured before /sys/class/mdev_bus was read: only the PCI directory.
        let dir = tempfile::tempdir().unwrap();
        let types = dir.path().join("sys/bus/pci/devices/0000:00:02.0/mdev_supported_types/t1");
        std::fs::create_dir_all(&types).unwrap();
        std::fs::write(types.join("available_instances"), "3\n").unwrap();
        let fs = crate::hostfs::RealFs::new(dir.path());
        let t = list_types(&fs).unwrap();
        assert_eq!(
            (t[0].parent.name(), t[0].id.as_str(), t[0].available),
            ("0000:00:02.0", "t1", 3)
        );
        // No sysfs at all: the error says so.
        let empty = tempfile::tempdir().unwrap();
        let e = list_types(&crate::hostfs::RealFs::new(empty.path())).unwrap_err().to_string();
        assert!(e.contains("is sysfs mounted?"), "{e}");
    }
}
