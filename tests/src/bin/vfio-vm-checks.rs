//! `vfio-vm-checks`: the library against the real kernel, inside the VM lab.
//!
//! The lab's suite runs it in every boot (stock kernel, custom kernel, custom kernel in
//! no-IOMMU mode). It finds the devices through the `VFIO_LAB_*` variables, binds them to
//! vfio-pci through `vfio_core::host::bind`, runs every check the boot offers in every
//! interface (type1v2 and type1 containers, iommufd, no-IOMMU), skips the others with the
//! reason, and restores every device to the driver it had, even when a check fails.
//!
//! Output: one line per check (`ok`, `FAILED ...: why`, `skipped ...: reason`), then
//! `N passed, M failed, K skipped`. The exit status is non-zero when anything failed.

use std::panic::AssertUnwindSafe;
use std::process::ExitCode;

use vfio_core::container::IommuType;
use vfio_core::host::bind::{bind, BindRequest};
use vfio_core::host::current_driver;
use vfio_core::host::restore::restore;
use vfio_core::hostfs::RealFs;
use vfio_core::{Interface, PciAddress, Vfio};
use vfio_tests::conformance;

#[path = "../vmchecks/crash.rs"]
mod crash;
#[path = "../../../vfio-core/examples/edu/driver.rs"]
mod driver;
#[path = "../vmchecks/edu.rs"]
mod edu;
#[path = "../vmchecks/fdpass.rs"]
mod fdpass;
#[path = "../vmchecks/kvm.rs"]
mod kvm;
#[path = "../vmchecks/limits.rs"]
mod limits;
#[path = "../vmchecks/liveupdate.rs"]
mod liveupdate;
#[path = "../vmchecks/lowpower.rs"]
mod lowpower;
#[path = "../vmchecks/mdev.rs"]
mod mdev;
#[path = "../vmchecks/noalloc.rs"]
mod noalloc;
#[path = "../vmchecks/report.rs"]
mod report;
#[path = "../vmchecks/reset.rs"]
mod reset;
#[path = "../vmchecks/vftoken.rs"]
mod vftoken;

use report::{ensure, Ctx, Outcome, Report};

#[global_allocator]
static ALLOCATOR: noalloc::Counting = noalloc::Counting;

/// One way of opening a device, as the conformance files name it.
#[derive(Debug, Clone)]
pub struct Mode {
    /// `type1v2`, `type1`, `iommufd` or `noiommu`.
    pub name: &'static str,
    /// The interface that gives this mode.
    pub interface: Interface,
    /// Whether DMA goes through an IOMMU (no: no-IOMMU mode).
    pub dma: bool,
}

/// Every mode, by name.
pub fn mode_by_name(name: &str) -> Option<Mode> {
    let (interface, dma) = match name {
        "type1v2" => (Interface::Container, true),
        "type1" => (Interface::ContainerWith(IommuType::Type1), true),
        "iommufd" => (Interface::Iommufd, true),
        "noiommu" => (Interface::Auto, false),
        _ => return None,
    };
    let name = ["type1v2", "type1", "iommufd", "noiommu"].into_iter().find(|n| *n == name)?;
    Some(Mode { name, interface, dma })
}

/// Page-aligned, pre-faulted anonymous memory, unmapped on drop.
pub struct Mem {
    ptr: *mut u8,
    len: usize,
}

impl Mem {
    /// `len` bytes of zeroed memory.
    pub fn new(len: usize) -> Mem {
        // SAFETY: a fresh anonymous mapping aliases nothing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap of {len} bytes of test memory");
        Mem { ptr: p.cast(), len }
    }

    /// The address, for mapping.
    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }

    /// Sets every byte.
    pub fn fill(&self, v: u8) {
        for i in 0..self.len {
            // SAFETY: in bounds of the mapping; volatile because a device may write it.
            unsafe { std::ptr::write_volatile(self.ptr.add(i), v) };
        }
    }

    /// A copy of the contents.
    pub fn bytes(&self) -> Vec<u8> {
        // SAFETY: in bounds of the mapping; volatile because a device may have written it.
        (0..self.len).map(|i| unsafe { std::ptr::read_volatile(self.ptr.add(i)) }).collect()
    }
}

impl Drop for Mem {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `new`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The lab's devices and configuration, from the environment.
struct Lab {
    edu: PciAddress,
    edu2: PciAddress,
    testdev: PciAddress,
    nvme: PciAddress,
    e1000e: PciAddress,
    iommu: bool,
    /// `/dev/vfio/vfio` is iommufd's compat container (`VFIO_LAB_CONTAINER=compat`).
    compat: bool,
    /// The kernel series (`6.12`), which names the conformance directory.
    series: String,
    /// Where the kernel and QEMU came from, for recorded answers.
    source: String,
    /// Check groups left out ([`SKIP_VAR`]).
    skip: Vec<String>,
}

/// The running kernel's release (`uname -r`).
fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string()
}

/// Names check groups to leave out, comma-separated: edu, conformance, noalloc, limits,
/// memlock, shared, hotreset, reset, crash, fdpass, liveupdate, kvm, mdev, lowpower, vftoken
/// (for narrowing down a problem).
const SKIP_VAR: &str = "VFIO_VM_CHECKS_SKIP";

impl Lab {
    fn from_env() -> Result<Lab, String> {
        let addr = |var: &str| -> Result<PciAddress, String> {
            let v = std::env::var(var).map_err(|_| format!("{var} is not set"))?;
            PciAddress::parse(&v).map_err(|e| format!("{var}: {e}"))
        };
        Ok(Lab {
            edu: addr("VFIO_LAB_EDU")?,
            edu2: addr("VFIO_LAB_EDU2")?,
            testdev: addr("VFIO_LAB_TESTDEV")?,
            nvme: addr("VFIO_LAB_NVME")?,
            e1000e: addr("VFIO_LAB_E1000E")?,
            iommu: std::env::var("VFIO_LAB_IOMMU").as_deref() != Ok("none"),
            compat: std::env::var("VFIO_LAB_CONTAINER").as_deref() == Ok("compat"),
            series: conformance::series(&release()).ok_or("no kernel release")?,
            source: format!(
                "Linux {} ({} kernel), QEMU {}, {}",
                release(),
                std::env::var("VFIO_LAB_KERNEL").unwrap_or_default(),
                std::env::var("VFIO_LAB_QEMU").unwrap_or_default(),
                match std::env::var("VFIO_LAB_IOMMU").as_deref() {
                    Ok("none") => "no IOMMU (vfio.enable_unsafe_noiommu_mode=1)",
                    _ => "virtio-iommu",
                }
            ),
            skip: std::env::var(SKIP_VAR)
                .unwrap_or_default()
                .split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        })
    }
}

/// Check 2: the conformance scenarios against what this kernel answered before
/// (`tests/conformance/<series>/edu-<mode>.expected`, copied to the guest's
/// `$VFIO_LAB_CONFORMANCE`). A kernel or mode with no recorded answers fails and prints
/// them, headed by their source, ready to be saved as that file.
fn conformance_check(rep: &mut Report, vfio: &Vfio, edu: PciAddress, mode: &Mode, lab: &Lab) {
    let got = conformance::run(vfio, edu, mode.interface);
    let file = conformance::file_name(&lab.series, &conformance_mode(mode, lab));
    let dir = std::env::var("VFIO_LAB_CONFORMANCE").unwrap_or_else(|_| "/lab/conformance".into());
    let label = format!(
        "conformance [{}]: {} observations against tests/conformance/{file}",
        mode.name,
        got.lines.len()
    );
    let Ok(text) = std::fs::read_to_string(format!("{dir}/{file}")) else {
        println!(
            "record {file}: {}",
            conformance::source_line(&lab.source, &conformance_mode(mode, lab))
        );
        for l in got.text().lines() {
            println!("record {file}: {l}");
        }
        rep.check(label, Err(format!("no answers recorded for this kernel: save the `record {file}` lines above as tests/conformance/{file}")));
        return;
    };
    let expected = conformance::Report::parse(&text);
    let diff = got.diff(&expected);
    for d in &diff {
        rep.note(format!("differs: {d}"));
    }
    rep.check(
        label,
        ensure(diff.is_empty(), || format!("{} differences (listed above)", diff.len())),
    );
}

/// The conformance name of a mode: modes through `/dev/vfio/vfio` on iommufd's compat
/// container are recorded apart from the legacy container's (`compat-type1v2`,
/// `compat-type1`, `compat-noiommu`).
fn conformance_mode(mode: &Mode, lab: &Lab) -> String {
    if lab.compat && mode.name != "iommufd" {
        format!("compat-{}", mode.name)
    } else {
        mode.name.to_string()
    }
}

fn run_checks(rep: &mut Report, lab: &Lab) {
    let vfio = Vfio::host();
    let mut modes = Vec::new();
    if lab.iommu {
        modes.extend(["type1v2", "type1"].into_iter().filter_map(mode_by_name));
        let cdev = vfio.locate(lab.edu).ok().and_then(|l| l.cdev);
        if !std::path::Path::new("/dev/iommu").exists() {
            rep.skip("iommufd mode", "no /dev/iommu: this kernel has no IOMMUFD");
        } else if cdev.is_none() {
            rep.skip("iommufd mode", "edu has no vfio device cdev (no VFIO_DEVICE_CDEV)");
        } else {
            modes.extend(mode_by_name("iommufd"));
        }
        rep.skip("no-IOMMU mode", "this boot has an IOMMU (virtio-iommu)");
    } else {
        modes.extend(mode_by_name("noiommu"));
        rep.skip("type1v2, type1 and iommufd modes", "this boot has no IOMMU");
        // What the mock models: a no-IOMMU device is listed with a cdev in sysfs but
        // has no /dev/vfio/devices node, so iommufd (and its no-IOMMU bind with
        // iommufd -1) cannot be reached on this kernel.
        let cdev = vfio.locate(lab.edu).map(|l| l.cdev);
        let nodes = std::fs::read_dir("/dev/vfio/devices").map(|d| d.count()).unwrap_or(0);
        rep.note(format!(
            "no-IOMMU: sysfs cdev of edu {cdev:?}, {nodes} nodes in /dev/vfio/devices"
        ));
        rep.check(
            "no-IOMMU: edu has no /dev/vfio/devices node",
            ensure(nodes == 0, || format!("{nodes} nodes in /dev/vfio/devices")),
        );
        let e = vfio.open(lab.edu, vfio_core::Interface::Iommufd).map(drop);
        rep.check(
            "no-IOMMU: asking for iommufd says the device is in a no-IOMMU group",
            ensure(e.as_ref().is_err_and(|e| e.to_string().contains("no-IOMMU group")), || {
                format!("{e:?}")
            }),
        );
    }
    let on = |group: &str| {
        let off = lab.skip.iter().any(|s| s == group);
        if off {
            println!("        {group}: left out ({SKIP_VAR})");
        }
        !off
    };
    for mode in &modes {
        if on("edu") {
            edu::driver_checks(rep, &vfio, lab.edu, mode);
        }
        if on("conformance") {
            conformance_check(rep, &vfio, lab.edu, mode, lab);
        }
        if on("fdpass") {
            fdpass::run(rep, &vfio, lab.edu, mode);
        }
        if on("liveupdate") && mode.name == "iommufd" {
            liveupdate::run(rep, &vfio, lab.edu);
        }
        if on("kvm") {
            kvm::run(rep, &vfio, lab.edu, mode);
        }
        if on("noalloc") {
            noalloc::zero_allocations(rep, &vfio, lab.edu, mode);
        }
        if mode.dma {
            if on("limits") {
                limits::entry_limit(rep, &vfio, lab.edu, mode);
            }
            if on("memlock") {
                limits::memlock(rep, lab.edu, mode);
            }
            if on("shared") {
                edu::shared_space(rep, &vfio, lab.edu, lab.edu2, mode);
                edu::peer_to_peer(rep, &vfio, lab.edu, lab.edu2, mode);
            }
        } else {
            let why = "no-IOMMU mode maps no DMA";
            rep.skip(format!("DMA entry limit [{}]", mode.name), why);
            rep.skip(format!("RLIMIT_MEMLOCK [{}]", mode.name), why);
            rep.skip(format!("shared address space [{}]", mode.name), why);
        }
        if on("hotreset") {
            reset::hot_reset(rep, &vfio, lab.edu, lab.edu2, lab.testdev, mode);
        }
    }
    if let Some(first) = modes.first().filter(|_| on("reset")) {
        reset::function_reset(rep, &vfio, lab.nvme, first.interface);
    }
    if on("mdev") {
        mdev::run(rep, &vfio);
    }
    if let Some(first) = modes.first().filter(|_| on("lowpower")) {
        lowpower::run(rep, &vfio, lab.e1000e, first);
    }
    if on("vftoken") {
        vftoken::run(rep, &vfio, &modes);
    }
    rep.skip(
        "group viability error (edu2 on vfio-pci, testdev on a host driver)",
        "no host driver can claim pci-testdev or edu (no driver has their ids; forcing one \
         with driver_override would run its probe on foreign hardware), so no blocker can \
         be arranged",
    );
}

/// Waits until the nvme driver has brought the controller back (its probe finishes in
/// the background), so that nothing is mid-probe when the checks end.
fn nvme_live(nvme: PciAddress) -> Outcome {
    let dir = std::path::PathBuf::from(format!("/sys/bus/pci/devices/{nvme}/nvme"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut last = String::from("no controller");
    while std::time::Instant::now() < deadline {
        let states: Vec<String> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("state")).ok())
            .map(|s| s.trim().to_string())
            .collect();
        if states.iter().any(|s| s == "live") {
            return Ok(());
        }
        last = states.join(", ");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Err(format!("the nvme controller is not live (state: {last})"))
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(limits::CHILD_ARG) {
        return ExitCode::from(limits::memlock_child(&args[1..]) as u8);
    }
    if args.first().map(String::as_str) == Some(fdpass::CHILD_ARG) {
        return ExitCode::from(fdpass::child(&args[1..]) as u8);
    }
    if args.first().map(String::as_str) == Some(liveupdate::CHILD_ARG) {
        return ExitCode::from(liveupdate::child(&args[1..]) as u8);
    }
    let mut rep = Report::default();
    let lab = match Lab::from_env() {
        Ok(l) => l,
        Err(why) => {
            rep.skip("every check", format!("not in the VM lab ({why})"));
            println!("{}", rep.summary());
            return ExitCode::SUCCESS;
        }
    };
    let fs = RealFs::new("/");
    let all = [lab.edu, lab.edu2, lab.testdev, lab.nvme, lab.e1000e];
    let before: Vec<(PciAddress, Option<String>)> =
        all.iter().map(|a| (*a, current_driver(&fs, *a))).collect();
    for (what, a) in
        [("edu", lab.edu), ("edu2", lab.edu2), ("testdev", lab.testdev), ("nvme", lab.nvme)]
    {
        let r = bind(&fs, &BindRequest::vfio(&a.to_string())).ctx("bind").and_then(|_| {
            let now = current_driver(&fs, a);
            ensure(now.as_deref() == Some("vfio-pci"), || format!("{a} is on {now:?}"))
        });
        rep.check(format!("bind {what} {a} to vfio-pci (vfio_core::host::bind)"), r);
    }
    if let Err(p) = std::panic::catch_unwind(AssertUnwindSafe(|| run_checks(&mut rep, &lab))) {
        rep.check("the checks ran to the end", Err(format!("panic: {}", panic_text(&*p))));
    }
    let r: Outcome = restore(&fs, None).ctx("restore").and_then(|_| {
        let wrong: Vec<String> = before
            .iter()
            .filter_map(|(a, d)| {
                let now = current_driver(&fs, *a);
                (now != *d).then(|| format!("{a} is on {now:?}, was on {d:?}"))
            })
            .collect();
        ensure(wrong.is_empty(), || wrong.join("; "))
    });
    rep.check(
        "restore: every device back on the driver it had (vfio_core::host::restore::restore)",
        r,
    );
    rep.check("restore: nvme is live again on its driver", nvme_live(lab.nvme));
    if lab.skip.iter().any(|s| s == "crash") {
        rep.skip("crash recovery", format!("left out by {SKIP_VAR}"));
    } else if current_driver(&fs, lab.e1000e).as_deref() != Some("e1000e") {
        rep.skip("crash recovery", "e1000e is not on its driver");
    } else {
        crash::run(&mut rep, lab.e1000e);
    }
    println!("{}", rep.summary());
    if rep.any_failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
