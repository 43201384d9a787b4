//! Runs the conformance scenarios against the real kernel and prints the report.
//!
//! `vfio-conformance ADDRESS [auto|container|type1|iommufd]`; inside the VM lab, the
//! suite compares the output with `tests/conformance/edu-<mode>.expected`.

use std::process::ExitCode;

use vfio_core::container::IommuType;
use vfio_core::{Interface, PciAddress, Vfio};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(Ok(address)) = args.first().map(|a| PciAddress::parse(a)) else {
        eprintln!("usage: vfio-conformance ADDRESS [auto|container|type1|iommufd]");
        return ExitCode::from(2);
    };
    let interface = match args.get(1).map(String::as_str) {
        None | Some("auto") => Interface::Auto,
        Some("container") => Interface::Container,
        Some("type1") => Interface::ContainerWith(IommuType::Type1),
        Some("iommufd") => Interface::Iommufd,
        Some(other) => {
            eprintln!("vfio-conformance: unknown interface {other:?}");
            return ExitCode::from(2);
        }
    };
    let report = vfio_tests::conformance::run(&Vfio::host(), address, interface);
    print!("{}", report.text());
    ExitCode::SUCCESS
}
