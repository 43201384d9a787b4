//! The `vfiotool` command line as a library: argument parsing and every command, run
//! against injectable backends so the whole tool is testable on a simulated host.
//!
//! [`cli`] assembles the commands and dispatches; each command lives in [`cmd`] with
//! its arguments; what several commands share is in [`context`] (the backends and
//! output streams), [`format`](mod@format) (sizes, ids, tables) and [`open`] (opening a device
//! through VFIO).

#![warn(missing_docs)]

pub mod cli;
pub mod cmd;
pub mod context;
pub mod dry_run;
pub mod format;
pub mod open;
pub mod wording;

pub use cli::{main_with_env, run};
pub use context::Context;
