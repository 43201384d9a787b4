//! `vfio-lab suite`: the in-VM suite on every kernel, IOMMU mode and QEMU the lab has, and
//! the summary table.
//!
//! Each boot runs `tools/vfio-lab/guest/suite.sh`, which runs the checks the boot offers in
//! every VFIO mode it has (legacy or compat container with type1 and type1v2, iommufd with
//! cdevs, no-IOMMU).

use std::time::Instant;

use crate::error::{LabError, Result};
use crate::initramfs::GuestAction;
use crate::kernel::{self, KernelKind};
use crate::qemu::{self, Qemu, QemuKind};
use crate::selftests;
use crate::topology::IommuMode;
use crate::{boot, host, payload, prepare_vm_host, VmArgs};

/// One boot of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Boot {
    /// The guest kernel.
    pub kernel: KernelKind,
    /// With virtio-iommu or in no-IOMMU mode.
    pub iommu: IommuMode,
    /// Which QEMU runs it.
    pub qemu: QemuKind,
}

/// The VFIO modes a boot offers (what the guest's checks run in).
pub fn modes(b: &Boot) -> &'static str {
    match (b.kernel, b.iommu) {
        (_, IommuMode::None) => "no-IOMMU group",
        (KernelKind::Stock | KernelKind::Newest, _) => "type1v2, type1 (legacy container)",
        (KernelKind::Custom, _) => "type1v2, type1 (legacy container), iommufd",
        (KernelKind::CustomNewest, _) => "type1v2, type1 (iommufd compat container), iommufd",
    }
}

/// The boots of the suite, limited to `only` kernels when not empty. The release's QEMU runs
/// the 6.12 kernels (it is what a Debian 12 host has); the newest QEMU runs the newest kernels
/// and brings the SR-IOV NIC.
pub fn plan(only: &[KernelKind]) -> Vec<Boot> {
    let all = [
        (KernelKind::Stock, IommuMode::Virtio, QemuKind::Host),
        (KernelKind::Custom, IommuMode::Virtio, QemuKind::Host),
        (KernelKind::Custom, IommuMode::None, QemuKind::Host),
        (KernelKind::Newest, IommuMode::Virtio, QemuKind::Newest),
        (KernelKind::CustomNewest, IommuMode::Virtio, QemuKind::Newest),
        (KernelKind::CustomNewest, IommuMode::None, QemuKind::Newest),
    ];
    all.into_iter()
        .filter(|(k, _, _)| only.is_empty() || only.contains(k))
        .map(|(kernel, iommu, qemu)| Boot { kernel, iommu, qemu })
        .collect()
}

/// The lab's own in-VM check of the VFIO container path (tools/vfio-lab/src/bin).
const SMOKE_BIN: &str = "lab-vfio-smoke";

/// Runs the suite; the exit status is 0 when every boot passed.
pub fn run(vm: &VmArgs, only: &[KernelKind]) -> Result<i32> {
    prepare_vm_host()?;
    let mut payload = payload(vm)?;
    if !vm.no_build {
        payload.tests.insert(0, host::build_static_bin("vfio-lab", SMOKE_BIN)?);
        payload.bins.push(host::build_static_bench()?);
        let (package, bin) = host::VM_CHECKS;
        payload.tests.push(host::build_static_bin(package, bin)?);
        match selftests::ensure() {
            Ok(bins) => payload.bins.extend(bins),
            Err(e) => eprintln!("vfio-lab: the kernel's VFIO selftests are left out: {e}"),
        }
    }
    let host_qemu = Qemu::host(&vm.qemu)?;
    let mut newest_qemu: Option<Qemu> = None;
    let mut rows = Vec::new();
    for mut b in plan(only) {
        if vm.newest_qemu {
            b.qemu = QemuKind::Newest;
        }
        let start = Instant::now();
        let prepared = kernel::ensure(b.kernel).and_then(|k| {
            let q = match b.qemu {
                QemuKind::Host => host_qemu.clone(),
                QemuKind::Newest => match &newest_qemu {
                    Some(q) => q.clone(),
                    None => {
                        let q = qemu::ensure_newest(&kernel::cache_dir())?;
                        newest_qemu = Some(q.clone());
                        q
                    }
                },
            };
            Ok((k, q))
        });
        let (release, qemu_version, r) = match prepared {
            Ok((k, q)) => {
                println!(
                    "\n==> vfio-lab suite: {} kernel, iommu={}, QEMU {} ({})",
                    b.kernel.name(),
                    b.iommu.name(),
                    q.version,
                    k.description
                );
                let action = GuestAction::Run(vec!["/lab/suite.sh".into()]);
                let mut r = boot(&k, &q, b.iommu, action.clone(), vm, &payload);
                if let Some(e) = r.as_ref().err().filter(|e| emulator_failure(e)) {
                    // QEMU itself died or the guest never reported (QEMU 10's TCG has
                    // aborted in iotlb_to_section under load): the emulator's failure, not a
                    // check's. Said, and booted once more; a second failure stands.
                    println!("\n==> vfio-lab suite: QEMU failed ({e}); booting this configuration once more");
                    r = boot(&k, &q, b.iommu, action, vm, &payload);
                }
                (k.description, q.version, r)
            }
            Err(e) => ("-".to_string(), "-".to_string(), Err(e)),
        };
        let verdict = match &r {
            Ok(0) => "ok".to_string(),
            Ok(s) => format!("FAILED (status {s})"),
            Err(e) => format!("FAILED ({e})"),
        };
        rows.push(Row {
            boot: b,
            release,
            qemu: qemu_version,
            verdict,
            secs: start.elapsed().as_secs(),
            ok: matches!(r, Ok(0)),
        });
    }
    print!("\n{}", summary(&rows));
    Ok(if rows.iter().all(|r| r.ok) { 0 } else { 1 })
}

/// Whether a boot failed in the emulator (QEMU exited without the guest's status, or the
/// guest never reported), as opposed to a check that failed (a non-zero guest status).
pub fn emulator_failure(e: &LabError) -> bool {
    matches!(e, LabError::NoMarker { .. } | LabError::Timeout(_))
}

/// One line of the summary.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was booted.
    pub boot: Boot,
    /// The kernel's packages / build.
    pub release: String,
    /// QEMU's version.
    pub qemu: String,
    /// `ok` or why not.
    pub verdict: String,
    /// Wall-clock seconds of the boot (kernel fetch or build included).
    pub secs: u64,
    /// Passed.
    pub ok: bool,
}

/// The summary table: one line per boot with its modes, QEMU, verdict and time.
pub fn summary(rows: &[Row]) -> String {
    let mut s = String::from("==> vfio-lab suite summary\n");
    s.push_str(&format!(
        "  {:<14} {:<13} {:<8} {:<52} {:<7} {}\n",
        "kernel", "iommu", "qemu", "VFIO modes", "time", "result"
    ));
    for r in rows {
        s.push_str(&format!(
            "  {:<14} {:<13} {:<8} {:<52} {:<7} {}\n",
            r.boot.kernel.name(),
            r.boot.iommu.name(),
            r.qemu,
            modes(&r.boot),
            format!("{} s", r.secs),
            r.verdict
        ));
    }
    for r in rows {
        s.push_str(&format!("  {}: {}\n", r.boot.kernel.name(), r.release));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_covers_every_kernel_and_both_iommu_modes_of_the_custom_ones() {
        let p = plan(&[]);
        for k in KernelKind::ALL {
            assert!(p.iter().any(|b| b.kernel == k && b.iommu == IommuMode::Virtio), "{k:?}");
        }
        for k in [KernelKind::Custom, KernelKind::CustomNewest] {
            assert!(p.iter().any(|b| b.kernel == k && b.iommu == IommuMode::None), "{k:?}");
        }
        // Stock kernels have no VFIO_NOIOMMU boot.
        assert!(!p.iter().any(|b| !b.kernel.is_custom() && b.iommu == IommuMode::None));
        // The release's QEMU still runs part of the suite; the newest QEMU the rest.
        assert!(p.iter().any(|b| b.qemu == QemuKind::Host));
        assert!(p.iter().any(|b| b.qemu == QemuKind::Newest));
    }

    #[test]
    fn the_plan_is_limited_to_the_kernels_asked() {
        let p = plan(&[KernelKind::Newest]);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].kernel, KernelKind::Newest);
        assert_eq!(plan(&[KernelKind::Custom, KernelKind::Stock]).len(), 3);
    }

    #[test]
    fn only_emulator_failures_are_booted_again() {
        assert!(emulator_failure(&LabError::NoMarker { status: "signal: 6".into() }));
        assert!(emulator_failure(&LabError::Timeout(600)));
        assert!(!emulator_failure(&LabError::Usage("x".into())));
    }

    #[test]
    fn summary_has_a_line_per_boot() {
        let rows: Vec<Row> = plan(&[])
            .into_iter()
            .map(|b| Row {
                boot: b,
                release: "r".into(),
                qemu: "10.0.2".into(),
                verdict: "ok".into(),
                secs: 61,
                ok: true,
            })
            .collect();
        let s = summary(&rows);
        assert!(s.contains("custom-newest  none"), "{s}");
        assert!(s.contains("iommufd compat container"), "{s}");
        assert_eq!(s.matches("61 s").count(), rows.len());
    }
}
