//! Workspace-level tests: the conformance scenarios that run both against the mock
//! kernel (in `cargo test`) and against the real kernel (inside the VM lab), so that the
//! two can be compared value by value and errno by errno.

#![warn(missing_docs)]

pub mod conformance;
