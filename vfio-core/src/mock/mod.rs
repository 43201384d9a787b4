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
//! results. Fault injection makes a chosen [`KernelOp`](crate::kernel::KernelOp) fail.

pub mod crash;
pub mod kernel;
pub mod models;
pub mod spec;
pub mod sysfs;

pub use crash::{CrashFs, SplitFs};
pub use kernel::{
    DeviceModel, FaultWhen, KernelState, MockKernel, MockKernelConfig, ModelCtx, MOCK_FD_BASE,
};
pub use spec::{BarKind, BarSpec, DeviceSpec, MdevTypeSpec, MsixSpec, RegionSpec, SriovSpec};
pub use sysfs::{FaultOp, SimFs, SimMdevParent, SimParent, SysState};

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

/// The state behind a [`MockHost`].
#[derive(Debug, Default)]
pub struct HostState {
    /// The PCI functions, by address.
    pub devices: BTreeMap<PciAddress, SimDevice>,
    /// The mock kernel's state (containers, groups, fds, mappings, interrupts).
    pub kernel: kernel::KernelState,
    /// Host-level facts and non-device sysfs state (see [`sysfs`]).
    pub sys: SysState,
}

impl HostState {
    /// See [`MockHost::set_driver`].
    pub fn set_driver(&mut self, address: PciAddress, driver: Option<&str>) -> bool {
        let next_index =
            (0..).find(|i| !self.devices.values().any(|d| d.vfio_index == Some(*i))).unwrap_or(0);
        let Some(dev) = self.devices.get_mut(&address) else { return false };
        dev.driver = driver.map(str::to_string);
        if driver == Some("vfio-pci") {
            if dev.vfio_index.is_none() {
                dev.vfio_index = Some(next_index);
            }
        } else {
            dev.vfio_index = None;
        }
        kernel::refresh_noiommu(self);
        true
    }

    /// The IOMMU group a device is in now: its own, or the no-IOMMU group vfio gave it
    /// (`true` in the second field).
    pub fn group_of(&self, address: PciAddress) -> Option<(u32, bool)> {
        let d = self.devices.get(&address)?;
        match d.spec.iommu_group {
            Some(_) if d.spec.group_at_probe && d.driver.is_none() => None,
            Some(g) => Some((g, false)),
            None => self.kernel.noiommu_ids.get(&address).map(|g| (*g, true)),
        }
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
