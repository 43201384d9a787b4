//! Crash recovery on the real kernel: `bind --user` of the e1000e NIC (a real driver
//! with a real probe) killed before each of its changes in turn (`CrashFs` over the
//! real sysfs), then `restore --all`: the NIC must be back on e1000e with no override,
//! its group node gone or back with root's ownership, and the journal empty.

use std::path::Path;
use std::sync::Arc;

use vfio_core::host::bind::{bind, BindRequest};
use vfio_core::host::journal::read_journal;
use vfio_core::host::restore::restore;
use vfio_core::host::SysfsDevice;
use vfio_core::hostfs::{HostFs, RealFs};
use vfio_core::mock::CrashFs;
use vfio_core::PciAddress;

use crate::report::{ensure, Ctx, Outcome, Report};

/// `bind --user 1000`, or a plain bind where the group appears only with vfio-pci
/// (no-IOMMU mode), since `--user` needs the group first.
fn request(fs: &dyn HostFs, nic: PciAddress) -> BindRequest {
    let user = SysfsDevice::new(fs, nic).iommu_group().map(|_| "1000".to_string());
    BindRequest { user, ..BindRequest::vfio(&nic.to_string()) }
}

fn back(fs: &dyn HostFs, nic: PciAddress, group_node: &str) -> Outcome {
    let dev = SysfsDevice::new(fs, nic);
    ensure(dev.driver().as_deref() == Some("e1000e"), || format!("on {:?}", dev.driver()))?;
    ensure(dev.driver_override().is_none(), || format!("override {:?}", dev.driver_override()))?;
    if let Ok(m) = fs.metadata(Path::new(group_node)) {
        ensure((m.uid, m.gid) == (0, 0), || format!("{group_node} owned by {}:{}", m.uid, m.gid))?;
    }
    let j = read_journal(fs).ctx("journal")?;
    ensure(j.is_empty(), || format!("journal left: {j:?}"))
}

/// Runs the check; `nic` must be on e1000e.
pub fn run(rep: &mut Report, nic: PciAddress) {
    let real: Arc<dyn HostFs> = Arc::new(RealFs::new("/"));
    let probe = CrashFs::new(real.clone(), 0);
    let r = bind(&probe, &request(&*real, nic)).ctx("bind");
    let node = r.as_ref().ok().and_then(|o| o.dev_nodes.first().cloned()).unwrap_or_default();
    let changes = probe.changes();
    let clean =
        r.and_then(|_| restore(&*real, None).ctx("restore")).and_then(|_| back(&*real, nic, &node));
    rep.check(format!("crash: a clean bind of e1000e makes {changes} changes and restores"), clean);
    for k in 1..=changes {
        let dying = CrashFs::new(real.clone(), k);
        let _ = bind(&dying, &request(&*real, nic));
        let r = ensure(dying.died(), || "the run did not reach that change".into())
            .and_then(|_| read_journal(&*real).map(|_| ()).ctx("journal after the kill"))
            .and_then(|_| restore(&*real, None).map(|_| ()).ctx("restore --all"))
            .and_then(|_| back(&*real, nic, &node));
        rep.check(format!("crash: bind of e1000e killed before change {k}, then restore --all"), r);
    }
}
