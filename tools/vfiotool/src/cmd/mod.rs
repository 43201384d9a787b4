//! One module per command. Each owns its clap arguments and its `run`; what commands
//! share lives outside `cmd` ([`crate::context`], [`crate::format`], [`crate::open`]),
//! so no command imports another (`tests/layout.rs` keeps it so).

pub mod bench;
pub mod bind;
pub mod doctor;
pub mod groups;
pub mod info;
pub mod list;
pub mod mdev;
pub mod persist;
pub mod restore;
pub mod rom;
pub mod snapshot;
pub mod sriov;
pub mod unbind;
