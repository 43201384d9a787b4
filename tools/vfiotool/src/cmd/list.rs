//! `vfiotool list`: PCI devices with ids, names, driver, IOMMU group and isolation.

use vfio_core::host::devices::{list_devices, PciDevice};
use vfio_core::host::filter::{AddressFilter, DeviceFilter, IdFilter, NameFilter};

use crate::cli::{Context, ListArgs};
use crate::cmd::{ids, out, print_json};

/// Builds the filter from the arguments.
pub fn filter(args: &ListArgs) -> vfio_core::Result<DeviceFilter> {
    Ok(DeviceFilter {
        ids: args.ids.iter().map(|s| IdFilter::parse(s)).collect::<Result<_, _>>()?,
        addresses: args
            .addresses
            .iter()
            .map(|s| AddressFilter::parse(s))
            .collect::<Result<_, _>>()?,
        names: args.name.iter().map(|s| NameFilter::parse(s)).collect::<Result<_, _>>()?,
    })
}

/// The driver column: the driver, and the override when it names another driver.
fn driver_text(d: &PciDevice) -> String {
    let mut driver = d.driver.clone().unwrap_or_else(|| "-".into());
    if let Some(o) = d.driver_override.as_ref().filter(|o| Some(*o) != d.driver.as_ref()) {
        driver += &format!(" (override {o})");
    }
    driver
}

/// The text table; columns widen to fit their longest entry.
pub fn table(devs: &[PciDevice]) -> String {
    let drivers: Vec<String> = devs.iter().map(driver_text).collect();
    let dw = drivers.iter().map(String::len).max().unwrap_or(0).max(6);
    let mut s = format!(
        "{:<13} {:<15} {:<dw$} {:<6} {:<9} {}\n",
        "ADDRESS", "VENDOR:DEV:CLS", "DRIVER", "GROUP", "ISOLATED", "NAME"
    );
    for (d, driver) in devs.iter().zip(drivers) {
        let group = d.iommu_group.map_or("-".into(), |g| g.to_string());
        let iso = match d.isolated {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        };
        let class = d.class_name.clone().unwrap_or_else(|| format!("class {:06x}", d.class));
        s += &format!(
            "{:<13} {:<15} {:<dw$} {:<6} {:<9} {} [{}]\n",
            d.address.to_string(),
            d.ids(),
            driver,
            group,
            iso,
            d.name(),
            class
        );
    }
    s
}

/// Runs `list`.
pub fn run(args: &ListArgs, ctx: &mut Context) -> vfio_core::Result<i32> {
    let f = filter(args)?;
    let scan = list_devices(&*ctx.fs, &ids(ctx))?;
    crate::cmd::warn_skipped(ctx, &scan.skipped);
    let devs: Vec<PciDevice> = scan.items.into_iter().filter(|d| f.matches(d)).collect();
    if args.json {
        print_json(ctx, &devs);
    } else {
        let t = table(&devs);
        out!(ctx, "{}", t.trim_end());
    }
    Ok(0)
}
