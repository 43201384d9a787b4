//! Mediated devices: the types a parent offers, the instances, create and remove.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::host::{device_path, pci_addresses, read_opt, resolve_link, write_text};
pub use crate::hostfs::is_uuid;
use crate::hostfs::HostFs;
use crate::pci::PciAddress;

/// One mediated device type of a parent device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MdevType {
    /// The parent device.
    pub parent: PciAddress,
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
    pub parent: Option<PciAddress>,
    /// Its type id.
    pub type_id: Option<String>,
}

fn types_dir(a: PciAddress) -> PathBuf {
    device_path(a).join("mdev_supported_types")
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
    parent: PciAddress,
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

/// Every mdev type offered on the host.
pub fn list_types(fs: &dyn HostFs) -> Result<Vec<MdevType>> {
    let mut out = vec![];
    for a in pci_addresses(fs)? {
        let dir = types_dir(a);
        for id in fs.read_dir(&dir).unwrap_or_default() {
            let t = dir.join(&id);
            let text = MdevTypeText {
                name: read_opt(fs, &t.join("name")),
                description: read_opt(fs, &t.join("description")),
                device_api: read_opt(fs, &t.join("device_api")),
                available_instances: read_opt(fs, &t.join("available_instances")),
            };
            let instances = fs.read_dir(&t.join("devices")).unwrap_or_default();
            out.push(parse_mdev_type(a, id, &text, instances));
        }
    }
    Ok(out)
}

/// Every mdev instance (`/sys/bus/mdev/devices`).
pub fn list_instances(fs: &dyn HostFs) -> Vec<MdevInstance> {
    let bus = Path::new("/sys/bus/mdev/devices");
    fs.read_dir(bus)
        .unwrap_or_default()
        .into_iter()
        .map(|u| {
            let link = bus.join(&u);
            let target = fs.read_link(&link).ok().map(|t| resolve_link(&link, &t));
            let parent = target
                .as_ref()
                .and_then(|t| t.parent())
                .and_then(|p| p.file_name())
                .and_then(|n| PciAddress::parse(&n.to_string_lossy()).ok());
            let type_id = crate::host::link_name(fs, &link.join("mdev_type"));
            MdevInstance { uuid: u, parent, type_id }
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

/// Creates an instance of `type_id` on `parent` with `uuid` (a random one when `None`).
pub fn create(
    fs: &dyn HostFs,
    parent: PciAddress,
    type_id: &str,
    uuid: Option<&str>,
) -> Result<String> {
    crate::host::require_device(fs, parent)?;
    let t = types_dir(parent).join(type_id);
    if !fs.exists(&t) {
        let offered = fs.read_dir(&types_dir(parent)).unwrap_or_default();
        return Err(Error::NotFound {
            what: format!("mdev type {type_id} on {parent}"),
            hint: Some(if offered.is_empty() {
                "the device offers no mdev types (is its driver loaded?)".into()
            } else {
                format!("types offered: {}", offered.join(", "))
            }),
        });
    }
    let uuid = match uuid {
        Some(u) if is_uuid(u) => u.to_ascii_lowercase(),
        Some(u) => return Err(Error::Invalid {
            what: "UUID",
            input: u.into(),
            reason:
                "expected 8-4-4-4-12 hexadecimal digits, e.g. 83b8f4f2-509f-382f-3c1e-e6bfe0fa1001"
                    .into(),
        }),
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
    let p = Path::new("/sys/bus/mdev/devices").join(uuid);
    if !fs.exists(&p) {
        return Err(Error::NotFound {
            what: format!("mediated device {uuid}"),
            hint: Some("the instances are under /sys/bus/mdev/devices".into()),
        });
    }
    write_text(fs, &p.join("remove"), "1")
}

#[cfg(all(test, feature = "mock"))]
mod tests {
    use super::*;
    use crate::mock::{DeviceSpec, MdevTypeSpec, MockHost};

    #[test]
    fn lists_creates_and_removes() {
        let mut gpu = DeviceSpec::new("0000:00:02.0").driver("i915").group(0);
        gpu.mdev_types = vec![MdevTypeSpec {
            id: "i915-GVTg_V5_4".into(),
            name: "GVTg_V5_4".into(),
            description: "low_gm_size: 128MB".into(),
            device_api: "vfio-pci".into(),
            max_instances: 1,
        }];
        let h = MockHost::new([gpu]);
        let fs = h.fs();
        let p = PciAddress::parse("00:02.0").unwrap();
        let t = list_types(&*fs).unwrap();
        assert_eq!(
            (t[0].id.as_str(), t[0].available, t[0].device_api.as_deref()),
            ("i915-GVTg_V5_4", 1, Some("vfio-pci"))
        );
        let u = create(&*fs, p, "i915-GVTg_V5_4", None).unwrap();
        assert!(is_uuid(&u) && u.as_bytes()[14] == b'4');
        let i = list_instances(&*fs);
        assert_eq!(
            i,
            vec![MdevInstance {
                uuid: u.clone(),
                parent: Some(p),
                type_id: Some("i915-GVTg_V5_4".into())
            }]
        );
        let e = create(&*fs, p, "i915-GVTg_V5_4", None).unwrap_err().to_string();
        assert!(e.contains("no instances"), "{e}");
        assert!(create(&*fs, p, "nope", None)
            .unwrap_err()
            .to_string()
            .contains("types offered: i915-GVTg_V5_4"));
        assert!(create(&*fs, p, "i915-GVTg_V5_4", Some("xyz")).is_err());
        remove(&*fs, &u).unwrap();
        assert!(list_instances(&*fs).is_empty());
        assert!(remove(&*fs, &u).is_err());
    }
}
