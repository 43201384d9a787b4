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
//!   backends and, under the `mock` feature, a simulated host in [`mock`];
//! - VFIO objects built on the kernel seam;
//! - the host layer built on the host seam.

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod error;
pub mod hostfs;
pub mod kernel;
pub mod pci;
pub mod rom;

#[cfg(feature = "mock")]
pub mod mock;

pub use error::{Error, Result};
pub use pci::PciAddress;
