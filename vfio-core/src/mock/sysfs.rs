//! The simulated sysfs, procfs, `/dev` and `/etc` of a [`MockHost`].
//!
//! [`SimFs`] serves, from the shared [`HostState`], the tree Linux shows under
//! `/sys/bus/pci`, `/sys/devices`, `/sys/kernel/iommu_groups`, `/sys/class/iommu`,
//! `/sys/module`, `/dev/vfio`, `/proc` and plain files elsewhere, and reacts to writes the
//! way the kernel does (`drivers/base/bus.c`, `drivers/pci/pci-driver.c`,
//! `drivers/pci/pci-sysfs.c`, `drivers/pci/iov.c`, `drivers/vfio/mdev/`):
//!
//! - `driver/unbind` releases the driver (`ENODEV` when the device is not bound to it;
//!   `EBUSY` while the device is open through VFIO, where Linux would block);
//! - `driver_override` only records the name (it never unbinds);
//! - `drivers_probe` binds a driverless device to its override if set, else to its
//!   native driver when that driver is registered;
//! - `drivers/X/bind` binds a device that X matches (the override wins over the id
//!   tables; `ENODEV` otherwise) and that has no driver yet (`EBUSY` otherwise); `new_id` adds a dynamic id and probes;
//! - `sriov_numvfs` is bounded by `sriov_totalvfs` (`ERANGE`), needs a driver
//!   (`ENOENT`), needs 0 between two non-zero values (`EBUSY`), and creates or removes
//!   the VF functions; unbinding a PF driver disables its VFs;
//! - `rom` reads only after `1` was written to it (`EINVAL` otherwise);
//! - `mdev_supported_types/T/create` takes a UUID, `remove` takes `1`.
//!
//! Host-level facts (modules, command line, IOMMUs, mounts, routes, files) are described
//! by [`SysState`], reachable as [`HostState::sys`]. Faults are injected with
//! [`MockHost::inject_fault`].

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::{HostState, MockHost};
use crate::hostfs::{not_regular, too_large, HeldLock, HostFs, NodeKind, NodeMeta};
use crate::pci::PciAddress;

/// One IOMMU unit of the simulated host (`/sys/class/iommu/NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimIommu {
    /// The unit's name (`dmar0`, `ivhd0`, `virtio-iommu`...).
    pub name: String,
    /// Intel VT-d `ecap` register (bit 3: interrupt remapping); `None` for other vendors.
    pub intel_ecap: Option<u64>,
    /// AMD-Vi `features` (`None` for other vendors).
    pub amd_features: Option<u64>,
}

/// A network interface of the simulated host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimNet {
    /// Interface name (`eth0`).
    pub name: String,
    /// The PCI function behind it.
    pub device: PciAddress,
    /// Carries the default route.
    pub default_route: bool,
    /// IPv4 addresses with prefix length, as `a.b.c.d/len`.
    pub ipv4: Vec<String>,
}

/// A block device of the simulated host (`/sys/block/NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimBlock {
    /// Device name (`nvme0n1`, `sda`).
    pub name: String,
    /// The storage controller behind it.
    pub device: PciAddress,
}

/// Which file operation a [`Fault`] applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// `read`/`read_at`.
    Read,
    /// `write`.
    Write,
    /// `chown`.
    Chown,
}

/// An injected failure: the `nth` (1-based) matching operation fails with `errno`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The operation.
    pub op: FaultOp,
    /// The path it applies to (as given by the caller), or any path.
    pub path: Option<PathBuf>,
    /// Which matching operation fails (1 = the next one).
    pub nth: u32,
    /// The errno returned.
    pub errno: i32,
    /// Matching operations seen so far.
    pub seen: u32,
}

/// Host-level facts of a simulated host, and the sysfs state that is not per device.
#[derive(Debug, Clone, Default)]
pub struct SysState {
    /// Loaded kernel modules (`vfio_pci`, `vfio_iommu_type1`...). A driver named `a-b`
    /// is registered when module `a_b` is loaded, when it is some device's native
    /// driver (built in), or when a device is bound to it.
    pub modules: BTreeSet<String>,
    /// Modules `modprobe` can load (it fails with `ENOENT` for others).
    pub available_modules: BTreeSet<String>,
    /// Module parameters: (module, parameter) to value.
    pub module_params: BTreeMap<(String, String), String>,
    /// `/proc/cmdline`.
    pub cmdline: String,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel_release: String,
    /// The IOMMU units (`/sys/class/iommu`).
    pub iommus: Vec<SimIommu>,
    /// `/proc/mounts` lines.
    pub mounts: Vec<String>,
    /// Network interfaces.
    pub nets: Vec<SimNet>,
    /// Block devices.
    pub blocks: Vec<SimBlock>,
    /// Plain files outside sysfs/procfs (`/etc/default/grub`, `/run/...`).
    pub files: BTreeMap<PathBuf, Vec<u8>>,
    /// Permission bits of plain files written with `replace_file` (others read 0o644).
    pub file_modes: BTreeMap<PathBuf, u32>,
    /// Directories created outside sysfs.
    pub dirs: BTreeSet<PathBuf>,
    /// Files whose lock ([`HostFs::lock`]) is held.
    pub locks: BTreeSet<PathBuf>,
    /// Owner overrides set by `chown` (path to uid, gid).
    pub owners: BTreeMap<PathBuf, (u32, u32)>,
    /// Mode overrides of device nodes.
    pub modes: BTreeMap<PathBuf, u32>,
    /// The reader is not root: `config` reads give only the first 64 bytes.
    pub unprivileged: bool,
    /// The boot VGA device (`boot_vga` reads 1).
    pub boot_vga: Option<PciAddress>,
    /// Native drivers, when not the spec's start driver.
    pub native_drivers: BTreeMap<PciAddress, String>,
    /// Dynamic ids added through `new_id`, per driver.
    pub dynids: BTreeMap<String, BTreeSet<(u16, u16)>>,
    /// Devices held open through VFIO (unbinding them fails with `EBUSY`).
    pub open_devices: BTreeSet<PciAddress>,
    /// Enabled VFs per physical function.
    pub numvfs: BTreeMap<PciAddress, u16>,
    /// Devices whose `rom` was enabled by writing 1.
    pub rom_enabled: BTreeSet<PciAddress>,
    /// Mediated devices: UUID to (parent, type id).
    pub mdevs: BTreeMap<String, (PciAddress, String)>,
    /// Devices whose `enable` is 1.
    pub enabled: BTreeSet<PciAddress>,
    /// The kernel log, served as `/var/log/kern.log` (`None` hides it).
    pub kernel_log: Option<String>,
    /// `RLIMIT_MEMLOCK` in bytes shown in `/proc/self/limits` (`None`: unlimited).
    pub memlock: Option<u64>,
    /// Injected faults.
    pub faults: Vec<Fault>,
    /// Every successful write, in order (path as given).
    pub writes: Vec<PathBuf>,
    /// Other processes running on the host: each shows as a `/proc/PID` directory.
    pub processes: BTreeSet<u32>,
}

impl SysState {
    /// A host ready for passthrough: an Intel IOMMU with interrupt remapping, the
    /// command line asking for it, the VFIO modules available (not loaded), GRUB.
    pub fn intel_ready() -> Self {
        let mut s = SysState {
            cmdline: "BOOT_IMAGE=/vmlinuz root=/dev/nvme0n1p1 ro quiet intel_iommu=on iommu=pt"
                .into(),
            kernel_release: "6.12.0-amd64".into(),
            iommus: vec![SimIommu {
                name: "dmar0".into(),
                intel_ecap: Some(0xf0205e),
                amd_features: None,
            }],
            kernel_log: Some(
                "DMAR: IOMMU enabled\nDMAR-IR: Enabled IRQ remapping in x2apic mode\n".into(),
            ),
            ..SysState::default()
        };
        for m in ["vfio", "vfio_iommu_type1", "vfio_pci", "vfio_pci_core", "iommufd"] {
            s.available_modules.insert(m.into());
        }
        s.files.insert(
            "/etc/default/grub".into(),
            b"GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet intel_iommu=on iommu=pt\"\n"
                .to_vec(),
        );
        s.files.insert(
            "/etc/passwd".into(),
            b"root:x:0:0:root:/root:/bin/sh\nqemu:x:107:111::/nonexistent:/usr/sbin/nologin\n"
                .to_vec(),
        );
        s.files.insert("/usr/sbin/update-initramfs".into(), b"#!/bin/sh\n".to_vec());
        s.files.insert("/usr/sbin/update-grub".into(), b"#!/bin/sh\n".to_vec());
        s
    }

    /// Loads the VFIO modules (as `modprobe vfio-pci` would).
    pub fn load_vfio(&mut self) {
        for m in ["vfio", "vfio_iommu_type1", "vfio_pci", "vfio_pci_core"] {
            self.modules.insert(m.into());
        }
        self.module_params
            .entry(("vfio_iommu_type1".into(), "allow_unsafe_interrupts".into()))
            .or_insert_with(|| "N".into());
    }
}

fn err(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

fn module_of(driver: &str) -> String {
    driver.replace('-', "_")
}

impl HostState {
    fn native_driver(&self, a: PciAddress) -> Option<String> {
        if let Some(d) = self.sys.native_drivers.get(&a) {
            return Some(d.clone());
        }
        self.devices.get(&a)?.spec.driver.clone().filter(|d| d != "vfio-pci")
    }

    fn driver_registered(&self, driver: &str) -> bool {
        self.sys.modules.contains(&module_of(driver))
            || self.devices.keys().any(|a| self.native_driver(*a).as_deref() == Some(driver))
            || self.devices.values().any(|d| d.driver.as_deref() == Some(driver))
    }

    fn module_loaded(&self, module: &str) -> bool {
        self.sys.modules.contains(module)
            || self
                .devices
                .values()
                .any(|d| d.driver.as_deref().map(module_of).as_deref() == Some(module))
    }

    fn drivers(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = BTreeSet::new();
        for a in self.devices.keys() {
            out.extend(self.native_driver(*a));
        }
        out.extend(self.devices.values().filter_map(|d| d.driver.clone()));
        if self.sys.modules.contains("vfio_pci") {
            out.insert("vfio-pci".into());
        }
        out
    }

    /// Whether `driver` would match device `a` (pci_match_device: the override wins).
    fn matches(&self, driver: &str, a: PciAddress) -> bool {
        let Some(d) = self.devices.get(&a) else { return false };
        if let Some(o) = &d.driver_override {
            return o == driver;
        }
        if self.native_driver(a).as_deref() == Some(driver) {
            return true;
        }
        self.sys.dynids.get(driver).is_some_and(|ids| ids.contains(&(d.spec.vendor, d.spec.device)))
    }

    fn probe(&mut self, a: PciAddress) {
        let Some(d) = self.devices.get(&a) else { return };
        if d.driver.is_some() {
            return;
        }
        let candidate = match &d.driver_override {
            Some(o) => Some(o.clone()),
            None => self.native_driver(a).or_else(|| {
                self.sys
                    .dynids
                    .iter()
                    .find(|(_, ids)| ids.contains(&(d.spec.vendor, d.spec.device)))
                    .map(|(drv, _)| drv.clone())
            }),
        };
        if let Some(drv) = candidate {
            if self.probe_refused(&drv, a) {
                return;
            }
            if self.driver_registered(&drv) && self.matches(&drv, a) {
                self.set_driver(a, Some(&drv));
            }
        }
    }

    /// vfio-pci's probe refuses anything but a normal (type 0) header.
    fn probe_refused(&self, driver: &str, a: PciAddress) -> bool {
        driver == "vfio-pci" && self.devices.get(&a).is_some_and(|d| d.spec.bridge)
    }

    fn release(&mut self, a: PciAddress) -> io::Result<()> {
        if self.sys.open_devices.contains(&a) {
            // Linux blocks in vfio_pci_remove until the user closes the device.
            return Err(err(libc::EBUSY));
        }
        if self.sys.numvfs.get(&a).copied().unwrap_or(0) > 0 {
            self.set_numvfs(a, 0)?;
        }
        self.sys.rom_enabled.remove(&a);
        self.set_driver(a, None);
        Ok(())
    }

    fn vf_address(pf: PciAddress, i: u16) -> Option<PciAddress> {
        let rid =
            ((pf.bus as u32) << 8 | (pf.device as u32) << 3 | pf.function as u32) + 0x80 + i as u32;
        if rid > 0xffff {
            return None;
        }
        PciAddress::new(pf.domain, (rid >> 8) as u8, ((rid >> 3) & 0x1f) as u8, (rid & 7) as u8)
    }

    fn set_numvfs(&mut self, pf: PciAddress, n: u16) -> io::Result<()> {
        let Some(d) = self.devices.get(&pf) else { return Err(err(libc::ENODEV)) };
        let Some(sriov) = d.spec.sriov.clone() else { return Err(err(libc::ENOENT)) };
        let cur = self.sys.numvfs.get(&pf).copied().unwrap_or(0);
        if n > sriov.total_vfs {
            return Err(err(libc::ERANGE));
        }
        if n == cur {
            return Ok(());
        }
        if d.driver.is_none() {
            return Err(err(libc::ENOENT));
        }
        if n != 0 && cur != 0 {
            return Err(err(libc::EBUSY));
        }
        if n == 0 {
            for i in 0..cur {
                if let Some(va) = Self::vf_address(pf, i) {
                    self.set_driver(va, None);
                    self.devices.remove(&va);
                    self.sys.native_drivers.remove(&va);
                }
            }
            self.sys.numvfs.remove(&pf);
            return Ok(());
        }
        let mut next_group =
            self.devices.values().filter_map(|d| d.spec.iommu_group).max().map_or(0, |g| g + 1);
        let pfspec = d.spec.clone();
        for i in 0..n {
            let Some(va) = Self::vf_address(pf, i) else { return Err(err(libc::ENOSPC)) };
            let mut spec = super::DeviceSpec::at(va);
            spec.vendor = pfspec.vendor;
            spec.device = sriov.vf_device;
            spec.subsystem_vendor = pfspec.subsystem_vendor;
            spec.subsystem_device = pfspec.subsystem_device;
            spec.class = pfspec.class;
            spec.pcie = true;
            spec.flr = true;
            spec.driver = sriov.vf_driver.clone();
            if pfspec.iommu_group.is_some() {
                spec.iommu_group = Some(next_group);
                next_group += 1;
            }
            let dev = super::SimDevice {
                driver: None,
                driver_override: None,
                config: spec.config_image(),
                vfio_index: None,
                spec,
            };
            self.devices.insert(va, dev);
            if let Some(drv) = &sriov.vf_driver {
                self.sys.native_drivers.insert(va, drv.clone());
                self.set_driver(va, Some(drv));
            }
        }
        self.sys.numvfs.insert(pf, n);
        Ok(())
    }

    fn vf_parent(&self, a: PciAddress) -> Option<PciAddress> {
        self.sys
            .numvfs
            .iter()
            .find_map(|(pf, n)| (0..*n).any(|i| Self::vf_address(*pf, i) == Some(a)).then_some(*pf))
    }

    fn group_has_vfio(&self, g: u32) -> bool {
        self.devices.values().any(|d| {
            self.group_of(d.spec.address).map(|x| x.0) == Some(g)
                && d.driver.as_deref() == Some("vfio-pci")
        })
    }
}

impl MockHost {
    /// The simulated filesystem of this host.
    pub fn fs(&self) -> Arc<SimFs> {
        Arc::new(SimFs { host: self.clone() })
    }

    /// Changes the host-level description (modules, command line, IOMMUs, files...).
    pub fn with_sys(self, f: impl FnOnce(&mut SysState)) -> Self {
        f(&mut self.state().sys);
        self
    }

    /// Makes the `nth` (1-based) future `op` on `path` (or on any path) fail with `errno`.
    pub fn inject_fault(&self, op: FaultOp, path: Option<&str>, nth: u32, errno: i32) {
        self.state().sys.faults.push(Fault {
            op,
            path: path.map(PathBuf::from),
            nth,
            errno,
            seen: 0,
        });
    }

    /// Marks a device as held open through VFIO (unbinding it then fails with `EBUSY`).
    pub fn set_device_open(&self, address: PciAddress, open: bool) {
        let mut st = self.state();
        if open {
            st.sys.open_devices.insert(address);
        } else {
            st.sys.open_devices.remove(&address);
        }
    }
}

/// The simulated filesystem view of a [`MockHost`]; see the module documentation.
#[derive(Debug, Clone)]
pub struct SimFs {
    host: MockHost,
}

/// What a canonical path is.
enum Node {
    Dir(Vec<String>),
    Link(PathBuf),
    File(Attr, u32),
    Char(u32),
}

/// A file and how it reads and writes.
enum Attr {
    Text(String),
    WriteOnly(Ctl),
    Rw(String, Ctl),
    Config(PciAddress),
    Rom(PciAddress),
    Resource,
    Plain(PathBuf),
}

/// The kernel reaction to a write.
#[derive(Clone)]
enum Ctl {
    Unbind(String),
    Bind(String),
    NewId(String),
    RemoveId(String),
    Probe,
    Override(PciAddress),
    NumVfs(PciAddress),
    Enable(PciAddress),
    MdevCreate(PciAddress, String),
    MdevRemove(String),
    Param(String, String),
    RemoveDevice,
}

fn dev_dir(a: PciAddress) -> String {
    format!("/sys/devices/pci{:04x}:{:02x}/{a}", a.domain, a.bus)
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

fn hex16(v: u16) -> String {
    format!("0x{v:04x}")
}

fn bar_base(a: PciAddress, i: usize) -> u64 {
    0xf000_0000_u64
        .wrapping_add(
            ((a.bus as u64) << 20 | (a.device as u64) << 15 | (a.function as u64) << 12) << 8,
        )
        .wrapping_add((i as u64) << 24)
}

impl SimFs {
    fn names(list: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        v.sort();
        v.dedup();
        v
    }

    fn device_node(st: &HostState, a: PciAddress, rest: &[&str]) -> Option<Node> {
        let d = st.devices.get(&a)?;
        let spec = &d.spec;
        let bars: Vec<usize> = (0..6).filter(|i| spec.bars[*i].is_some()).collect();
        let mdev_types = if d.driver.is_some() { &spec.mdev_types[..] } else { &[] };
        let text = |s: String| Some(Node::File(Attr::Text(s + "\n"), 0o444));
        match rest {
            [] => {
                let mut v = Self::names(&[
                    "vendor",
                    "device",
                    "subsystem_vendor",
                    "subsystem_device",
                    "class",
                    "revision",
                    "config",
                    "resource",
                    "driver_override",
                    "numa_node",
                    "enable",
                    "remove",
                    "irq",
                    "local_cpulist",
                ]);
                if spec.rom.is_some() {
                    v.push("rom".into());
                }
                v.extend(bars.iter().map(|i| format!("resource{i}")));
                if d.driver.is_some() {
                    v.push("driver".into());
                }
                if spec.iommu_group.is_some() {
                    v.push("iommu_group".into());
                }
                if !spec.bridge {
                    v.push("reset_method".into());
                }
                if spec.class >> 8 == 0x0300 {
                    v.push("boot_vga".into());
                }
                if spec.sriov.is_some() {
                    v.extend(["sriov_totalvfs", "sriov_numvfs"].map(String::from));
                    let n = st.sys.numvfs.get(&a).copied().unwrap_or(0);
                    v.extend((0..n).map(|i| format!("virtfn{i}")));
                }
                if st.vf_parent(a).is_some() {
                    v.push("physfn".into());
                }
                if !mdev_types.is_empty() {
                    v.push("mdev_supported_types".into());
                }
                if d.vfio_index.is_some() {
                    v.push("vfio-dev".into());
                }
                v.extend(st.sys.mdevs.iter().filter(|(_, (p, _))| *p == a).map(|(u, _)| u.clone()));
                if st.sys.blocks.iter().any(|b| b.device == a) {
                    v.push("block".into());
                }
                if st.sys.nets.iter().any(|n| n.device == a) {
                    v.push("net".into());
                }
                v.sort();
                Some(Node::Dir(v))
            }
            ["vendor"] => text(hex16(spec.vendor)),
            ["device"] => text(hex16(spec.device)),
            ["subsystem_vendor"] => text(hex16(spec.subsystem_vendor)),
            ["subsystem_device"] => text(hex16(spec.subsystem_device)),
            ["class"] => text(format!("0x{:06x}", spec.class)),
            ["revision"] => text(format!("0x{:02x}", spec.revision)),
            ["numa_node"] => text("-1".into()),
            ["irq"] => text("11".into()),
            ["local_cpulist"] => text("0-1".into()),
            ["config"] => Some(Node::File(Attr::Config(a), 0o644)),
            ["rom"] if spec.rom.is_some() => Some(Node::File(Attr::Rom(a), 0o600)),
            ["remove"] => Some(Node::File(Attr::WriteOnly(Ctl::RemoveDevice), 0o200)),
            ["resource"] => {
                let mut s = String::new();
                for i in 0..13 {
                    let (start, end, flags) = match spec.bars.get(i).copied().flatten() {
                        Some(b) => {
                            let base = bar_base(a, i);
                            let flags: u64 = match b.kind {
                                super::BarKind::Io => 0x101,
                                super::BarKind::Mem32 => 0x40200,
                                super::BarKind::Mem64 => 0x140204,
                            } | if b.prefetchable { 0x2000 } else { 0 };
                            (base, base + b.size - 1, flags)
                        }
                        None => (0, 0, 0),
                    };
                    s += &format!("0x{start:016x} 0x{end:016x} 0x{flags:016x}\n");
                }
                Some(Node::File(Attr::Text(s), 0o444))
            }
            [r] if r.starts_with("resource") => {
                let i: usize = r["resource".len()..].parse().ok()?;
                spec.bars.get(i).copied().flatten()?;
                Some(Node::File(Attr::Resource, 0o600))
            }
            ["driver"] => d
                .driver
                .as_ref()
                .map(|n| Node::Link(format!("../../../bus/pci/drivers/{n}").into())),
            ["driver_override"] => Some(Node::File(
                Attr::Rw(
                    format!("{}\n", d.driver_override.as_deref().unwrap_or("(null)")),
                    Ctl::Override(a),
                ),
                0o644,
            )),
            ["iommu_group"] => st
                .group_of(a)
                .map(|(g, _)| Node::Link(format!("../../../kernel/iommu_groups/{g}").into())),
            ["reset_method"] if !spec.bridge => {
                text(if spec.flr { "flr bus".into() } else { "bus".into() })
            }
            ["boot_vga"] if spec.class >> 8 == 0x0300 => {
                text(if st.sys.boot_vga == Some(a) { "1".into() } else { "0".into() })
            }
            ["enable"] => Some(Node::File(
                Attr::Rw(format!("{}\n", u8::from(st.sys.enabled.contains(&a))), Ctl::Enable(a)),
                0o644,
            )),
            ["sriov_totalvfs"] => text(spec.sriov.as_ref()?.total_vfs.to_string()),
            ["sriov_numvfs"] => {
                spec.sriov.as_ref()?;
                Some(Node::File(
                    Attr::Rw(
                        format!("{}\n", st.sys.numvfs.get(&a).copied().unwrap_or(0)),
                        Ctl::NumVfs(a),
                    ),
                    0o644,
                ))
            }
            [v] if v.starts_with("virtfn") => {
                let i: u16 = v["virtfn".len()..].parse().ok()?;
                if i >= st.sys.numvfs.get(&a).copied().unwrap_or(0) {
                    return None;
                }
                let va = HostState::vf_address(a, i)?;
                Some(Node::Link(format!("../{va}").into()))
            }
            ["physfn"] => st.vf_parent(a).map(|pf| Node::Link(format!("../{pf}").into())),
            ["vfio-dev"] => d.vfio_index.map(|i| Node::Dir(vec![format!("vfio{i}")])),
            ["vfio-dev", n] if d.vfio_index.map(|i| format!("vfio{i}")).as_deref() == Some(n) => {
                Some(Node::Dir(vec!["dev".into()]))
            }
            ["vfio-dev", _, "dev"] => text(format!("236:{}", d.vfio_index?)),
            ["mdev_supported_types"] if !mdev_types.is_empty() => {
                Some(Node::Dir(mdev_types.iter().map(|t| t.id.clone()).collect()))
            }
            ["mdev_supported_types", t, rest @ ..] => {
                let ty = mdev_types.iter().find(|x| x.id == *t)?;
                let used: Vec<String> = st
                    .sys
                    .mdevs
                    .iter()
                    .filter(|(_, (p, tid))| *p == a && tid == t)
                    .map(|(u, _)| u.clone())
                    .collect();
                match rest {
                    [] => Some(Node::Dir(Self::names(&[
                        "name",
                        "description",
                        "device_api",
                        "available_instances",
                        "create",
                        "devices",
                    ]))),
                    ["name"] => text(ty.name.clone()),
                    ["description"] => text(ty.description.clone()),
                    ["device_api"] => text(ty.device_api.clone()),
                    ["available_instances"] => {
                        text((ty.max_instances.saturating_sub(used.len() as u32)).to_string())
                    }
                    ["create"] => {
                        Some(Node::File(Attr::WriteOnly(Ctl::MdevCreate(a, t.to_string())), 0o200))
                    }
                    ["devices"] => Some(Node::Dir(used)),
                    ["devices", u] if used.iter().any(|x| x == u) => {
                        Some(Node::Link(format!("../../../{u}").into()))
                    }
                    _ => None,
                }
            }
            [u, rest @ ..] if st.sys.mdevs.get(*u).is_some_and(|(p, _)| *p == a) => {
                let (_, t) = &st.sys.mdevs[*u];
                match rest {
                    [] => Some(Node::Dir(Self::names(&["remove", "mdev_type"]))),
                    ["remove"] => {
                        Some(Node::File(Attr::WriteOnly(Ctl::MdevRemove(u.to_string())), 0o200))
                    }
                    ["mdev_type"] => {
                        Some(Node::Link(format!("../mdev_supported_types/{t}").into()))
                    }
                    _ => None,
                }
            }
            ["block"] => Some(Node::Dir(
                st.sys.blocks.iter().filter(|b| b.device == a).map(|b| b.name.clone()).collect(),
            )),
            ["block", name, rest @ ..] => {
                st.sys.blocks.iter().find(|b| b.device == a && b.name == *name)?;
                match rest {
                    [] => Some(Node::Dir(vec!["dev".into(), "device".into()])),
                    ["dev"] => text("259:0".into()),
                    ["device"] => Some(Node::Link("../..".into())),
                    _ => None,
                }
            }
            ["net"] => Some(Node::Dir(
                st.sys.nets.iter().filter(|n| n.device == a).map(|n| n.name.clone()).collect(),
            )),
            ["net", name, rest @ ..] => {
                st.sys.nets.iter().find(|n| n.device == a && n.name == *name)?;
                match rest {
                    [] => Some(Node::Dir(vec!["device".into(), "operstate".into()])),
                    ["operstate"] => text("up".into()),
                    ["device"] => Some(Node::Link("../..".into())),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn node(st: &HostState, p: &Path) -> Option<Node> {
        let s = p.to_str()?;
        let parts: Vec<&str> = s.split('/').filter(|x| !x.is_empty()).collect();
        let dir = |v: &[&str]| Some(Node::Dir(Self::names(v)));
        let text = |s: String| Some(Node::File(Attr::Text(s + "\n"), 0o444));
        let addr = |x: &str| PciAddress::parse(x).ok().filter(|a| st.devices.contains_key(a));
        let groups: BTreeSet<u32> =
            st.devices.keys().filter_map(|a| st.group_of(*a)).map(|(g, _)| g).collect();
        let noiommu = |g: u32| st.kernel.noiommu_ids.values().any(|n| *n == g);
        let iommufd = st.kernel.config.iommufd;
        let vfio_loaded = st.module_loaded("vfio");
        match parts.as_slice() {
            [] => dir(&["sys", "proc", "dev", "etc", "run", "usr", "var"]),
            ["sys"] => dir(&["bus", "devices", "kernel", "class", "module", "block"]),
            ["sys", "bus"] => dir(&["pci", "mdev"]),
            ["sys", "bus", "pci"] => dir(&["devices", "drivers", "drivers_probe", "rescan"]),
            ["sys", "bus", "pci", "devices"] => {
                Some(Node::Dir(st.devices.keys().map(|a| a.to_string()).collect()))
            }
            ["sys", "bus", "pci", "devices", a] => {
                let a = addr(a)?;
                Some(Node::Link(format!("../../..{}", &dev_dir(a)[4..]).into()))
            }
            ["sys", "bus", "pci", "drivers_probe"] => {
                Some(Node::File(Attr::WriteOnly(Ctl::Probe), 0o200))
            }
            ["sys", "bus", "pci", "rescan"] => Some(Node::File(Attr::WriteOnly(Ctl::Probe), 0o200)),
            ["sys", "bus", "pci", "drivers"] => Some(Node::Dir(st.drivers().into_iter().collect())),
            ["sys", "bus", "pci", "drivers", drv, rest @ ..] => {
                if !st.drivers().contains(*drv) {
                    return None;
                }
                let bound: Vec<PciAddress> = st
                    .devices
                    .iter()
                    .filter(|(_, d)| d.driver.as_deref() == Some(*drv))
                    .map(|(a, _)| *a)
                    .collect();
                let drv = drv.to_string();
                match rest {
                    [] => {
                        let mut v =
                            Self::names(&["bind", "unbind", "new_id", "remove_id", "uevent"]);
                        v.extend(bound.iter().map(|a| a.to_string()));
                        if st.sys.modules.contains(&module_of(&drv)) {
                            v.push("module".into());
                        }
                        v.sort();
                        Some(Node::Dir(v))
                    }
                    ["bind"] => Some(Node::File(Attr::WriteOnly(Ctl::Bind(drv)), 0o200)),
                    ["unbind"] => Some(Node::File(Attr::WriteOnly(Ctl::Unbind(drv)), 0o200)),
                    ["new_id"] => Some(Node::File(Attr::WriteOnly(Ctl::NewId(drv)), 0o200)),
                    ["remove_id"] => Some(Node::File(Attr::WriteOnly(Ctl::RemoveId(drv)), 0o200)),
                    ["uevent"] => Some(Node::File(Attr::WriteOnly(Ctl::Probe), 0o200)),
                    ["module"] if st.sys.modules.contains(&module_of(&drv)) => {
                        Some(Node::Link(format!("../../../../module/{}", module_of(&drv)).into()))
                    }
                    [a] => {
                        let a = addr(a).filter(|a| bound.contains(a))?;
                        Some(Node::Link(format!("../../../..{}", &dev_dir(a)[4..]).into()))
                    }
                    _ => None,
                }
            }
            ["sys", "bus", "mdev"] => dir(&["devices"]),
            ["sys", "bus", "mdev", "devices"] => {
                Some(Node::Dir(st.sys.mdevs.keys().cloned().collect()))
            }
            ["sys", "bus", "mdev", "devices", u] => {
                let (p, _) = st.sys.mdevs.get(*u)?;
                Some(Node::Link(format!("../../..{}/{u}", &dev_dir(*p)[4..]).into()))
            }
            ["sys", "devices"] => {
                let mut v: Vec<String> = st
                    .devices
                    .keys()
                    .map(|a| format!("pci{:04x}:{:02x}", a.domain, a.bus))
                    .collect();
                v.push("virtual".into());
                v.sort();
                v.dedup();
                Some(Node::Dir(v))
            }
            ["sys", "devices", "virtual"] => dir(&["iommu"]),
            ["sys", "devices", "virtual", "iommu"] => {
                Some(Node::Dir(st.sys.iommus.iter().map(|i| i.name.clone()).collect()))
            }
            ["sys", "devices", "virtual", "iommu", name, rest @ ..] => {
                let u = st.sys.iommus.iter().find(|i| i.name == *name)?;
                match (rest, u.intel_ecap, u.amd_features) {
                    ([], Some(_), _) => dir(&["intel-iommu", "devices"]),
                    ([], None, Some(_)) => dir(&["amd-iommu", "devices"]),
                    ([], None, None) => dir(&["devices"]),
                    (["devices"], _, _) => Some(Node::Dir(vec![])),
                    (["intel-iommu"], Some(_), _) => dir(&["cap", "ecap", "version"]),
                    (["intel-iommu", "ecap"], Some(e), _) => text(format!("{e:x}")),
                    (["intel-iommu", "cap"], Some(_), _) => text("d2008c40660462".into()),
                    (["intel-iommu", "version"], Some(_), _) => text("1:0".into()),
                    (["amd-iommu"], _, Some(_)) => dir(&["cap", "features"]),
                    (["amd-iommu", "features"], _, Some(f)) => text(format!("{f:x}")),
                    (["amd-iommu", "cap"], _, Some(_)) => text("0x90000".into()),
                    _ => None,
                }
            }
            ["sys", "devices", root] => {
                let v: Vec<String> = st
                    .devices
                    .keys()
                    .filter(|a| format!("pci{:04x}:{:02x}", a.domain, a.bus) == *root)
                    .map(|a| a.to_string())
                    .collect();
                (!v.is_empty()).then_some(Node::Dir(v))
            }
            ["sys", "devices", root, a, rest @ ..] => {
                let a = addr(a)?;
                if format!("pci{:04x}:{:02x}", a.domain, a.bus) != *root {
                    return None;
                }
                Self::device_node(st, a, rest)
            }
            ["sys", "kernel"] => dir(&["iommu_groups"]),
            ["sys", "kernel", "iommu_groups"] => {
                Some(Node::Dir(groups.iter().map(|g| g.to_string()).collect()))
            }
            ["sys", "kernel", "iommu_groups", g, rest @ ..] => {
                let g: u32 = g.parse().ok().filter(|g| groups.contains(g))?;
                let members: Vec<PciAddress> = st
                    .devices
                    .keys()
                    .filter(|a| st.group_of(**a).map(|x| x.0) == Some(g))
                    .copied()
                    .collect();
                match rest {
                    [] if noiommu(g) => dir(&["devices", "name", "reserved_regions", "type"]),
                    [] => dir(&["devices", "reserved_regions", "type"]),
                    ["name"] if noiommu(g) => text("vfio-noiommu".into()),
                    ["type"] => text("DMA".into()),
                    ["reserved_regions"] => {
                        text("0x00000000fee00000 0x00000000feefffff msi".into())
                    }
                    ["devices"] => Some(Node::Dir(members.iter().map(|a| a.to_string()).collect())),
                    ["devices", a] => {
                        let a = addr(a).filter(|a| members.contains(a))?;
                        Some(Node::Link(format!("../../../..{}", &dev_dir(a)[4..]).into()))
                    }
                    _ => None,
                }
            }
            ["sys", "class"] => dir(&["iommu", "net"]),
            ["sys", "class", "iommu"] => {
                Some(Node::Dir(st.sys.iommus.iter().map(|i| i.name.clone()).collect()))
            }
            ["sys", "class", "iommu", name] => {
                st.sys.iommus.iter().find(|i| i.name == *name)?;
                Some(Node::Link(format!("../../devices/virtual/iommu/{name}").into()))
            }
            ["sys", "class", "net"] => {
                Some(Node::Dir(st.sys.nets.iter().map(|n| n.name.clone()).collect()))
            }
            ["sys", "class", "net", name] => {
                let n = st.sys.nets.iter().find(|n| n.name == *name)?;
                Some(Node::Link(format!("../..{}/net/{name}", &dev_dir(n.device)[4..]).into()))
            }
            ["sys", "block"] => {
                Some(Node::Dir(st.sys.blocks.iter().map(|b| b.name.clone()).collect()))
            }
            ["sys", "block", name] => {
                let b = st.sys.blocks.iter().find(|b| b.name == *name)?;
                Some(Node::Link(format!("..{}/block/{name}", &dev_dir(b.device)[4..]).into()))
            }
            ["sys", "module"] => {
                let mut v: BTreeSet<String> = st.sys.modules.clone();
                v.extend(st.devices.values().filter_map(|d| d.driver.as_deref().map(module_of)));
                Some(Node::Dir(v.into_iter().collect()))
            }
            ["sys", "module", m, rest @ ..] => {
                if !st.module_loaded(m) {
                    return None;
                }
                let params: Vec<String> = st
                    .sys
                    .module_params
                    .keys()
                    .filter(|(mm, _)| mm == m)
                    .map(|(_, p)| p.clone())
                    .collect();
                match rest {
                    [] => dir(&["parameters", "refcnt"]),
                    ["refcnt"] => text("0".into()),
                    ["parameters"] => Some(Node::Dir(params)),
                    ["parameters", p] if params.iter().any(|x| x == p) => {
                        let v = st.sys.module_params[&(m.to_string(), p.to_string())].clone();
                        Some(Node::File(
                            Attr::Rw(format!("{v}\n"), Ctl::Param(m.to_string(), p.to_string())),
                            0o644,
                        ))
                    }
                    _ => None,
                }
            }
            ["proc"] => dir(&["cmdline", "mounts", "net", "self", "sys"]),
            ["proc", "self"] => dir(&["limits"]),
            ["proc", "self", "limits"] => {
                let v = st.sys.memlock.map_or("unlimited".to_string(), |v| v.to_string());
                text(format!(
                    "Limit                     Soft Limit           Hard Limit           Units     \n\
                     Max locked memory         {v:<20} {v:<20} bytes     "
                ))
            }
            ["var"] | ["var", "log"] if st.sys.kernel_log.is_some() => {
                let mut v = match Self::plain(st, p) {
                    Some(Node::Dir(v)) => v,
                    _ => vec![],
                };
                v.push(if parts.len() == 1 { "log".into() } else { "kern.log".into() });
                v.sort();
                v.dedup();
                Some(Node::Dir(v))
            }
            ["var", "log", "kern.log"] => {
                Some(Node::File(Attr::Text(st.sys.kernel_log.clone()?), 0o640))
            }
            ["proc", "cmdline"] => text(st.sys.cmdline.clone()),
            ["proc", "mounts"] => Some(Node::File(
                Attr::Text(st.sys.mounts.iter().map(|l| format!("{l}\n")).collect()),
                0o444,
            )),
            ["proc", "net"] => dir(&["route"]),
            ["proc", "net", "route"] => {
                let mut s = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n".to_string();
                for n in &st.sys.nets {
                    if n.default_route {
                        s += &format!(
                            "{}\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n",
                            n.name
                        );
                    }
                    for _ in &n.ipv4 {
                        s += &format!(
                            "{}\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n",
                            n.name
                        );
                    }
                }
                Some(Node::File(Attr::Text(s), 0o444))
            }
            ["proc", pid] if pid.parse().is_ok_and(|p: u32| st.sys.processes.contains(&p)) => {
                dir(&[])
            }
            ["proc", "sys"] => dir(&["kernel"]),
            ["proc", "sys", "kernel"] => dir(&["osrelease"]),
            ["proc", "sys", "kernel", "osrelease"] => text(st.sys.kernel_release.clone()),
            ["dev"] => {
                let mut v = vec![];
                if vfio_loaded {
                    v.push("vfio");
                }
                if st.module_loaded("iommufd") {
                    v.push("iommu");
                }
                dir(&v)
            }
            ["dev", "iommu"] if iommufd && st.module_loaded("iommufd") => Some(Node::Char(0o600)),
            ["dev", "vfio"] if vfio_loaded => {
                let mut v: Vec<String> = vec!["vfio".into()];
                v.extend(groups.iter().filter(|g| st.group_has_vfio(**g)).map(|g| {
                    if noiommu(*g) {
                        format!("noiommu-{g}")
                    } else {
                        g.to_string()
                    }
                }));
                if iommufd && st.devices.values().any(|d| d.vfio_index.is_some()) {
                    v.push("devices".into());
                }
                v.sort();
                Some(Node::Dir(v))
            }
            ["dev", "vfio", "vfio"] if vfio_loaded => Some(Node::Char(0o666)),
            ["dev", "vfio", "devices"] if vfio_loaded && iommufd => Some(Node::Dir(
                st.devices
                    .values()
                    .filter_map(|d| d.vfio_index.map(|i| format!("vfio{i}")))
                    .collect(),
            )),
            ["dev", "vfio", "devices", n] if vfio_loaded && iommufd => st
                .devices
                .values()
                .any(|d| d.vfio_index.map(|i| format!("vfio{i}")).as_deref() == Some(n))
                .then_some(Node::Char(0o600)),
            ["dev", "vfio", g] if vfio_loaded => {
                let (g, want_noiommu) = match g.strip_prefix("noiommu-") {
                    Some(n) => (n.parse().ok()?, true),
                    None => (g.parse().ok()?, false),
                };
                (st.group_has_vfio(g) && noiommu(g) == want_noiommu).then_some(Node::Char(0o600))
            }
            _ => Self::plain(st, p),
        }
    }

    fn plain(st: &HostState, p: &Path) -> Option<Node> {
        if st.sys.files.contains_key(p) {
            let mode = st.sys.file_modes.get(p).copied().unwrap_or(0o644);
            return Some(Node::File(Attr::Plain(p.to_path_buf()), mode));
        }
        let is_dir = st.sys.dirs.contains(p)
            || st.sys.files.keys().chain(st.sys.dirs.iter()).any(|f| f.starts_with(p) && f != p);
        if !is_dir || p.starts_with("/sys") || p.starts_with("/proc") || p.starts_with("/dev") {
            return None;
        }
        let mut names: BTreeSet<String> = BTreeSet::new();
        for f in st.sys.files.keys().chain(st.sys.dirs.iter()) {
            if let Ok(rest) = f.strip_prefix(p) {
                if let Some(Component::Normal(n)) = rest.components().next() {
                    names.insert(n.to_string_lossy().into_owned());
                }
            }
        }
        Some(Node::Dir(names.into_iter().collect()))
    }

    /// Where a regular file may be created: outside the kernel's filesystems (EACCES
    /// there), in an existing directory (ENOENT otherwise).
    fn plain_file_path(st: &HostState, path: &Path) -> io::Result<PathBuf> {
        let p = normalize(path);
        if is_kernel_path(&p) {
            return Err(err(libc::EACCES));
        }
        let parent = p.parent().unwrap_or(Path::new("/"));
        if !matches!(Self::node(st, parent), Some(Node::Dir(_))) {
            return Err(err(libc::ENOENT));
        }
        Ok(p)
    }

    /// Resolves symbolic links along `path` (the last one only when `follow_last`).
    fn resolve(st: &HostState, path: &Path, follow_last: bool) -> io::Result<PathBuf> {
        let mut todo: Vec<String> = normalize_keep(path);
        todo.reverse();
        let mut cur = PathBuf::from("/");
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            if c == ".." {
                cur.pop();
                continue;
            }
            cur.push(&c);
            let last = todo.is_empty();
            match Self::node(st, &cur) {
                Some(Node::Link(t)) if !last || follow_last => {
                    hops += 1;
                    if hops > 40 {
                        return Err(err(libc::ELOOP));
                    }
                    cur.pop();
                    let mut more = normalize_keep(&t);
                    if t.is_absolute() {
                        cur = PathBuf::from("/");
                    }
                    more.reverse();
                    todo.extend(more);
                }
                Some(Node::Dir(_)) => {}
                Some(_) if last => {}
                Some(_) => return Err(err(libc::ENOTDIR)),
                None => return Err(err(libc::ENOENT)),
            }
        }
        Ok(cur)
    }

    fn fault(st: &mut HostState, op: FaultOp, path: &Path) -> io::Result<()> {
        for f in st.sys.faults.iter_mut() {
            if f.op == op && f.path.as_deref().is_none_or(|p| p == path) && f.seen < f.nth {
                f.seen += 1;
                if f.seen == f.nth {
                    return Err(err(f.errno));
                }
            }
        }
        Ok(())
    }

    fn read_attr(st: &HostState, attr: &Attr) -> io::Result<Vec<u8>> {
        Ok(match attr {
            Attr::Text(s) => s.clone().into_bytes(),
            Attr::Rw(s, _) => s.clone().into_bytes(),
            Attr::WriteOnly(_) => return Err(err(libc::EACCES)),
            Attr::Config(a) => {
                let c = &st.devices[a].config;
                if st.sys.unprivileged {
                    c[..64.min(c.len())].to_vec()
                } else {
                    c.clone()
                }
            }
            Attr::Rom(a) => {
                if !st.sys.rom_enabled.contains(a) {
                    return Err(err(libc::EINVAL));
                }
                st.devices[a].spec.rom.clone().unwrap_or_default()
            }
            Attr::Resource => return Err(err(libc::EIO)),
            Attr::Plain(p) => st.sys.files.get(p).cloned().ok_or_else(|| err(libc::ENOENT))?,
        })
    }

    fn store(st: &mut HostState, ctl: Ctl, data: &[u8]) -> io::Result<()> {
        let text = String::from_utf8_lossy(data);
        let word = text.trim();
        let bdf = || -> io::Result<PciAddress> {
            PciAddress::parse(word)
                .ok()
                .filter(|a| st.devices.contains_key(a))
                .ok_or_else(|| err(libc::ENODEV))
        };
        match ctl {
            Ctl::Unbind(drv) => {
                let a = bdf()?;
                if st.devices[&a].driver.as_deref() != Some(&drv) {
                    return Err(err(libc::ENODEV));
                }
                st.release(a)
            }
            Ctl::Bind(drv) => {
                // bind_store: no match is ENODEV; __driver_probe_device refuses a
                // device that already has a driver with EBUSY.
                let a = bdf()?;
                if !st.matches(&drv, a) {
                    return Err(err(libc::ENODEV));
                }
                if st.devices[&a].driver.is_some() {
                    return Err(err(libc::EBUSY));
                }
                if st.probe_refused(&drv, a) {
                    return Err(err(libc::EINVAL));
                }
                st.set_driver(a, Some(&drv));
                Ok(())
            }
            Ctl::Probe => {
                let a = PciAddress::parse(word)
                    .ok()
                    .filter(|a| st.devices.contains_key(a))
                    .ok_or_else(|| err(libc::ENODEV))?;
                st.probe(a);
                Ok(())
            }
            Ctl::NewId(ref drv) | Ctl::RemoveId(ref drv) => {
                let drv = drv.clone();
                let f: Vec<&str> = word.split_whitespace().collect();
                let (Some(v), Some(d)) = (f.first(), f.get(1)) else {
                    return Err(err(libc::EINVAL));
                };
                let (Ok(v), Ok(d)) = (u16::from_str_radix(v, 16), u16::from_str_radix(d, 16))
                else {
                    return Err(err(libc::EINVAL));
                };
                let add = matches!(ctl, Ctl::NewId(_));
                let ids = st.sys.dynids.entry(drv.clone()).or_default();
                if add {
                    if !ids.insert((v, d)) {
                        return Err(err(libc::EEXIST));
                    }
                    let all: Vec<PciAddress> = st.devices.keys().copied().collect();
                    for a in all {
                        let dev = &st.devices[&a];
                        if dev.driver.is_none()
                            && (dev.spec.vendor, dev.spec.device) == (v, d)
                            && st.matches(&drv, a)
                        {
                            st.set_driver(a, Some(&drv));
                        }
                    }
                } else if !ids.remove(&(v, d)) {
                    return Err(err(libc::ENODEV));
                }
                Ok(())
            }
            Ctl::Override(a) => {
                if data.len() >= 4096 {
                    return Err(err(libc::EINVAL));
                }
                let name = text.split('\n').next().unwrap_or("").to_string();
                st.devices.get_mut(&a).ok_or_else(|| err(libc::ENODEV))?.driver_override =
                    (!name.is_empty()).then_some(name);
                Ok(())
            }
            Ctl::NumVfs(a) => {
                let n: u16 = word.parse().map_err(|_| err(libc::EINVAL))?;
                st.set_numvfs(a, n)
            }
            Ctl::Enable(a) => {
                match word.parse::<u64>().map_err(|_| err(libc::EINVAL))? {
                    0 => st.sys.enabled.remove(&a),
                    _ => st.sys.enabled.insert(a),
                };
                Ok(())
            }
            Ctl::MdevCreate(parent, ty) => {
                if !crate::hostfs::is_uuid(word) {
                    return Err(err(libc::EINVAL));
                }
                let u = word.to_ascii_lowercase();
                if st.sys.mdevs.contains_key(&u) {
                    return Err(err(libc::EEXIST));
                }
                let max = st.devices[&parent]
                    .spec
                    .mdev_types
                    .iter()
                    .find(|t| t.id == ty)
                    .map_or(0, |t| t.max_instances);
                let used = st.sys.mdevs.values().filter(|(p, t)| *p == parent && *t == ty).count();
                if used as u32 >= max {
                    return Err(err(libc::EUSERS));
                }
                st.sys.mdevs.insert(u, (parent, ty));
                Ok(())
            }
            Ctl::MdevRemove(u) => {
                if word != "1" {
                    return Err(err(libc::EINVAL));
                }
                st.sys.mdevs.remove(&u);
                Ok(())
            }
            Ctl::Param(m, p) => {
                st.sys.module_params.insert((m, p), word.to_string());
                Ok(())
            }
            Ctl::RemoveDevice => Err(err(libc::EPERM)),
        }
    }
}

/// Whether a path belongs to the kernel's filesystems (sysfs, procfs, devtmpfs), where
/// no regular file can be created.
fn is_kernel_path(p: &Path) -> bool {
    let p = normalize(p);
    p.starts_with("/sys") || p.starts_with("/proc") || p.starts_with("/dev")
}

/// A held simulated lock; released on drop.
#[derive(Debug)]
struct SimLock {
    host: MockHost,
    path: PathBuf,
}

impl HeldLock for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.host.state().sys.locks.remove(&self.path);
    }
}

fn normalize_keep(p: &Path) -> Vec<String> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

impl HostFs for SimFs {
    fn read_limited(&self, path: &Path, max: usize) -> io::Result<Vec<u8>> {
        let mut st = self.host.state();
        Self::fault(&mut st, FaultOp::Read, path)?;
        let real = Self::resolve(&st, path, true)?;
        let data = match Self::node(&st, &real) {
            Some(Node::File(a, _)) => Self::read_attr(&st, &a)?,
            Some(Node::Dir(_)) => return Err(err(libc::EISDIR)),
            Some(Node::Char(_)) => return Err(not_regular(path, NodeKind::CharDevice)),
            _ => return Err(err(libc::ENOENT)),
        };
        if data.len() > max {
            return Err(too_large(path, max));
        }
        Ok(data)
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let all = self.read(path)?;
        let start = (offset as usize).min(all.len());
        let n = (all.len() - start).min(buf.len());
        buf[..n].copy_from_slice(&all[start..start + n]);
        Ok(n)
    }

    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut st = self.host.state();
        Self::fault(&mut st, FaultOp::Write, path)?;
        let real = match Self::resolve(&st, path, true) {
            Ok(r) => r,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && is_kernel_path(path) => {
                return Err(err(libc::EACCES));
            }
            Err(e) => return Err(e),
        };
        let res = match Self::node(&st, &real) {
            Some(Node::File(Attr::Plain(p), _)) => {
                st.sys.files.insert(p, data.to_vec());
                Ok(())
            }
            Some(Node::File(Attr::WriteOnly(c), _)) | Some(Node::File(Attr::Rw(_, c), _)) => {
                Self::store(&mut st, c, data)
            }
            Some(Node::File(Attr::Rom(a), _)) => {
                match String::from_utf8_lossy(data).trim() {
                    "0" => st.sys.rom_enabled.remove(&a),
                    _ => st.sys.rom_enabled.insert(a),
                };
                Ok(())
            }
            Some(Node::File(Attr::Config(_), _)) => Err(err(libc::EPERM)),
            Some(Node::File(..)) => Err(err(libc::EACCES)),
            Some(Node::Dir(_)) => Err(err(libc::EISDIR)),
            _ => Err(err(libc::EACCES)),
        };
        if res.is_ok() {
            st.sys.writes.push(path.to_path_buf());
            // A group node the write removed (its last device left vfio-pci) takes its
            // owner and mode with it: the kernel makes a new node root's, 0600.
            let gone: Vec<PathBuf> = st
                .sys
                .owners
                .keys()
                .chain(st.sys.modes.keys())
                .filter(|n| n.starts_with("/dev/vfio") && Self::node(&st, n).is_none())
                .cloned()
                .collect();
            for n in gone {
                st.sys.owners.remove(&n);
                st.sys.modes.remove(&n);
            }
        }
        res
    }

    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        let st = self.host.state();
        let real = Self::resolve(&st, path, false)?;
        match Self::node(&st, &real) {
            Some(Node::Link(t)) => Ok(t),
            Some(_) => Err(err(libc::EINVAL)),
            None => Err(err(libc::ENOENT)),
        }
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let st = self.host.state();
        let real = Self::resolve(&st, path, true)?;
        match Self::node(&st, &real) {
            Some(Node::Dir(mut v)) => {
                v.sort();
                v.dedup();
                Ok(v)
            }
            Some(_) => Err(err(libc::ENOTDIR)),
            None => Err(err(libc::ENOENT)),
        }
    }

    fn metadata(&self, path: &Path) -> io::Result<NodeMeta> {
        let st = self.host.state();
        let real = Self::resolve(&st, path, false)?;
        let node = Self::node(&st, &real).ok_or_else(|| err(libc::ENOENT))?;
        let (kind, mode) = match node {
            Node::Dir(_) => (NodeKind::Dir, 0o755),
            Node::Link(_) => (NodeKind::Symlink, 0o777),
            Node::File(_, m) => (NodeKind::File, m),
            Node::Char(m) => (NodeKind::CharDevice, st.sys.modes.get(&real).copied().unwrap_or(m)),
        };
        let (uid, gid) = st.sys.owners.get(&real).copied().unwrap_or((0, 0));
        Ok(NodeMeta { kind, mode, uid, gid })
    }

    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        let mut st = self.host.state();
        Self::fault(&mut st, FaultOp::Chown, path)?;
        let real = Self::resolve(&st, path, false)?;
        match Self::node(&st, &real) {
            None => return Err(err(libc::ENOENT)),
            Some(Node::Link(_)) => return Err(err(libc::ELOOP)),
            Some(_) => {}
        }
        let cur = st.sys.owners.get(&real).copied().unwrap_or((0, 0));
        st.sys.owners.insert(real, (uid.unwrap_or(cur.0), gid.unwrap_or(cur.1)));
        Ok(())
    }

    fn create_dir_all(&self, path: &Path, _mode: u32) -> io::Result<()> {
        let mut st = self.host.state();
        let p = normalize(path);
        if is_kernel_path(&p) {
            return match Self::node(&st, &p) {
                Some(Node::Dir(_)) => Ok(()),
                _ => Err(err(libc::EACCES)),
            };
        }
        if p.ancestors().any(|a| st.sys.files.contains_key(a)) {
            return Err(err(libc::ENOTDIR));
        }
        st.sys.dirs.insert(p);
        Ok(())
    }

    fn replace_file(&self, path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
        let mut st = self.host.state();
        Self::fault(&mut st, FaultOp::Write, path)?;
        let p = Self::plain_file_path(&st, path)?;
        if matches!(Self::node(&st, &p), Some(Node::Dir(_))) {
            return Err(err(libc::EISDIR));
        }
        st.sys.files.insert(p.clone(), data.to_vec());
        st.sys.file_modes.insert(p, mode);
        st.sys.writes.push(path.to_path_buf());
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn HeldLock>> {
        let mut st = self.host.state();
        let p = Self::plain_file_path(&st, path)?;
        if !st.sys.locks.insert(p.clone()) {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        st.sys.files.insert(p.clone(), format!("{}\n", std::process::id()).into_bytes());
        Ok(Box::new(SimLock { host: self.host.clone(), path: p }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.host.state();
        let p = normalize(path);
        if is_kernel_path(&p) {
            return Err(err(libc::EACCES));
        }
        match st.sys.files.remove(&p) {
            Some(_) => {
                st.sys.file_modes.remove(&p);
                Ok(())
            }
            None if Self::node(&st, &p).is_some() => Err(err(libc::EISDIR)),
            None => Err(err(libc::ENOENT)),
        }
    }

    fn modprobe(&self, module: &str) -> io::Result<()> {
        let mut st = self.host.state();
        let m = module_of(module);
        if !st.sys.available_modules.contains(&m) && !st.sys.modules.contains(&m) {
            return Err(io::Error::other(format!("modprobe: FATAL: Module {module} not found")));
        }
        if m == "vfio_pci" {
            st.sys.load_vfio();
        }
        st.sys.modules.insert(m);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::{DeviceSpec, MdevTypeSpec};

    fn a(s: &str) -> PciAddress {
        PciAddress::parse(s).unwrap()
    }

    fn host() -> MockHost {
        let nic = DeviceSpec::igb("0000:02:00.0").driver("igb").group(3);
        let mut gpu = DeviceSpec::new("0000:03:00.0").driver("i915").group(4);
        gpu.mdev_types = vec![MdevTypeSpec {
            id: "i915-GVTg_V5_4".into(),
            name: "GVTg_V5_4".into(),
            description: "low_gm_size: 128MB".into(),
            device_api: "vfio-pci".into(),
            max_instances: 2,
        }];
        gpu.rom = Some(vec![0x55, 0xaa, 1, 2]);
        MockHost::new([DeviceSpec::edu("0000:00:04.0").driver("edu").group(1), nic, gpu])
            .with_sys(|s| *s = SysState::intel_ready())
    }

    fn p(s: &str) -> &Path {
        Path::new(s)
    }

    #[test]
    fn serves_device_attributes_through_the_bus_symlink() {
        let h = host();
        let fs = h.fs();
        let d = "/sys/bus/pci/devices/0000:00:04.0";
        assert_eq!(fs.read_string(&p(d).join("vendor")).unwrap(), "0x1234");
        assert_eq!(fs.read_string(&p(d).join("device")).unwrap(), "0x11e8");
        assert_eq!(fs.read_string(&p(d).join("class")).unwrap(), "0x00ff00");
        assert_eq!(fs.read_string(&p(d).join("driver_override")).unwrap(), "(null)");
        assert_eq!(fs.metadata(p(d)).unwrap().kind, NodeKind::Symlink);
        assert_eq!(fs.read_link(&p(d).join("driver")).unwrap(), p("../../../bus/pci/drivers/edu"));
        assert_eq!(
            fs.read_link(&p(d).join("iommu_group")).unwrap(),
            p("../../../kernel/iommu_groups/1")
        );
        assert_eq!(fs.read(&p(d).join("config")).unwrap().len(), 4096);
        h.state().sys.unprivileged = true;
        assert_eq!(fs.read(&p(d).join("config")).unwrap().len(), 64);
        assert_eq!(
            fs.read_dir(p("/sys/kernel/iommu_groups/1/devices")).unwrap(),
            vec!["0000:00:04.0"]
        );
        assert_eq!(
            fs.read_string(p("/sys/kernel/iommu_groups/1/devices/0000:00:04.0/vendor")).unwrap(),
            "0x1234"
        );
        let res = fs.read_string(&p(d).join("resource")).unwrap();
        assert_eq!(res.lines().count(), 13);
        assert!(fs.exists(&p(d).join("resource0")));
        assert!(!fs.exists(&p(d).join("resource1")));
    }

    #[test]
    fn override_then_probe_binds_and_unbind_needs_the_right_driver() {
        let h = host();
        let fs = h.fs();
        let d = p("/sys/bus/pci/devices/0000:00:04.0");
        fs.modprobe("vfio-pci").unwrap();
        fs.write(&d.join("driver_override"), b"vfio-pci\n").unwrap();
        // Writing the override does not unbind.
        assert_eq!(h.state().devices[&a("0000:00:04.0")].driver.as_deref(), Some("edu"));
        assert!(!fs.exists(p("/dev/vfio/1")));
        // Unbind through the wrong driver: ENODEV.
        let e = fs.write(p("/sys/bus/pci/drivers/vfio-pci/unbind"), b"0000:00:04.0").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODEV));
        fs.write(&d.join("driver/unbind"), b"0000:00:04.0").unwrap();
        assert!(!fs.exists(&d.join("driver")));
        fs.write(p("/sys/bus/pci/drivers_probe"), b"0000:00:04.0").unwrap();
        assert_eq!(
            fs.read_link(&d.join("driver")).unwrap(),
            p("../../../bus/pci/drivers/vfio-pci")
        );
        assert!(fs.exists(p("/dev/vfio/1")));
        assert_eq!(fs.read_dir(&d.join("vfio-dev")).unwrap(), vec!["vfio0"]);
        // Open devices cannot be unbound.
        h.set_device_open(a("0000:00:04.0"), true);
        let e = fs.write(&d.join("driver/unbind"), b"0000:00:04.0").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBUSY));
        h.set_device_open(a("0000:00:04.0"), false);
        fs.write(&d.join("driver/unbind"), b"0000:00:04.0").unwrap();
        // Bind to the native driver is refused while the override names another.
        let e = fs.write(p("/sys/bus/pci/drivers/edu/bind"), b"0000:00:04.0").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODEV));
        fs.write(&d.join("driver_override"), b"\n").unwrap();
        assert_eq!(fs.read_string(&d.join("driver_override")).unwrap(), "(null)");
        fs.write(p("/sys/bus/pci/drivers/edu/bind"), b"0000:00:04.0").unwrap();
        assert_eq!(h.state().devices[&a("0000:00:04.0")].driver.as_deref(), Some("edu"));
        let e = fs.write(p("/sys/bus/pci/drivers/edu/bind"), b"0000:00:04.0").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBUSY));
        let e = fs.write(p("/sys/bus/pci/drivers_probe"), b"0000:09:00.0").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODEV));
        assert_eq!(h.state().devices[&a("0000:00:04.0")].vfio_index, None);
    }

    #[test]
    fn new_id_binds_every_matching_driverless_device() {
        let h = MockHost::new([
            DeviceSpec::edu("0000:00:04.0").group(1),
            DeviceSpec::edu("0000:00:05.0").group(2),
        ])
        .with_sys(|s| s.load_vfio());
        let fs = h.fs();
        fs.write(p("/sys/bus/pci/drivers/vfio-pci/new_id"), b"1234 11e8").unwrap();
        assert!(h.state().devices.values().all(|d| d.driver.as_deref() == Some("vfio-pci")));
        let e = fs.write(p("/sys/bus/pci/drivers/vfio-pci/new_id"), b"1234 11e8").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        fs.write(p("/sys/bus/pci/drivers/vfio-pci/remove_id"), b"1234 11e8").unwrap();
    }

    #[test]
    fn sriov_numvfs_follows_the_kernel_rules() {
        let h = host();
        let fs = h.fs();
        let n = p("/sys/bus/pci/devices/0000:02:00.0/sriov_numvfs");
        assert_eq!(
            fs.read_string(p("/sys/bus/pci/devices/0000:02:00.0/sriov_totalvfs")).unwrap(),
            "4"
        );
        assert_eq!(fs.write(n, b"5").unwrap_err().raw_os_error(), Some(libc::ERANGE));
        fs.write(n, b"2").unwrap();
        assert_eq!(fs.read_string(n).unwrap(), "2");
        let vf = fs.read_link(p("/sys/bus/pci/devices/0000:02:00.0/virtfn1")).unwrap();
        assert_eq!(vf, p("../0000:02:10.1"));
        assert_eq!(
            fs.read_string(p("/sys/bus/pci/devices/0000:02:00.0/virtfn1/device")).unwrap(),
            "0x10ca"
        );
        assert!(fs.exists(p("/sys/bus/pci/devices/0000:02:10.1/physfn")));
        assert_eq!(
            fs.read_link(p("/sys/bus/pci/devices/0000:02:10.0/driver")).unwrap(),
            p("../../../bus/pci/drivers/igbvf")
        );
        assert_eq!(fs.write(n, b"3").unwrap_err().raw_os_error(), Some(libc::EBUSY));
        fs.write(n, b"0").unwrap();
        assert!(!fs.exists(p("/sys/bus/pci/devices/0000:02:10.0")));
        // Needs a PF driver.
        fs.write(p("/sys/bus/pci/devices/0000:02:00.0/driver/unbind"), b"0000:02:00.0").unwrap();
        assert_eq!(fs.write(n, b"1").unwrap_err().raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn rom_reads_only_after_enable_and_mdev_create_remove() {
        let h = host();
        let fs = h.fs();
        let d = p("/sys/bus/pci/devices/0000:03:00.0");
        assert_eq!(fs.read(&d.join("rom")).unwrap_err().raw_os_error(), Some(libc::EINVAL));
        fs.write(&d.join("rom"), b"1").unwrap();
        assert_eq!(fs.read(&d.join("rom")).unwrap(), vec![0x55, 0xaa, 1, 2]);
        let t = d.join("mdev_supported_types/i915-GVTg_V5_4");
        assert_eq!(fs.read_string(&t.join("available_instances")).unwrap(), "2");
        let u = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";
        assert_eq!(
            fs.write(&t.join("create"), b"nope").unwrap_err().raw_os_error(),
            Some(libc::EINVAL)
        );
        fs.write(&t.join("create"), u.as_bytes()).unwrap();
        assert_eq!(
            fs.write(&t.join("create"), u.as_bytes()).unwrap_err().raw_os_error(),
            Some(libc::EEXIST)
        );
        assert_eq!(fs.read_string(&t.join("available_instances")).unwrap(), "1");
        assert_eq!(fs.read_dir(&t.join("devices")).unwrap(), vec![u]);
        fs.write(&p("/sys/bus/mdev/devices").join(u).join("remove"), b"1").unwrap();
        assert_eq!(fs.read_string(&t.join("available_instances")).unwrap(), "2");
    }

    #[test]
    fn faults_hit_the_nth_matching_operation_only() {
        let h = host();
        let fs = h.fs();
        h.inject_fault(FaultOp::Write, None, 2, libc::EIO);
        fs.replace_file(p("/etc/a"), b"1", 0o644).unwrap();
        assert_eq!(fs.write(p("/etc/a"), b"2").unwrap_err().raw_os_error(), Some(libc::EIO));
        fs.write(p("/etc/a"), b"3").unwrap();
        assert_eq!(fs.read(p("/etc/a")).unwrap(), b"3");
        h.inject_fault(FaultOp::Read, Some("/proc/cmdline"), 1, libc::EACCES);
        assert!(fs.read(p("/proc/cmdline")).is_err());
        assert!(fs.read_string(p("/proc/cmdline")).unwrap().contains("intel_iommu=on"));
    }

    #[test]
    fn host_facts_modules_and_dev_nodes() {
        let h = host();
        let fs = h.fs();
        assert!(!fs.exists(p("/sys/module/vfio_pci")));
        assert!(!fs.exists(p("/dev/vfio/vfio")));
        assert!(fs.modprobe("nosuch").is_err());
        fs.modprobe("vfio-pci").unwrap();
        assert!(fs.exists(p("/sys/module/vfio_pci")));
        assert_eq!(fs.metadata(p("/dev/vfio/vfio")).unwrap().kind, NodeKind::CharDevice);
        assert_eq!(
            fs.read_string(p("/sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts"))
                .unwrap(),
            "N"
        );
        assert_eq!(fs.read_string(p("/sys/class/iommu/dmar0/intel-iommu/ecap")).unwrap(), "f0205e");
        assert!(fs.read_dir(p("/etc")).unwrap().contains(&"default".to_string()));
        fs.create_dir_all(p("/run/vfiotool"), 0o700).unwrap();
        assert!(fs.read_dir(p("/run/vfiotool")).unwrap().is_empty());
        assert_eq!(
            fs.write(p("/sys/bus/pci/nosuch"), b"1").unwrap_err().raw_os_error(),
            Some(libc::EACCES)
        );
    }

    #[test]
    fn vfio_pci_does_not_take_bridges() {
        let h = MockHost::new([DeviceSpec::bridge("0000:00:1c.0").group(2)])
            .with_sys(|s| s.load_vfio());
        let fs = h.fs();
        let d = p("/sys/bus/pci/devices/0000:00:1c.0");
        fs.write(&d.join("driver_override"), b"vfio-pci").unwrap();
        fs.write(p("/sys/bus/pci/drivers_probe"), b"0000:00:1c.0").unwrap();
        assert!(!fs.exists(&d.join("driver")));
        let e = fs.write(p("/sys/bus/pci/drivers/vfio-pci/bind"), b"0000:00:1c.0").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn config_is_the_live_image_and_procfs_follows_the_description() {
        let h = host().with_sys(|s| {
            s.nets.push(SimNet {
                name: "eth0".into(),
                device: a("0000:02:00.0"),
                default_route: true,
                ipv4: vec!["10.0.0.2/24".into()],
            });
            s.blocks.push(SimBlock { name: "sda".into(), device: a("0000:00:04.0") });
            s.mounts.push("/dev/sda1 / ext4 rw 0 0".into());
            s.memlock = Some(65536);
            s.modules.insert("iommufd".into());
        });
        let fs = h.fs();
        h.state().devices.get_mut(&a("0000:00:04.0")).unwrap().config[0x40] = 0xab;
        assert_eq!(fs.read(p("/sys/bus/pci/devices/0000:00:04.0/config")).unwrap()[0x40], 0xab);
        let route = fs.read_string(p("/proc/net/route")).unwrap();
        assert!(route.lines().any(|l| l.starts_with("eth0\t00000000")), "{route}");
        assert_eq!(
            fs.read_link(p("/sys/class/net/eth0")).unwrap(),
            p("../../devices/pci0000:02/0000:02:00.0/net/eth0")
        );
        assert_eq!(fs.read_string(p("/sys/class/net/eth0/device/vendor")).unwrap(), "0x8086");
        assert_eq!(fs.read_string(p("/sys/block/sda/device/device")).unwrap(), "0x11e8");
        assert!(fs.read_string(p("/proc/mounts")).unwrap().contains("/dev/sda1 /"));
        assert!(fs.read_string(p("/proc/self/limits")).unwrap().contains("65536"));
        let m = fs.metadata(p("/dev/iommu")).unwrap();
        assert_eq!((m.kind, m.mode, m.uid), (NodeKind::CharDevice, 0o600, 0));
        fs.chown(p("/dev/iommu"), Some(107), None).unwrap();
        assert_eq!(fs.metadata(p("/dev/iommu")).unwrap().uid, 107);
    }
}
