//! VF tokens on the igb NIC (QEMU 8+): the PF bound to vfio-pci and opened, a token set on
//! it (`VFIO_DEVICE_FEATURE_PCI_VF_TOKEN`), one VF created through `sriov_numvfs` (the
//! guest's vfio-pci has `enable_sriov=1`, and captures the VF), then the VF opened
//! without a token and with a wrong one (both `Error::VfToken`, the kernel's EACCES) and
//! with the right one (its config ids read), in every mode the boot offers: through the
//! group (`"<bdf> vf_token=<uuid>"`) and through the cdev (`VFIO_DEVICE_BIND_FLAG_TOKEN`).

use std::path::Path;

use vfio_core::host::bind::{bind, BindRequest};
use vfio_core::host::current_driver;
use vfio_core::host::sriov::set_num_vfs;
use vfio_core::hostfs::RealFs;
use vfio_core::{Error, PciAddress, VfToken, Vfio};

use super::report::{ensure, Ctx, Outcome, Report};
use super::Mode;

/// Runs the checks, or skips them where QEMU has no igb.
pub fn run(rep: &mut Report, vfio: &Vfio, modes: &[Mode]) {
    let Some(pf) = std::env::var("VFIO_LAB_IGB").ok().and_then(|a| PciAddress::parse(&a).ok())
    else {
        return rep.skip("VF tokens (igb)", "no igb in this VM (QEMU 8 and later emulate it)");
    };
    let fs = RealFs::new("/");
    let r = bind(&fs, &BindRequest::vfio(&pf.to_string())).ctx("bind").and_then(|_| {
        let now = current_driver(&fs, pf);
        ensure(now.as_deref() == Some("vfio-pci"), || format!("{pf} is on {now:?}"))
    });
    rep.check(format!("VF tokens: bind the igb PF {pf} to vfio-pci"), r.clone());
    if r.is_err() {
        return;
    }
    if !modes.iter().any(|m| m.dma) {
        rep.skip("VF tokens: opening the VF", "no-IOMMU boot: the check runs with an IOMMU");
    }
    for mode in modes.iter().filter(|m| m.dma) {
        let r = one_mode(rep, vfio, &fs, pf, mode);
        rep.check(
            format!(
                "VF tokens [{}]: the PF's token set, a VF opened without it and with another \
                 is Error::VfToken, with it the VF opens and reads 8086:10ca",
                mode.name
            ),
            r,
        );
        let _ = set_num_vfs(&fs, pf, 0, true);
    }
}

fn one_mode(rep: &mut Report, vfio: &Vfio, fs: &RealFs, pf: PciAddress, mode: &Mode) -> Outcome {
    let pf_dev = vfio.open(pf, mode.interface).ctx("open the PF")?;
    let token = VfToken::random().ctx("token")?;
    pf_dev.set_vf_token(&token).ctx("set_vf_token")?;
    set_num_vfs(fs, pf, 1, false).ctx("sriov_numvfs 1")?;
    let link = std::fs::read_link(format!("/sys/bus/pci/devices/{pf}/virtfn0")).ctx("virtfn0")?;
    let name = link.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    let vf = PciAddress::parse(&name).ctx("VF address")?;
    let driver = current_driver(fs, vf);
    rep.note(format!("VF {vf} is on {driver:?} (vfio-pci captures its PF's VFs)"));
    if driver.as_deref() != Some("vfio-pci") {
        bind(fs, &BindRequest::vfio(&vf.to_string())).ctx("bind the VF")?;
    }
    let refused = |r: Result<vfio_core::Device, Error>, what: &str| -> Outcome {
        match r {
            Err(e @ Error::VfToken { .. }) => {
                rep.note(format!("{what}: {e}"));
                Ok(())
            }
            Err(e) => Err(format!("{what}: {e} (expected Error::VfToken)")),
            Ok(_) => Err(format!("{what}: the VF opened")),
        }
    };
    refused(vfio.open(vf, mode.interface), "without a token")?;
    let wrong = VfToken::random().ctx("token")?;
    refused(vfio.open_with_token(vf, mode.interface, &wrong), "with a wrong token")?;
    let d = vfio.open_with_token(vf, mode.interface, &token).ctx("with the PF's token")?;
    let ids = (d.config_read_u16(0).ctx("config")?, d.config_read_u16(2).ctx("config")?);
    ensure(ids == (0x8086, 0x10ca), || format!("VF ids {ids:04x?}"))?;
    rep.note(format!(
        "VF {vf} opened with the token through {}",
        d.group().map_or("its cdev", |_| "its group")
    ));
    drop(d);
    drop(pf_dev);
    ensure(Path::new(&format!("/sys/bus/pci/devices/{vf}")).exists(), || "the VF vanished".into())
}
