//! PCI: addresses, and pure decoders of config space and capabilities.
//!
//! Inside, each module uses only those before it: `error` (the decoders' error) and
//! `space` (the config-space view, diagnostics, BARs) and `header` (the 64-byte header's
//! layouts), then `caps` (the chains and the
//! capability decoders), then `config` (the full decode). The `layers` test checks it.

mod address;
pub mod caps;
pub mod config;
mod error;
mod header;
mod resource;
mod space;
pub mod vpd;

pub use address::PciAddress;
pub use caps::{Capability, CapabilityFields, RawCapability};
pub use config::{decode, decode_with, ConfigSpace, DecodeOptions, DecodedConfig, Diagnostic};
pub use error::DecodeError;
