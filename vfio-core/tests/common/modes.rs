//! The IOMMU modes the mock offers, for tests that run every case in every mode (as the
//! kernel's VFIO selftests do).

#![allow(dead_code)]

use vfio_core::container::IommuType;
use vfio_core::Interface;

/// One IOMMU mode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Type1v2,
    Type1,
    Iommufd,
}

/// Every mode with DMA translation.
pub const MODES: [Mode; 3] = [Mode::Type1v2, Mode::Type1, Mode::Iommufd];

/// The interface that opens a device in `m`.
pub fn interface(m: Mode) -> Interface {
    match m {
        Mode::Type1v2 => Interface::Container,
        Mode::Type1 => Interface::ContainerWith(IommuType::Type1),
        Mode::Iommufd => Interface::Iommufd,
    }
}

/// The container IOMMU type `m` asks for (`None`: the default choice).
pub fn wanted(m: Mode) -> Option<IommuType> {
    (m == Mode::Type1).then_some(IommuType::Type1)
}
