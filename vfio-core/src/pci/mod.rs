//! PCI: addresses, and pure decoders of config space and capabilities.

mod address;
pub mod caps;
pub mod config;

pub use address::PciAddress;
pub use caps::{Capability, CapabilityFields, RawCapability};
pub use config::{decode, decode_with, ConfigSpace, DecodeOptions, DecodedConfig, Diagnostic};
