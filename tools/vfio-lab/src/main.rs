//! `vfio-lab`: boots a QEMU VM with virtio-iommu and test devices and runs the toolkit in it.
//!
//! The VM (q35 under TCG) has a virtio-iommu, an edu device, an e1000e with the iPXE option
//! ROM, an NVMe controller and a PCIe root port with a two-function device behind it (one
//! IOMMU group holding two devices). Two kernels: Debian's stock 6.12 (vfio as modules, legacy
//! container only) and a custom 6.12 with iommufd, the vfio device cdev and no-IOMMU mode.

#![warn(missing_docs)]

mod apt;
mod error;
mod host;
mod initramfs;
mod kernel;
mod qemu;
mod selftests;
mod suite;
mod topology;
mod vm;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::error::{LabError, Result};
use crate::initramfs::{GuestAction, InitramfsSpec};
use crate::kernel::{Kernel, KernelKind};
use crate::qemu::Qemu;
use crate::topology::{IommuMode, VmConfig};

/// Boot a nested VM with a real IOMMU (virtio-iommu) and emulated PCI devices, and run the
/// toolkit in it.
#[derive(Debug, Parser)]
#[command(name = "vfio-lab", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a command in the VM (the project's binaries are in /bin); exits with its status.
    Run {
        #[command(flatten)]
        boot: BootArgs,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// An interactive shell in the VM on this terminal (Ctrl-A X quits QEMU).
    Shell {
        #[command(flatten)]
        boot: BootArgs,
    },
    /// Run the in-VM test suite on every kernel (Debian's 6.12 and newest stock kernels, the
    /// custom 6.12 and newest builds, the custom ones also without an IOMMU) and print a
    /// summary table.
    Suite {
        #[command(flatten)]
        vm: VmArgs,
        /// Only this kernel (repeatable; default: all).
        #[arg(long, value_enum)]
        kernel: Vec<KernelKind>,
    },
    /// Boot the custom kernel, bind edu to vfio-pci and show what the toolkit sees.
    Demo {
        #[command(flatten)]
        vm: VmArgs,
    },
    /// Run the benchmarks on the VM's real kernel: vfio-core, raw C and vfio-ioctls side by
    /// side on the edu devices (see docs/benchmarks.md).
    Bench {
        /// Guest kernel.
        #[arg(long, value_enum, default_value = "stock")]
        kernel: KernelKind,
        /// Interface vfio-core and C use: container or iommufd (custom kernel only).
        #[arg(long, default_value = "container", value_parser = ["container", "iommufd"])]
        interface: String,
        /// A quick run that only checks everything works.
        #[arg(long)]
        smoke: bool,
        #[command(flatten)]
        vm: VmArgs,
    },
    /// Fetch or build a kernel (cached in $VFIO_LAB_CACHE, default ~/.cache/vfio-lab) and
    /// print its path.
    Kernel {
        /// Which kernel.
        #[arg(value_enum, default_value = "custom")]
        kind: KernelKind,
    },
}

/// Options of commands that boot one configuration.
#[derive(Debug, Args)]
struct BootArgs {
    /// Guest kernel.
    #[arg(long, value_enum, default_value = "custom")]
    kernel: KernelKind,
    /// Boot without virtio-iommu and with vfio's unsafe no-IOMMU mode (custom kernel only).
    #[arg(long)]
    no_iommu: bool,
    #[command(flatten)]
    vm: VmArgs,
}

/// Options shared by every command that boots the VM.
#[derive(Debug, Args)]
pub struct VmArgs {
    /// QEMU accelerator: tcg (works everywhere) or kvm (where nested KVM works).
    #[arg(long, default_value = "tcg", value_parser = ["tcg", "kvm"])]
    accel: String,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    memory: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Kill the VM after this many seconds (per boot).
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Show the whole console (boot log included), not only the command's output.
    #[arg(long, short)]
    verbose: bool,
    /// Workspace packages whose binaries are built static and put in the guest's /bin.
    #[arg(long = "package", short = 'p', default_values_t = vec!["vfiotool".to_string()])]
    packages: Vec<String>,
    /// Also build the packages' examples into /bin.
    #[arg(long)]
    examples: bool,
    /// Do not build the project's binaries (use only --bin / --test).
    #[arg(long)]
    no_build: bool,
    /// Extra executable for the guest's /bin (repeatable).
    #[arg(long = "bin", value_name = "PATH")]
    bins: Vec<PathBuf>,
    /// Executable for the guest's /tests, run by the suite (repeatable).
    #[arg(long = "test", value_name = "PATH")]
    tests: Vec<PathBuf>,
    /// Every executable in this directory goes to /tests.
    #[arg(long, value_name = "DIR")]
    tests_dir: Option<PathBuf>,
    /// Extra kernel command line arguments.
    #[arg(long, value_name = "ARGS", default_value = "")]
    append: String,
    /// The QEMU binary.
    #[arg(long, default_value = "qemu-system-x86_64")]
    qemu: PathBuf,
    /// Use the newest QEMU of the release's backports (QEMU 10 on Debian 12, with the igb
    /// SR-IOV NIC), fetched into the cache, instead of --qemu.
    #[arg(long)]
    newest_qemu: bool,
}

/// The project's binaries and tests, prepared once per invocation.
pub struct Payload {
    bins: Vec<PathBuf>,
    tests: Vec<PathBuf>,
}

/// Builds (or takes from the options) the binaries and tests the guest gets.
pub fn payload(vm: &VmArgs) -> Result<Payload> {
    let mut bins = if vm.no_build {
        Vec::new()
    } else {
        host::build_static(&host::StaticBuild {
            packages: vm.packages.clone(),
            examples: vm.examples,
        })?
    };
    bins.extend(vm.bins.iter().cloned());
    let mut tests = vm.tests.clone();
    if let Some(d) = &vm.tests_dir {
        let found = host::executables_in(d)?;
        if found.is_empty() {
            return Err(LabError::Usage(format!(
                "--tests-dir {}: no executables there",
                d.display()
            )));
        }
        tests.extend(found);
    }
    for p in bins.iter().chain(&tests) {
        if !p.is_file() {
            return Err(LabError::Usage(format!("{}: no such file", p.display())));
        }
    }
    Ok(Payload { bins, tests })
}

/// The kernel command line of a boot.
fn cmdline(iommu: IommuMode, extra: &str) -> String {
    let mut s = String::from(
        "console=ttyS0 panic=-1 quiet \
         vfio_iommu_type1.allow_unsafe_interrupts=1 iommufd.allow_unsafe_interrupts=1 \
         vfio_pci.enable_sriov=1",
    );
    if iommu == IommuMode::None {
        s.push_str(" vfio.enable_unsafe_noiommu_mode=1");
    }
    if !extra.trim().is_empty() {
        s.push(' ');
        s.push_str(extra.trim());
    }
    s
}

fn nonce() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", t, std::process::id())
}

/// Boots one configuration; returns the guest command's status.
pub fn boot(
    kernel: &Kernel,
    qemu: &Qemu,
    iommu: IommuMode,
    action: GuestAction,
    vm: &VmArgs,
    payload: &Payload,
) -> Result<i32> {
    if iommu == IommuMode::None && !kernel.kind.is_custom() {
        return Err(LabError::Usage(format!(
            "the {} kernel has no VFIO_NOIOMMU: use --kernel custom or custom-newest with --no-iommu",
            kernel.kind.name()
        )));
    }
    let work = tempfile::Builder::new()
        .prefix("vfio-lab-")
        .tempdir()
        .map_err(|e| LabError::io("create temporary directory", std::env::temp_dir(), e))?;
    let disk = work.path().join("nvme.img");
    let f = std::fs::File::create(&disk).map_err(|e| LabError::io("create", &disk, e))?;
    f.set_len(16 << 20).map_err(|e| LabError::io("resize", &disk, e))?;
    let nonce = nonce();
    let spec = InitramfsSpec {
        bins: payload.bins.clone(),
        tests: payload.tests.clone(),
        modules: kernel.modules.clone(),
        env: topology::guest_env(kernel.kind.name(), iommu, &qemu.version, qemu.has_igb()),
        files: guest_files()?,
        action: action.clone(),
        nonce: nonce.clone(),
    };
    let initrd = work.path().join("initrd.gz");
    initramfs::build(&spec, work.path(), &initrd)?;
    let cfg = VmConfig {
        qemu: qemu.binary.clone(),
        firmware: qemu.firmware.clone(),
        qemu_env: qemu.env.clone(),
        newer_devices: qemu.has_igb(),
        accel: vm.accel.clone(),
        memory_mib: vm.memory,
        cpus: vm.cpus,
        kernel: kernel.image.clone(),
        initrd,
        nvme_image: disk,
        iommu,
        cmdline: cmdline(iommu, &vm.append),
    };
    match action {
        GuestAction::Shell => vm::interactive(&cfg),
        GuestAction::Run(_) => {
            let echo = if vm.verbose { vm::Echo::All } else { vm::Echo::Command };
            vm::run(&cfg, &nonce, Duration::from_secs(vm.timeout), echo)
        }
    }
}

/// Files every guest gets besides the binaries: the e1000e ROM QEMU loads, and the recorded
/// conformance answers (`tests/conformance/<series>/*` in `/lab/conformance`).
fn guest_files() -> Result<Vec<(PathBuf, String)>> {
    let mut files =
        vec![(PathBuf::from(topology::E1000E_ROM), topology::GUEST_E1000E_ROM.to_string())];
    let root = host::workspace_root().join("tests/conformance");
    let list = |d: &std::path::Path| -> Result<Vec<PathBuf>> {
        let rd = std::fs::read_dir(d).map_err(|e| LabError::io("read directory", d, e))?;
        let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        v.sort();
        Ok(v)
    };
    for series in list(&root)?.into_iter().filter(|p| p.is_dir()) {
        for f in list(&series)?.into_iter().filter(|p| p.is_file()) {
            let rel = f.strip_prefix(&root).unwrap_or(&f).to_string_lossy().into_owned();
            files.push((f, format!("{}/{rel}", topology::GUEST_CONFORMANCE)));
        }
    }
    Ok(files)
}

/// Installs what booting the VM needs on the host.
pub fn prepare_vm_host() -> Result<()> {
    host::ensure_packages(host::VM_PACKAGES)
}

/// The QEMU a boot command asked for.
fn chosen_qemu(vm: &VmArgs) -> Result<Qemu> {
    if vm.newest_qemu {
        qemu::ensure_newest(&kernel::cache_dir())
    } else {
        Qemu::host(&vm.qemu)
    }
}

fn run_cli(cli: Cli) -> Result<i32> {
    match cli.command {
        Cmd::Kernel { kind } => {
            let k = kernel::ensure(kind)?;
            eprintln!("vfio-lab: {}", k.description);
            for m in &k.modules {
                eprintln!("vfio-lab: module {} {}", m.path.display(), m.params);
            }
            println!("{}", k.image.display());
            Ok(0)
        }
        Cmd::Run { boot: b, cmd } => {
            prepare_vm_host()?;
            let payload = payload(&b.vm)?;
            let kernel = kernel::ensure(b.kernel)?;
            let iommu = if b.no_iommu { IommuMode::None } else { IommuMode::Virtio };
            boot(&kernel, &chosen_qemu(&b.vm)?, iommu, GuestAction::Run(cmd), &b.vm, &payload)
        }
        Cmd::Shell { boot: b } => {
            prepare_vm_host()?;
            let payload = payload(&b.vm)?;
            let kernel = kernel::ensure(b.kernel)?;
            let iommu = if b.no_iommu { IommuMode::None } else { IommuMode::Virtio };
            boot(&kernel, &chosen_qemu(&b.vm)?, iommu, GuestAction::Shell, &b.vm, &payload)
        }
        Cmd::Suite { vm, kernel } => suite::run(&vm, &kernel),
        Cmd::Bench { kernel: kind, interface, smoke, vm } => {
            prepare_vm_host()?;
            if interface == "iommufd" && !kind.is_custom() {
                return Err(LabError::Usage(format!(
                    "the {} kernel has no iommufd: use --kernel custom with --interface iommufd",
                    kind.name()
                )));
            }
            let mut payload = payload(&vm)?;
            payload.bins.push(host::build_static_bench()?);
            let kernel = kernel::ensure(kind)?;
            let mut cmd = vec![
                "env".to_string(),
                format!("VFIO_BENCH_INTERFACE={interface}"),
                "/lab/bench.sh".to_string(),
            ];
            if smoke {
                cmd.push("--smoke".into());
            }
            boot(
                &kernel,
                &chosen_qemu(&vm)?,
                IommuMode::Virtio,
                GuestAction::Run(cmd),
                &vm,
                &payload,
            )
        }
        Cmd::Demo { mut vm } => {
            prepare_vm_host()?;
            // The demo runs the edu driver example of vfio-core besides vfiotool.
            if !vm.packages.iter().any(|p| p == "vfio-core") {
                vm.packages.push("vfio-core".into());
            }
            vm.examples = true;
            let payload = payload(&vm)?;
            let kernel = kernel::ensure(KernelKind::Custom)?;
            boot(
                &kernel,
                &chosen_qemu(&vm)?,
                IommuMode::Virtio,
                GuestAction::Run(vec!["/lab/demo.sh".into()]),
                &vm,
                &payload,
            )
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let code = match run_cli(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vfio-lab: {e}");
            2
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_the_command_after_dashes() {
        let cli =
            Cli::try_parse_from(["vfio-lab", "run", "--kernel", "stock", "--", "vfiotool", "list"])
                .unwrap();
        match cli.command {
            Cmd::Run { boot, cmd } => {
                assert_eq!(boot.kernel, KernelKind::Stock);
                assert_eq!(cmd, vec!["vfiotool", "list"]);
                assert_eq!(boot.vm.packages, vec!["vfiotool"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["vfio-lab", "run"]).is_err());
        assert!(Cli::try_parse_from(["vfio-lab", "run", "--accel", "hvf", "--", "x"]).is_err());
    }

    #[test]
    fn cmdline_modes() {
        let v = cmdline(IommuMode::Virtio, "");
        assert!(v.contains("vfio_iommu_type1.allow_unsafe_interrupts=1"));
        assert!(v.contains("iommufd.allow_unsafe_interrupts=1"));
        assert!(v.contains("vfio_pci.enable_sriov=1"));
        assert!(!v.contains("noiommu"));
        let n = cmdline(IommuMode::None, " loglevel=7 ");
        assert!(n.contains("vfio.enable_unsafe_noiommu_mode=1"));
        assert!(n.ends_with(" loglevel=7"));
    }

    #[test]
    fn stock_without_iommu_is_refused() {
        let k = Kernel {
            kind: KernelKind::Stock,
            image: "/nonexistent".into(),
            modules: vec![],
            description: String::new(),
        };
        let vm = match Cli::try_parse_from(["vfio-lab", "demo"]).unwrap().command {
            Cmd::Demo { vm } => vm,
            _ => unreachable!(),
        };
        let p = Payload { bins: vec![], tests: vec![] };
        let q = Qemu {
            binary: "/nonexistent".into(),
            firmware: vec![],
            env: vec![],
            version: "7.2.0".into(),
        };
        let e = boot(&k, &q, IommuMode::None, GuestAction::Shell, &vm, &p).unwrap_err();
        assert!(matches!(e, LabError::Usage(_)), "{e}");
    }
}
