//! A simulated host: a mock VFIO/iommufd kernel and a simulated sysfs over one shared
//! state, so that everything the toolkit does can be tested without root or hardware.
//!
//! Build a [`MockHost`] from [`DeviceSpec`]s, then hand [`MockHost::kernel`] and
//! [`MockHost::fs`] to the toolkit in place of the real backends. The two views agree
//! the way a real host's do: binding a device to vfio-pci through the simulated sysfs
//! makes its group node appear to the mock kernel, and config-space writes through VFIO
//! show in sysfs `config`.
//!
//! The mock models kernel semantics (errnos included); it does not return canned
//! results. Fault injection ([`MockHost::inject`], see [`Fault`]) makes a chosen kernel
//! call or file operation fail.

pub mod crash;
pub mod fault;
pub mod kernel;
pub mod models;
pub mod spec;
pub mod sysfs;

pub use crash::{CrashFs, SplitFs};
pub use fault::{Fault, FaultOp, FaultTarget, FaultWhen};
pub use kernel::{DeviceModel, KernelState, MockKernel, MockKernelConfig, ModelCtx, MOCK_FD_BASE};
pub use spec::{BarSpec, DeviceSpec, MdevTypeSpec, MsixSpec, RegionSpec, SriovSpec};
pub use sysfs::{SimFs, SimMdevParent, SimParent, SysState};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::pci::PciAddress;

/// A simulated host shared by the mock kernel and the simulated sysfs.
///
/// Cloning gives another handle on the same host.
#[derive(Clone)]
pub struct MockHost {
    state: Arc<Mutex<HostState>>,
}

impl std::fmt::Debug for MockHost {
    /// A summary: the whole state is large (config images, BAR memory); inspect it with
    /// [`MockHost::state`].
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.state();
        f.debug_struct("MockHost").field("devices", &st.devices.keys().collect::<Vec<_>>()).finish()
    }
}

/// The live state of one simulated PCI function.
#[derive(Debug, Clone)]
pub struct SimDevice {
    /// How the device was described.
    pub spec: DeviceSpec,
    /// The driver the device is bound to now.
    pub driver: Option<String>,
    /// The `driver_override` attribute (`None` reads back as `(null)`).
    pub driver_override: Option<String>,
    /// The live 4 KiB config space (VFIO writes and sysfs `config` see the same bytes).
    pub config: Vec<u8>,
    /// `N` of `/dev/vfio/devices/vfioN` while bound to vfio-pci.
    pub vfio_index: Option<u32>,
}

/// The first PCI domain of the keys the mock kernel knows mdev instances by
/// ([`HostState::mdev_devices`]): above any domain a simulated host has, and never shown
/// in sysfs.
pub const MDEV_KEY_DOMAIN: u32 = 0xffff_0000;

/// The state behind a [`MockHost`].
#[derive(Debug, Default)]
pub struct HostState {
    /// The PCI functions, by address.
    pub devices: BTreeMap<PciAddress, SimDevice>,
    /// Mediated device instances as VFIO sees them, by UUID: each a device of its own
    /// (its type's [`device`](MdevTypeSpec::device)) in a group of its own, bound to its
    /// mdev driver. Its `spec.address` is the key the mock kernel knows it by (in domain
    /// [`MDEV_KEY_DOMAIN`] and up), which sysfs never shows.
    pub mdev_devices: BTreeMap<String, SimDevice>,
    /// The mock kernel's state (containers, groups, fds, mappings, interrupts).
    pub kernel: kernel::KernelState,
    /// Host-level facts and non-device sysfs state (see [`sysfs`]).
    pub sys: SysState,
    /// The injected faults of both views (see [`MockHost::inject`]).
    pub(crate) faults: fault::Faults,
}

impl HostState {
    /// See [`MockHost::set_driver`].
    pub fn set_driver(&mut self, address: PciAddress, driver: Option<&str>) -> bool {
        let next_index = self.next_vfio_index();
        let Some(dev) = self.devices.get_mut(&address) else { return false };
        dev.driver = driver.map(str::to_string);
        if driver == Some("vfio-pci") {
            if dev.vfio_index.is_none() {
                dev.vfio_index = Some(next_index);
            }
        } else {
            dev.vfio_index = None;
            self.kernel.forget_vf_token(address);
        }
        kernel::refresh_noiommu(self);
        true
    }

    /// The lowest `N` of `/dev/vfio/devices/vfioN` no device (PCI or mdev) has.
    pub fn next_vfio_index(&self) -> u32 {
        let used: Vec<u32> = self.vfio_devices().filter_map(|d| d.vfio_index).collect();
        (0..).find(|i| !used.contains(i)).unwrap_or(0)
    }

    /// Every device VFIO may know: the PCI functions, then the mdev instances.
    pub fn vfio_devices(&self) -> impl Iterator<Item = &SimDevice> {
        self.devices.values().chain(self.mdev_devices.values())
    }

    /// The device the mock kernel knows by `key`: a PCI function by its address, or an
    /// mdev instance by its key.
    pub fn vfio_device(&self, key: PciAddress) -> Option<&SimDevice> {
        if is_mdev_key(key) {
            self.mdev_devices.values().find(|d| d.spec.address == key)
        } else {
            self.devices.get(&key)
        }
    }

    /// As [`HostState::vfio_device`], to change it.
    pub fn vfio_device_mut(&mut self, key: PciAddress) -> Option<&mut SimDevice> {
        vfio_device_in(&mut self.devices, &mut self.mdev_devices, key)
    }

    /// The name VFIO knows a device by: its PCI address, or an mdev instance's UUID.
    pub fn device_name(&self, key: PciAddress) -> String {
        if is_mdev_key(key) {
            let uuid = self.mdev_devices.iter().find(|(_, d)| d.spec.address == key);
            uuid.map_or_else(String::new, |(u, _)| u.clone())
        } else {
            key.to_string()
        }
    }

    /// The IOMMU group a device is in now: its own, or the no-IOMMU group vfio gave it
    /// (`true` in the second field). An mdev instance (by its key) is in the group vfio
    /// made for it.
    pub fn group_of(&self, address: PciAddress) -> Option<(u32, bool)> {
        let d = self.vfio_device(address)?;
        match d.spec.iommu_group {
            Some(_) if d.spec.group_at_probe && d.driver.is_none() => None,
            Some(g) => Some((g, false)),
            None => self.kernel.noiommu_ids.get(&address).map(|g| (*g, true)),
        }
    }
}

/// Whether a key of the mock kernel is an mdev instance's ([`MDEV_KEY_DOMAIN`]).
pub fn is_mdev_key(key: PciAddress) -> bool {
    key.domain >= MDEV_KEY_DOMAIN
}

/// The device known by `key` among the PCI functions and the mdev instances, for callers
/// that hold the two maps apart from the rest of the state.
pub(crate) fn vfio_device_in<'a>(
    devices: &'a mut BTreeMap<PciAddress, SimDevice>,
    mdevs: &'a mut BTreeMap<String, SimDevice>,
    key: PciAddress,
) -> Option<&'a mut SimDevice> {
    if is_mdev_key(key) {
        mdevs.values_mut().find(|d| d.spec.address == key)
    } else {
        devices.get_mut(&key)
    }
}

impl MockHost {
    /// A host with the given devices, each bound to the driver its spec names.
    pub fn new(devices: impl IntoIterator<Item = DeviceSpec>) -> Self {
        let mut state = HostState::default();
        for spec in devices {
            let dev = SimDevice {
                driver: spec.driver.clone(),
                driver_override: None,
                config: spec.config_image(),
                vfio_index: None,
                spec,
            };
            let (address, driver) = (dev.spec.address, dev.driver.clone());
            state.devices.insert(address, dev);
            state.set_driver(address, driver.as_deref());
        }
        MockHost { state: Arc::new(Mutex::new(state)) }
    }

    /// Binds a device to a driver (or unbinds it with `None`) directly, bypassing the
    /// simulated sysfs; keeps `vfio_index` consistent (assigned while on vfio-pci).
    /// Returns `false` when no device has that address.
    pub fn set_driver(&self, address: PciAddress, driver: Option<&str>) -> bool {
        self.state().set_driver(address, driver)
    }

    /// Locks the shared state (for the backends and for tests that inspect it).
    pub fn state(&self) -> MutexGuard<'_, HostState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}
