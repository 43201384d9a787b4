//! # vfio-core
//!
//! Safe, typed access to PCI devices through Linux VFIO, on both kernel interfaces
//! (legacy container/group and iommufd with device cdevs), plus the host-side
//! management a passthrough setup needs (IOMMU groups, driver binding, SR-IOV,
//! mediated devices) and pure decoders for PCI config space and option ROMs.
//!
//! The crate is layered (see `docs/architecture.md`):
//!
//! - pure decoders over bytes: [`pci`] (addresses, config space, capabilities) and
//!   [`rom`] (option ROM images);
//! - the kernel seam [`kernel::VfioKernel`] and the host seam [`hostfs::HostFs`], with real
//!   backends and, under the `mock` feature, a simulated host in the `mock` module;
//! - VFIO objects built on the kernel seam;
//! - the host layer built on the host seam (feature `host`).
//!
//! ## Features
//!
//! - default: the VFIO objects, the seams with their real backends, and the decoders;
//!   what a VMM embeds, with a small dependency tree;
//! - `serde`: `Serialize` for the decoded and reported types;
//! - `host`: the host layer (module `host`: groups, binding, SR-IOV, mdev, doctor, persist,
//!   snapshot), with `serde` and the `pci.ids`/filter machinery it needs;
//! - `kvm`: KVM integration (module `kvm`, with rust-vmm's `kvm-ioctls`): the KVM VFIO
//!   device and irqfd routing of a device's vectors;
//! - `mock`: the simulated host (module `mock`) for tests of code that embeds this crate
//!   (turns on `host`, since the simulated sysfs reacts as the host layer expects).

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_op_in_unsafe_fn)]

mod bytes;
pub mod container;
pub mod device;
pub mod dma;
mod dma_perm;
pub mod error;
pub mod fds;
pub mod feature;
pub mod group;
#[cfg(feature = "host")]
#[cfg_attr(docsrs, doc(cfg(feature = "host")))]
pub mod host;
pub mod hostfs;
pub mod info;
pub mod iommufd;
pub mod iova;
pub mod irq;
pub mod kernel;
#[cfg(feature = "kvm")]
#[cfg_attr(docsrs, doc(cfg(feature = "kvm")))]
pub mod kvm;
pub mod pci;
pub mod region;
pub mod reset;
pub mod rom;
pub mod vfio;

#[cfg(feature = "mock")]
#[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
pub mod mock;

/// The README's example, compiled as a doctest so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use container::{Container, IommuType};
pub use device::Device;
pub use dma::{AddressSpace, DmaBuffer, DmaMapping, DmaPerm, DmaPool};
pub use error::{Error, Result};
pub use fds::DeviceFds;
pub use feature::{Feature, VfToken};
pub use irq::{IrqIndex, IrqInfo};
pub use pci::PciAddress;
pub use region::{HostArea, RegionIndex, RegionMapping};
pub use vfio::{Interface, MdevLocation, Vfio};
