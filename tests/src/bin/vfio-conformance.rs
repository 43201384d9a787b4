//! Runs the conformance scenarios against the real kernel.
//!
//! `vfio-conformance ADDRESS [auto|container|type1|iommufd] [--expect FILE]` prints the
//! report; with `--expect` it compares the report with a recorded file instead and exits
//! non-zero, listing every difference, when they disagree.

use std::process::ExitCode;

use vfio_core::container::IommuType;
use vfio_core::{Interface, PciAddress, Vfio};
use vfio_tests::conformance::{run, Report};

fn usage() -> ExitCode {
    eprintln!("usage: vfio-conformance ADDRESS [auto|container|type1|iommufd] [--expect FILE]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let expect = match args.iter().position(|a| a == "--expect") {
        Some(i) if i + 1 < args.len() => {
            let file = args.remove(i + 1);
            args.remove(i);
            Some(file)
        }
        Some(_) => return usage(),
        None => None,
    };
    let address = match args.first().map(|a| PciAddress::parse(a)) {
        Some(Ok(a)) => a,
        Some(Err(e)) => {
            eprintln!("vfio-conformance: {e}");
            return ExitCode::from(2);
        }
        None => return usage(),
    };
    let interface = match args.get(1).map(String::as_str) {
        None | Some("auto") => Interface::Auto,
        Some("container") => Interface::Container,
        Some("type1") => Interface::ContainerWith(IommuType::Type1),
        Some("iommufd") => Interface::Iommufd,
        Some(other) => {
            eprintln!("vfio-conformance: unknown interface {other:?}");
            return usage();
        }
    };
    let report = run(&Vfio::host(), address, interface);
    let Some(file) = expect else {
        print!("{}", report.text());
        return ExitCode::SUCCESS;
    };
    let expected = match std::fs::read_to_string(&file) {
        Ok(t) => Report::parse(&t),
        Err(e) => {
            eprintln!("vfio-conformance: cannot read {file}: {e}");
            return ExitCode::from(2);
        }
    };
    let diff = report.diff(&expected);
    if diff.is_empty() {
        println!("conformance {file}: {} observations agree", report.lines.len());
        ExitCode::SUCCESS
    } else {
        println!("conformance {file}: {} differences", diff.len());
        for d in diff {
            println!("  {d}");
        }
        ExitCode::FAILURE
    }
}
