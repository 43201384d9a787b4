//! `edu`: a complete userspace driver for QEMU's edu test device.
//!
//! ```text
//! cargo run -p vfio-core --example edu -- 0000:00:04.0 [auto|container|iommufd]
//! ```
//!
//! Bind the device to vfio-pci first (`vfiotool bind 0000:00:04.0`). It identifies the
//! device, checks liveness, computes a factorial with the completion delivered as an MSI
//! on an eventfd, and round-trips a buffer through the device by DMA, checking the data.

mod driver;

use std::process::ExitCode;
use std::time::Duration;

use driver::{edu_pool, fill, Edu, MAX_DMA};
use vfio_core::{Interface, PciAddress, Vfio};

const TIMEOUT: Duration = Duration::from_secs(5);

fn run(address: PciAddress, interface: Interface) -> vfio_core::Result<bool> {
    let vfio = Vfio::host();
    let device = vfio.open(address, interface)?;
    let via = match device.iommufd_devid() {
        Some(id) => format!("iommufd (device id {id})"),
        None => format!("container, IOMMU group {}", device.group().map_or(0, |g| g.id())),
    };
    println!("opened {} through {via}", device.name());

    let mut edu = Edu::new(&device)?;
    let mut ok = true;
    let mut check = |what: &str, pass: bool| {
        println!("{:<40} {}", what, if pass { "ok" } else { "FAILED" });
        ok &= pass;
    };

    let ident = edu.identify()?;
    check(&format!("identify: version {:?}", ident.unwrap_or_default()), ident.is_some());
    check("liveness: 0x12345678 reads back inverted", edu.liveness(0x1234_5678)?);
    check("BAR0 through mmap", edu.bar.is_mapped(0, 4));

    edu.enable_msi()?;
    let (fact, irq) = edu.factorial(5, TIMEOUT)?;
    check(&format!("factorial(5) = {fact}"), fact == 120);
    check("factorial completion MSI on the eventfd", irq);

    let pool = edu_pool(&device)?;
    let src = pool.alloc(4096)?;
    let dst = pool.alloc(4096)?;
    let data = fill(&src, 0x5a, MAX_DMA as usize)?;
    check(
        &format!("DMA RAM -> edu from IOVA {:#x}", src.iova()),
        edu.dma_to_device(src.iova(), MAX_DMA, TIMEOUT)?,
    );
    check(
        &format!("DMA edu -> RAM to IOVA {:#x}", dst.iova()),
        edu.dma_from_device(dst.iova(), MAX_DMA, TIMEOUT)?,
    );
    let mut back = vec![0u8; MAX_DMA as usize];
    dst.read(0, &mut back)?;
    check("DMA round trip data matches", back == data);
    device.disable_irqs(vfio_core::IrqIndex::Msi)?;
    Ok(ok)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(addr) = args.first() else {
        eprintln!("usage: edu ADDRESS [auto|container|iommufd]");
        return ExitCode::from(2);
    };
    let address = match PciAddress::parse(addr) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("edu: {e}");
            return ExitCode::from(2);
        }
    };
    let interface = match args.get(1).map(String::as_str) {
        None | Some("auto") => Interface::Auto,
        Some("container") => Interface::Container,
        Some("iommufd") => Interface::Iommufd,
        Some(other) => {
            eprintln!("edu: unknown interface {other:?}: auto, container or iommufd");
            return ExitCode::from(2);
        }
    };
    match run(address, interface) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("edu: {e}");
            ExitCode::FAILURE
        }
    }
}
