//! Device models for the mock kernel: the behaviour behind a simulated device's BAR
//! (see [`DeviceModel`](super::kernel::DeviceModel)).

pub mod edu;

pub use edu::EduModel;
