//! fd passing on the real kernel: a privileged parent opens edu's descriptors
//! (`Vfio::open_fds`), a child inherits them, chroots into an empty directory and drops to
//! uid/gid 65534 (no `/dev/vfio`, no `/dev/iommu`, no sysfs, no root), then builds the
//! device on the descriptors alone, reads BAR0 through an owned mapping (equal to
//! pread), maps DMA and checks a round trip through the device, and takes the MSI of a
//! factorial on an eventfd. Also records what peer-to-peer DMA of a BAR does per mode.

use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use vfio_core::kernel::{GroupNode, RealKernel};
use vfio_core::{DeviceFds, DmaPool, PciAddress, Vfio};

use crate::driver::{edu_pool, fill, reg, Edu, EDU_BUFFER};
use crate::report::{ensure, Ctx, Outcome, Report};
use crate::Mode;

/// The argument that makes `vfio-vm-checks` the child.
pub const CHILD_ARG: &str = "--fdpass-child";

const NOBODY: u32 = 65534;

/// The parent's side, in one mode.
pub fn run(rep: &mut Report, vfio: &Vfio, edu: PciAddress, mode: &Mode) {
    let r = (|| -> Outcome {
        let fds = vfio.open_fds(edu, mode.interface).ctx("open_fds")?;
        let (kind, a, b, node) = match fds {
            DeviceFds::Group { container, group, node, .. } => {
                let n = match node {
                    GroupNode::Iommu(n) => format!("{n}"),
                    GroupNode::NoIommu(n) => format!("noiommu-{n}"),
                };
                ("group", container, group, n)
            }
            DeviceFds::Cdev { iommufd, device, .. } => ("cdev", iommufd, device, "-".into()),
        };
        let (ra, rb) = (inheritable(a)?, inheritable(b)?);
        let out = std::process::Command::new("/proc/self/exe")
            .args([
                CHILD_ARG,
                kind,
                &edu.to_string(),
                mode.name,
                &ra.to_string(),
                &rb.to_string(),
                &node,
            ])
            .output()
            .ctx("run the child");
        // The parent's copies go once the child has them.
        // SAFETY: the numbers were taken from OwnedFds above and are closed once, here.
        unsafe {
            libc::close(ra);
            libc::close(rb);
        }
        let out = out?;
        let text = String::from_utf8_lossy(&out.stdout);
        for l in text.lines().filter(|l| l.starts_with("note: ")) {
            rep.note(&l[6..]);
        }
        let line = text.lines().find_map(|l| l.strip_prefix("result: ")).unwrap_or("(none)");
        ensure(out.status.success(), || format!("child exit {:?}: {line}", out.status.code()))
    })();
    let what = if mode.dma {
        "opens edu from inherited descriptors, BAR0 through an owned mapping equals pread, DMA round trip, MSI on an eventfd"
    } else {
        "is refused with EPERM (no-IOMMU needs CAP_SYS_RAWIO, however the descriptors were opened)"
    };
    rep.check(
        format!(
            "fd passing [{}]: a child chrooted to an empty directory as uid 65534 {what}",
            mode.name
        ),
        r,
    );
}

/// Clears close-on-exec so the child inherits the descriptor; returns its number.
fn inheritable(fd: OwnedFd) -> Result<i32, String> {
    let raw = fd.into_raw_fd();
    // SAFETY: F_SETFD on a descriptor we own.
    if unsafe { libc::fcntl(raw, libc::F_SETFD, 0) } < 0 {
        return Err(format!("fcntl: {}", std::io::Error::last_os_error()));
    }
    Ok(raw)
}

/// The child's side. Prints `note:` lines and one `result:` line; exit 0 when all holds.
pub fn child(args: &[String]) -> i32 {
    let r = (|| -> Result<(), String> {
        let [kind, addr, mode, a, b, node] = args else {
            return Err(format!("usage: {CHILD_ARG} group|cdev ADDRESS MODE FD FD NODE"));
        };
        let address = PciAddress::parse(addr).ctx("address")?;
        let mode = crate::mode_by_name(mode).ok_or("unknown mode")?;
        let fd = |s: &str| -> Result<OwnedFd, String> {
            let n: i32 = s.parse().map_err(|_| format!("bad fd {s}"))?;
            // SAFETY: the parent passed this descriptor to us; nothing else owns it here.
            Ok(unsafe { OwnedFd::from_raw_fd(n) })
        };
        let (a, b) = (fd(a)?, fd(b)?);
        // CLOEXEC again: nothing this child runs should inherit them.
        for f in [&a, &b] {
            // SAFETY: F_SETFD on descriptors we own.
            unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        let fds = match kind.as_str() {
            "group" => {
                let node = match node.strip_prefix("noiommu-") {
                    Some(n) => GroupNode::NoIommu(n.parse().ctx("node")?),
                    None => GroupNode::Iommu(node.parse().ctx("node")?),
                };
                DeviceFds::Group { container: a, group: b, node, address }
            }
            _ => DeviceFds::Cdev { iommufd: a, device: b, address },
        };
        drop_everything()?;
        let wanted = match mode.interface {
            vfio_core::Interface::ContainerWith(t) => Some(t),
            _ => None,
        };
        let opened = fds.open(Arc::new(RealKernel::new()), wanted);
        if !mode.dma {
            // vfio: a no-IOMMU group joins a container only with CAP_SYS_RAWIO, whoever
            // opened the descriptors (vfio_group_ioctl_set_container).
            let e = opened.err().ok_or("an unprivileged no-IOMMU user was let in")?;
            ensure(e.errno() == Some(vfio_core::kernel::Errno::EPERM), || e.to_string())?;
            println!("note: no-IOMMU refuses the unprivileged child: {e}");
            return Ok(());
        }
        let dev = Arc::new(opened.ctx("open from fds")?);
        let bar0 = dev.map_region_owned(0).ctx("owned BAR0 mapping")?;
        let mut b = [0u8; 4];
        dev.read_region(0, reg::IDENT, &mut b).ctx("pread")?;
        let id: u32 = bar0.read(reg::IDENT).ctx("mapped read")?;
        ensure(id == u32::from_le_bytes(b), || format!("mapped {id:#x} != pread {b:x?}"))?;
        ensure(id & 0xff == 0xed, || format!("ident {id:#x}"))?;
        println!(
            "note: child uid {} read ident {id:#x} through the owned mapping",
            nix::unistd::geteuid()
        );
        let mut edu = Edu::new(&dev).ctx("edu")?;
        edu.enable_msi().ctx("MSI")?;
        let (f, irq) = edu.factorial(5, Duration::from_secs(5)).ctx("factorial")?;
        ensure(f == 120 && irq, || format!("5! = {f}, interrupt {irq}"))?;
        if mode.dma {
            let pool: DmaPool = edu_pool(&dev).ctx("pool")?;
            let src = pool.alloc(4096).ctx("alloc")?;
            let dst = pool.alloc(4096).ctx("alloc")?;
            let data = fill(&src, 7, 2048).ctx("fill")?;
            let t = Duration::from_secs(5);
            edu.dma_to_device(src.iova(), 2048, t).ctx("DMA to edu")?;
            edu.dma_from_device(dst.iova(), 2048, t).ctx("DMA from edu")?;
            let mut back = vec![0u8; 2048];
            dst.read(0, &mut back).ctx("read")?;
            ensure(back == data, || "the DMA round trip did not bring the data back".into())?;
            let _ = EDU_BUFFER;
        }
        Ok(())
    })();
    crate::report::child_result(r)
}

/// chroot into an empty directory and drop to uid/gid 65534 with no groups; then check
/// that neither `/dev` nor `/sys` can be reached and that root is gone for good.
fn drop_everything() -> Result<(), String> {
    // Enough locked memory for the DMA buffers, set while still allowed to raise it.
    let lim = libc::rlimit { rlim_cur: 64 << 20, rlim_max: 64 << 20 };
    // SAFETY: setrlimit reads the struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
        return Err(format!("setrlimit: {}", std::io::Error::last_os_error()));
    }
    let dir = std::env::temp_dir().join(format!("fdpass-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ctx("empty root")?;
    nix::unistd::chroot(&dir).ctx("chroot")?;
    std::env::set_current_dir("/").ctx("chdir")?;
    nix::unistd::setgroups(&[]).ctx("setgroups")?;
    nix::unistd::setgid(nix::unistd::Gid::from_raw(NOBODY)).ctx("setgid")?;
    nix::unistd::setuid(nix::unistd::Uid::from_raw(NOBODY)).ctx("setuid")?;
    ensure(nix::unistd::setuid(nix::unistd::Uid::from_raw(0)).is_err(), || {
        "root came back".into()
    })?;
    for p in ["/dev/vfio", "/dev/iommu", "/sys/bus/pci", "/proc/self"] {
        ensure(std::fs::metadata(p).is_err(), || format!("{p} is reachable"))?;
    }
    Ok(())
}
