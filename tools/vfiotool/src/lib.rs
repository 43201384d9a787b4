//! The `vfiotool` command line as a library: argument parsing and every command, run
//! against injectable backends so the whole tool is testable on a simulated host.

#![warn(missing_docs)]

pub mod cli;
pub mod cmd;
pub mod dry_run;

pub use cli::{main_with_env, run, Context};
