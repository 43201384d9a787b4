//! The bind journal: what every device moved by `bind` looked like before, so that
//! `restore` can put it back, even after a crash.
//!
//! The journal [`JOURNAL`] lives in the run directory (`0700`, see
//! [`crate::host::lock`]) as a `0600` JSON file. It is replaced atomically
//! ([`HostFs::replace_file`]) and only under the host lock, so a kill at any moment
//! leaves the old or the new journal, never a torn one; an empty, cut or unparsable
//! journal is refused with a fix instead of being read as "nothing to restore".
//!
//! It records, per device, the state *before the first* bind (a later re-bind to another
//! driver keeps it), and per group node the owner before the first `--user` (so every
//! `chown` vfiotool makes is undone). Entries are checked before they are written and
//! when they are read: a driver is a plain name, a node is a `/dev/vfio` node.

use std::path::Path;

use crate::error::{Error, Result};
use crate::hostfs::HostFs;
use crate::pci::PciAddress;

/// The journal of devices moved by `bind`, with their prior state.
pub const JOURNAL: &str = "/run/vfiotool/journal.json";

/// The format tag of the journal file.
pub const FORMAT: &str = "vfiotool.journal/1";

/// The largest journal read (a few hundred bytes per device).
const JOURNAL_CAP: usize = 16 << 20;

/// The owner of a group node before `bind --user` changed it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeOwner {
    /// The node (`/dev/vfio/5`, `/dev/vfio/noiommu-0`).
    pub path: String,
    /// Owner user id before.
    pub uid: u32,
    /// Owner group id before.
    pub gid: u32,
}

impl NodeOwner {
    /// The IOMMU group the node belongs to.
    pub fn group(&self) -> Option<u32> {
        let n = self.path.strip_prefix("/dev/vfio/")?;
        n.strip_prefix("noiommu-").unwrap_or(n).parse().ok()
    }
}

/// What a device looked like before `bind` first moved it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JournalEntry {
    /// The device.
    pub address: String,
    /// The driver it was moved to (by the latest bind).
    pub target: String,
    /// The driver it had.
    pub driver: Option<String>,
    /// Its `driver_override` before.
    pub driver_override: Option<String>,
    /// Its enabled VFs before (`None`: not SR-IOV capable).
    pub sriov_numvfs: Option<u16>,
}

impl JournalEntry {
    /// The device's address.
    pub fn pci_address(&self) -> Result<PciAddress> {
        Ok(PciAddress::parse(&self.address)?)
    }
}

/// The whole journal.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Journal {
    /// Devices and their prior state, in the order they were bound.
    pub devices: Vec<JournalEntry>,
    /// Group nodes and their owner before the first `--user`.
    #[serde(default)]
    pub nodes: Vec<NodeOwner>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct File {
    format: String,
    #[serde(flatten)]
    journal: Journal,
}

fn invalid(reason: String) -> Error {
    Error::Invalid {
        what: "journal",
        input: JOURNAL.into(),
        reason: format!(
            "{reason}; check the driver of each device, put it back by unbinding it from \
             vfio-pci, then remove the file"
        ),
    }
}

fn plain_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s != "." && s != ".." && !s.contains(['/', '\0', '\n'])
}

impl Journal {
    /// Parses a journal file's bytes (pure; the fuzz target's entry point).
    pub fn parse(bytes: &[u8]) -> Result<Journal> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(invalid("it is empty (cut short by a crash or a full disk?)".into()));
        }
        let file: File = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        if file.format != FORMAT {
            return Err(invalid(format!("unknown format {:?} (expected {FORMAT})", file.format)));
        }
        file.journal.check().map_err(invalid)?;
        Ok(file.journal)
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let file = File { format: FORMAT.into(), journal: self.clone() };
        let mut v = serde_json::to_vec_pretty(&file).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Checks every entry: an address that parses, drivers that are plain names, an
    /// override without control characters, nodes under `/dev/vfio/`, no duplicates.
    pub fn check(&self) -> std::result::Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for e in &self.devices {
            let a = &e.address;
            // One device twice, even spelled two ways (`02:00.0`, `0000:02:00.0`), would
            // be restored twice.
            let parsed = PciAddress::parse(a).map_err(|err| format!("entry {a:?}: {err}"))?;
            if !seen.insert(parsed) {
                return Err(format!("entry {a} appears twice"));
            }
            for d in [Some(&e.target), e.driver.as_ref()].into_iter().flatten() {
                if !plain_name(d) {
                    return Err(format!("entry {a}: {d:?} is not a driver name"));
                }
            }
            if let Some(o) = &e.driver_override {
                if o.len() > 255 || o.chars().any(char::is_control) {
                    return Err(format!("entry {a}: driver_override {o:?} is not a single line"));
                }
            }
        }
        let mut nodes = std::collections::BTreeSet::new();
        for o in &self.nodes {
            if o.group().is_none() {
                return Err(format!("{:?} is not a /dev/vfio group node", o.path));
            }
            if !nodes.insert(o.path.as_str()) {
                return Err(format!("node {} appears twice", o.path));
            }
        }
        Ok(())
    }

    /// The entry of a device.
    pub fn entry(&self, a: PciAddress) -> Option<&JournalEntry> {
        self.devices.iter().find(|e| e.pci_address().ok() == Some(a))
    }

    /// Adds devices; a device already journaled keeps its first prior state (only the
    /// target changes), so a re-bind to another driver can still be undone to the
    /// original driver.
    pub fn add_devices(&mut self, add: &[JournalEntry]) {
        for n in add {
            match self.devices.iter_mut().find(|e| e.address == n.address) {
                Some(e) => e.target = n.target.clone(),
                None => self.devices.push(n.clone()),
            }
        }
    }

    /// Records a node's owner unless one is recorded already (the first is the original).
    pub fn add_node(&mut self, o: NodeOwner) {
        if !self.nodes.iter().any(|n| n.path == o.path) {
            self.nodes.push(o);
        }
    }

    /// Drops the entries of devices.
    pub fn remove_devices(&mut self, addresses: &[String]) {
        self.devices.retain(|e| !addresses.contains(&e.address));
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty() && self.nodes.is_empty()
    }
}

/// Reads the journal (empty when there is none; an error when it is damaged).
pub fn read_journal(fs: &dyn HostFs) -> Result<Journal> {
    match fs.read_limited(Path::new(JOURNAL), JOURNAL_CAP) {
        Ok(bytes) => Journal::parse(&bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Journal::default()),
        Err(e) => Err(Error::host("read", JOURNAL, e)),
    }
}

/// Writes the journal atomically (`0600` in the `0700` run directory); an empty journal
/// removes the file. Entries are checked first: a journal that could not be read back is
/// never written.
pub fn write_journal(fs: &dyn HostFs, j: &Journal) -> Result<()> {
    j.check().map_err(invalid)?;
    crate::host::lock::ensure_run_dir(fs)?;
    let path = Path::new(JOURNAL);
    if j.is_empty() {
        return match fs.remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::host("remove", path, e)),
        };
    }
    fs.replace_file(path, &j.to_bytes(), 0o600).map_err(|e| Error::host("write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(a: &str) -> JournalEntry {
        JournalEntry {
            address: a.into(),
            target: "vfio-pci".into(),
            driver: Some("igb".into()),
            driver_override: None,
            sriov_numvfs: Some(2),
        }
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let mut j = Journal::default();
        j.add_devices(&[entry("0000:02:00.0")]);
        j.add_node(NodeOwner { path: "/dev/vfio/3".into(), uid: 0, gid: 0 });
        let bytes = j.to_bytes();
        assert_eq!(Journal::parse(&bytes).unwrap(), j);
        // Every cut of the file is refused, never read as a shorter journal.
        for n in 0..bytes.len() - 1 {
            let cut = &bytes[..n];
            if cut.iter().all(u8::is_ascii_whitespace) || n < bytes.len() - 2 {
                let e = Journal::parse(cut).unwrap_err().to_string();
                assert!(e.contains("remove the file"), "{n}: {e}");
            }
        }
        for bad in [
            r#"{"format":"vfiotool.journal/1","devices":[{"address":"x","target":"vfio-pci","driver":null,"driver_override":null,"sriov_numvfs":null}]}"#,
            r#"{"format":"vfiotool.journal/1","devices":[{"address":"0000:00:01.0","target":"../x","driver":null,"driver_override":null,"sriov_numvfs":null}]}"#,
            r#"{"format":"vfiotool.journal/1","devices":[],"nodes":[{"path":"/etc/shadow","uid":0,"gid":0}]}"#,
            r#"{"format":"other/2","devices":[]}"#,
            r#"{"format":"vfiotool.journal/1","devices":[{"address":"0000:02:00.0","target":"vfio-pci","driver":null,"driver_override":null,"sriov_numvfs":null},{"address":"02:00.0","target":"vfio-pci","driver":null,"driver_override":null,"sriov_numvfs":null}]}"#,
            "[]",
        ] {
            assert!(Journal::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_first_prior_state_is_kept_across_rebinds() {
        let mut j = Journal::default();
        j.add_devices(&[entry("0000:02:00.0")]);
        let mut again = entry("0000:02:00.0");
        again.driver = Some("vfio-pci".into());
        again.target = "pci-stub".into();
        j.add_devices(&[again]);
        assert_eq!(j.devices.len(), 1);
        assert_eq!(j.devices[0].driver.as_deref(), Some("igb"));
        assert_eq!(j.devices[0].target, "pci-stub");
        j.add_node(NodeOwner { path: "/dev/vfio/3".into(), uid: 0, gid: 0 });
        j.add_node(NodeOwner { path: "/dev/vfio/3".into(), uid: 107, gid: 107 });
        assert_eq!(j.nodes.len(), 1);
        assert_eq!(j.nodes[0].uid, 0);
    }

    #[test]
    fn an_override_the_kernel_accepts_is_journaled_and_read_back() {
        let mut j = Journal::default();
        let mut e = entry("0000:02:00.0");
        e.driver_override = Some("foo/bar".into());
        j.add_devices(&[e]);
        assert_eq!(Journal::parse(&j.to_bytes()).unwrap(), j);
        j.devices[0].driver_override = Some("a\nb".into());
        assert!(j.check().is_err());
    }
}
