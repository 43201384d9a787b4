//! `vfiotool list`: PCI devices with ids, names, driver, IOMMU group and isolation.

use vfio_core::host::devices::{list_devices, PciDevice};
use vfio_core::host::filter::{AddressFilter, DeviceFilter, IdFilter, NameFilter};

use crate::context::{ids, out, print_json, warn_skipped, Context};
use crate::format::{Column, Table};

/// Arguments of `list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Select by ids, as lspci: vendor:device[:class[:prog-if]] in hex, `*` or empty for any.
    #[arg(short = 'd', long = "device", value_name = "V:D[:C]")]
    pub ids: Vec<String>,
    /// Select by a case-insensitive regular expression over vendor and device names.
    #[arg(long, value_name = "REGEX")]
    pub name: Vec<String>,
    /// Select by address: 0000:01:00.0, 01:00.0, or a slot 01:00.
    #[arg(value_name = "ADDRESS")]
    pub addresses: Vec<String>,
}

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

/// The text table; the driver column widens to fit its longest entry.
pub fn table(devs: &[PciDevice]) -> String {
    let mut t = Table::new(&[
        Column::left(13),
        Column::left(15),
        Column::left(6).fit(),
        Column::left(6),
        Column::left(9),
        Column::left(0),
    ]);
    t.row(["ADDRESS", "VENDOR:DEV:CLS", "DRIVER", "GROUP", "ISOLATED", "NAME"]);
    for d in devs {
        let group = d.iommu_group.map_or("-".into(), |g| g.to_string());
        let iso = match d.isolated {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        };
        let class = d.class_name.clone().unwrap_or_else(|| format!("class {:06x}", d.class));
        t.row([
            d.address.to_string(),
            d.ids(),
            driver_text(d),
            group,
            iso.to_string(),
            format!("{} [{}]", d.name(), class),
        ]);
    }
    t.render()
}

/// Runs `list`.
pub fn run(args: &ListArgs, ctx: &mut Context) -> vfio_core::Result<i32> {
    let f = filter(args)?;
    let scan = list_devices(&*ctx.fs, &ids(ctx))?;
    warn_skipped(ctx, &scan.skipped);
    let devs: Vec<PciDevice> = scan.items.into_iter().filter(|d| f.matches(d)).collect();
    if args.json {
        print_json(ctx, &devs);
    } else {
        let t = table(&devs);
        out!(ctx, "{}", t.trim_end());
    }
    Ok(0)
}
