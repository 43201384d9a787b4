//! One module per command.

pub mod info;
pub mod list;
pub mod rom;
