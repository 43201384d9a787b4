//! `vfiotool persist`: the boot-time configuration putting devices on vfio-pci, in
//! marked blocks of the files it shares with the user; `--list` shows it, `--remove`
//! takes it back. See [`vfio_core::host::persist`].

use vfio_core::host::persist::{
    parse_numvfs, persist, plan_persist, plan_remove, read_persisted, remove, write_persist,
    FileChange, PersistPlan, PersistRequest, BEGIN, END, MODPROBE_CONF, UDEV_RULES,
};
use vfio_core::Error;

use crate::context::{address, out, Context};
use crate::dry_run::DryRunFs;

/// Arguments of `persist`.
#[derive(Debug, clap::Args)]
pub struct PersistArgs {
    /// Devices to put on vfio-pci at every boot (default: those bound to vfio-pci now).
    /// With --remove: the devices or PFs to remove (default: everything).
    #[arg(value_name = "ADDRESS")]
    pub addresses: Vec<String>,
    /// Write the files (vfiotool's block in each; the other lines stay) instead of
    /// printing them.
    #[arg(long)]
    pub write: bool,
    /// With --write or --remove: print the changes (and a diff of each file), change
    /// nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Claim exactly these addresses (a udev rule setting driver_override) instead of
    /// every device with their vendor:device ids (options vfio-pci ids=).
    #[arg(long)]
    pub per_device: bool,
    /// Set a PF's number of VFs at every boot: PF=N, e.g. 0000:02:00.0=4 (repeatable).
    #[arg(long, value_name = "PF=N")]
    pub numvfs: Vec<String>,
    /// Persist even devices the host uses (its display, network, storage; bridges),
    /// and ids that also claim such a device.
    #[arg(long)]
    pub force: bool,
    /// Show the devices, ids and VF counts vfiotool persisted.
    #[arg(long)]
    pub list: bool,
    /// Remove the named devices or PFs (all when none is named) from vfiotool's blocks;
    /// lines of your own stay.
    #[arg(long)]
    pub remove: bool,
}

fn refuse(option: &str, reason: &str) -> Error {
    Error::Invalid { what: "option", input: option.into(), reason: reason.into() }
}

/// Refuses combinations that mean nothing, each with what to do instead.
fn check(args: &PersistArgs) -> vfio_core::Result<()> {
    if args.list {
        let other = [
            (args.write, "--write"),
            (args.remove, "--remove"),
            (args.per_device, "--per-device"),
            (!args.numvfs.is_empty(), "--numvfs"),
            (args.force, "--force"),
            (!args.addresses.is_empty(), "an address"),
        ];
        if let Some((_, o)) = other.iter().find(|(on, _)| *on) {
            return Err(refuse(
                "--list",
                &format!("it shows everything persisted and takes no {o}; run 'vfiotool persist --list' alone"),
            ));
        }
    }
    if args.remove {
        let other = [
            (args.write, "--write"),
            (args.per_device, "--per-device"),
            (!args.numvfs.is_empty(), "--numvfs"),
            (args.force, "--force"),
        ];
        if let Some((_, o)) = other.iter().find(|(on, _)| *on) {
            return Err(refuse(
                "--remove",
                &format!("it writes the files itself and takes no {o}; give the addresses to remove (none: everything), and --dry-run to preview"),
            ));
        }
    }
    Ok(())
}

/// Runs `persist`.
pub fn run(args: &PersistArgs, ctx: &mut Context) -> vfio_core::Result<i32> {
    check(args)?;
    let devices = args.addresses.iter().map(|a| address(a)).collect::<Result<Vec<_>, _>>()?;
    if args.list {
        return list(ctx);
    }
    if args.remove {
        return run_remove(&devices, args.dry_run, ctx);
    }
    let numvfs = args.numvfs.iter().map(|s| parse_numvfs(s)).collect::<Result<Vec<_>, _>>()?;
    let req = PersistRequest { devices, per_device: args.per_device, numvfs, force: args.force };
    if args.write && !args.dry_run {
        let plan = persist(&*ctx.fs, &req)?;
        print_notes(&plan, ctx);
        print_written(&plan, ctx);
        print_after(&plan, ctx);
        return Ok(0);
    }
    let plan = plan_persist(&*ctx.fs, &req)?;
    print_notes(&plan, ctx);
    if args.write {
        dry_run(&plan, ctx)?;
    } else {
        print_files(&plan, ctx);
    }
    print_after(&plan, ctx);
    Ok(0)
}

fn run_remove(
    devices: &[vfio_core::PciAddress],
    dry: bool,
    ctx: &mut Context,
) -> vfio_core::Result<i32> {
    let plan = if dry { plan_remove(&*ctx.fs, devices)? } else { remove(&*ctx.fs, devices)? };
    if plan.removed.is_empty() {
        out!(ctx, "nothing to remove: vfiotool persisted nothing");
        return Ok(0);
    }
    print_notes(&plan, ctx);
    let what: Vec<String> = plan.removed.iter().map(|a| a.to_string()).collect();
    if dry {
        out!(ctx, "would remove {} from vfiotool's blocks", what.join(", "));
        dry_run(&plan, ctx)?;
    } else {
        out!(ctx, "removed {} from vfiotool's blocks", what.join(", "));
        print_written(&plan, ctx);
    }
    print_after(&plan, ctx);
    Ok(0)
}

fn print_notes(plan: &PersistPlan, ctx: &mut Context) {
    for w in &plan.warnings {
        out!(ctx, "warning: {}", crate::wording::cli(w));
    }
    if !plan.also_claimed.is_empty() {
        let v: Vec<String> = plan.also_claimed.iter().map(|a| a.to_string()).collect();
        out!(
            ctx,
            "warning: ids= also claims {} (same vendor:device); persist with --per-device instead if they must stay on the host",
            v.join(", ")
        );
    }
}

fn unchanged_note(plan: &PersistPlan, ctx: &mut Context) -> bool {
    if plan.files.is_empty() {
        out!(
            ctx,
            "nothing to change: vfiotool's blocks already hold this (see vfiotool persist --list)"
        );
        return true;
    }
    false
}

/// Without --write: the files as they would be.
fn print_files(plan: &PersistPlan, ctx: &mut Context) {
    if unchanged_note(plan, ctx) {
        return;
    }
    for f in &plan.files {
        let how = match (&f.old, &f.new) {
            (None, _) => "new file",
            (Some(_), Some(_)) => "vfiotool's block changes; the other lines stay",
            (Some(_), None) => "deleted: it held only vfiotool's block",
        };
        out!(ctx, "# {} ({how})", f.path.display());
        if let Some(text) = &f.new {
            out!(ctx, "{}", text.trim_end());
        }
    }
    out!(ctx, "write them with the same command and --write");
}

/// A unified diff of one file change, old against new.
pub fn unified_diff(f: &FileChange) -> String {
    let old = f.old.as_deref().unwrap_or("");
    let new = f.new.as_deref().unwrap_or("");
    let path = f.path.display().to_string();
    let from = if f.old.is_some() { path.clone() } else { "/dev/null".into() };
    let to = if f.new.is_some() { path } else { "/dev/null".into() };
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&from, &to)
        .to_string()
}

/// --dry-run: the writes a real run makes, then a diff per file.
fn dry_run(plan: &PersistPlan, ctx: &mut Context) -> vfio_core::Result<()> {
    if unchanged_note(plan, ctx) {
        return Ok(());
    }
    let dry = DryRunFs::new(ctx.fs.clone());
    write_persist(&dry, plan)?;
    dry.print(ctx);
    for f in &plan.files {
        out!(ctx, "{}", unified_diff(f).trim_end());
    }
    Ok(())
}

/// After a real run: what was written.
fn print_written(plan: &PersistPlan, ctx: &mut Context) {
    if unchanged_note(plan, ctx) {
        return;
    }
    for f in &plan.files {
        if f.old.is_some() {
            out!(ctx, "saved the previous {} as {}", f.path.display(), f.backup_path().display());
        }
        match f.new {
            Some(_) => out!(ctx, "wrote {}", f.path.display()),
            None => out!(ctx, "deleted {} (it held only vfiotool's block)", f.path.display()),
        }
    }
}

fn print_after(plan: &PersistPlan, ctx: &mut Context) {
    if plan.after.is_empty() {
        return;
    }
    out!(ctx, "then run:");
    for c in &plan.after {
        out!(ctx, "  {}", crate::wording::cli(c));
    }
}

/// --list: what vfiotool's blocks hold.
fn list(ctx: &mut Context) -> vfio_core::Result<i32> {
    let st = read_persisted(&*ctx.fs)?;
    for (file, line) in &st.foreign {
        out!(ctx, "warning: {file}: a line inside vfiotool's block that it did not write: {line}");
    }
    let p = &st.persisted;
    if p.is_empty() {
        out!(
            ctx,
            "nothing persisted by vfiotool (its blocks, between '{BEGIN}' and '{END}', would be in {})",
            vfio_core::host::persist::MANAGED_FILES.join(", ")
        );
        return Ok(0);
    }
    out!(ctx, "{:<13} {:<13} DETAIL", "ADDRESS", "HOW");
    for d in &p.by_id {
        let mut detail = format!("ids={}", d.id());
        if let Some(n) = &d.native {
            detail += &format!(", softdep {n}");
        }
        if d.display {
            detail += ", disable_vga=1";
        }
        out!(ctx, "{:<13} {:<13} {detail}  ({MODPROBE_CONF})", d.address.to_string(), "by id");
    }
    for a in &p.by_address {
        out!(
            ctx,
            "{:<13} {:<13} driver_override=vfio-pci  ({UDEV_RULES})",
            a.to_string(),
            "per device"
        );
    }
    for (a, n) in &p.numvfs {
        out!(ctx, "{:<13} {:<13} sriov_numvfs={n}  ({UDEV_RULES})", a.to_string(), "VF count");
    }
    out!(ctx, "remove with: vfiotool persist --remove [ADDRESS...]");
    Ok(0)
}
