//! PCI: addresses, and pure decoders of config space and capabilities.

mod address;

pub use address::PciAddress;
