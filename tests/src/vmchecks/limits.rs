//! Checks 3 and 4: the type1 DMA entry limit (and its absence on iommufd), and
//! RLIMIT_MEMLOCK in a process without CAP_IPC_LOCK.

use vfio_core::kernel::Errno;
use vfio_core::{AddressSpace, DmaPerm, DmaPool, PciAddress, Vfio};

use super::report::{ensure, Ctx, Outcome, Report};
use super::{Mem, Mode};

/// Where the many single-page mappings start (above the 32-bit MSI window).
const BASE: u64 = 1 << 32;
/// Mappings made on iommufd, which has no entry limit.
const IOMMUFD_MAPPINGS: u64 = 70_000;

/// Check 3 in one mode.
pub fn entry_limit(rep: &mut Report, vfio: &Vfio, edu: PciAddress, mode: &Mode) {
    let name = std::cell::RefCell::new(format!("DMA entries [{}]", mode.name));
    let r = (|| -> Outcome {
        let device = vfio.open(edu, mode.interface).ctx("open edu")?;
        let space = device.address_space();
        let mem = Mem::new(4096);
        let map = |i: u64| {
            // SAFETY: `mem` outlives every mapping; all are unmapped below (unmap_all).
            unsafe { space.map(mem.addr(), BASE + i * 4096, 4096, DmaPerm::Read) }
        };
        // The legacy type1 container has dma_entry_limit; iommufd has no limit, and its
        // compat container says so with dma_avail u32::MAX.
        let limit = match &space {
            AddressSpace::Container(c) => {
                let avail = c.iommu_info().ctx("VFIO_IOMMU_GET_INFO")?.dma_avail;
                Some(avail.ok_or("the kernel reports no dma_avail capability")?)
                    .filter(|a| *a != u32::MAX)
            }
            _ => None,
        };
        *name.borrow_mut() = match limit {
            Some(_) => format!(
                "DMA entry limit [{}]: dma_avail mappings, then ENOSPC with the hint",
                mode.name
            ),
            None => format!(
                "DMA entries [{}]: {IOMMUFD_MAPPINGS} single-page mappings, no limit",
                mode.name
            ),
        };
        let result = if let (AddressSpace::Container(c), Some(avail)) = (&space, limit) {
            let mut n = 0u64;
            let err = loop {
                match map(n) {
                    Ok(()) => n += 1,
                    Err(e) => break Some(e),
                }
                if n > u64::from(avail) + 1 {
                    break None;
                }
            };
            let limit_ok = (|| {
                ensure(n == u64::from(avail), || {
                    format!("{n} mappings succeeded, dma_avail said {avail}")
                })?;
                let e = err.as_ref().ok_or("no mapping was refused")?;
                ensure(e.errno() == Some(Errno::ENOSPC), || {
                    format!("mapping {} failed with {e}, expected ENOSPC", n + 1)
                })?;
                ensure(e.to_string().contains("dma_entry_limit"), || {
                    format!("the error names no limit: {e}")
                })?;
                let left = c.iommu_info().ctx("VFIO_IOMMU_GET_INFO")?.dma_avail;
                ensure(left == Some(0), || {
                    format!("dma_avail is {left:?} at the limit, expected Some(0)")
                })
            })();
            println!(
                "        {n} mappings made (dma_avail {avail}); next: {}",
                err.map_or("none".into(), |e| e.to_string())
            );
            limit_ok.map(|()| n)
        } else {
            let mut r = Ok(IOMMUFD_MAPPINGS);
            for i in 0..IOMMUFD_MAPPINGS {
                if let Err(e) = map(i) {
                    r = Err(format!("mapping {} of {IOMMUFD_MAPPINGS} failed: {e}", i + 1));
                    break;
                }
            }
            r
        };
        let unmapped = space.unmap_all().ctx("unmap all");
        let n = result?;
        let unmapped = unmapped?;
        ensure(unmapped == n * 4096, || {
            format!("unmap all reported {unmapped:#x} bytes, expected {:#x}", n * 4096)
        })?;
        if let (AddressSpace::Container(c), Some(_)) = (&space, limit) {
            let after = c.iommu_info().ctx("VFIO_IOMMU_GET_INFO")?.dma_avail;
            ensure(after == Some(n as u32), || {
                format!("dma_avail after unmap all is {after:?}, expected {n}")
            })?;
        }
        Ok(())
    })();
    rep.check(name.into_inner(), r);
}

/// The argument that makes the binary run [`memlock_child`].
pub const CHILD_ARG: &str = "--memlock-child";

const CAP_IPC_LOCK: u32 = 14;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Removes capabilities (all below 32) from the effective and permitted sets.
fn drop_caps(caps: &[u32]) -> std::io::Result<()> {
    let mut hdr = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two CapData for version 3; both pointers are valid.
    if unsafe { libc::syscall(libc::SYS_capget, &mut hdr as *mut CapHeader, data.as_mut_ptr()) }
        != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    for c in caps {
        data[0].effective &= !(1 << c);
        data[0].permitted &= !(1 << c);
    }
    // SAFETY: as above; capset reads the same structures.
    if unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn set_memlock(bytes: u64) -> std::io::Result<()> {
    let l = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
    // SAFETY: a valid rlimit for the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &l) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The child: drops CAP_IPC_LOCK from the effective and permitted sets and sets
/// RLIMIT_MEMLOCK to 1 MiB, before opening edu in `mode` or right after, then tries a
/// 512 KiB and a 2 MiB DmaPool::alloc. Prints one `result:` line; exit 0 when the small
/// one succeeded and the large one failed with ENOMEM and the hint naming the limit, 3
/// when the large one succeeded, 1 otherwise.
pub fn memlock_child(args: &[String]) -> i32 {
    let [addr, mode, when] = args else {
        println!("result: usage: {CHILD_ARG} ADDRESS MODE before-open|after-open");
        return 1;
    };
    let Some(mode) = super::mode_by_name(mode) else {
        println!("result: unknown mode {mode}");
        return 1;
    };
    let limit = || -> Result<(), String> {
        drop_caps(&[CAP_IPC_LOCK]).ctx("capset")?;
        set_memlock(1 << 20).ctx("setrlimit")
    };
    let r = (|| -> Result<i32, String> {
        let addr = PciAddress::parse(addr).ctx("address")?;
        if when == "before-open" {
            limit()?;
        }
        let vfio = Vfio::host();
        let device = vfio.open(addr, mode.interface).ctx("open edu")?;
        let pool = DmaPool::new(device.address_space()).ctx("DMA pool")?;
        if when != "before-open" {
            limit()?;
        }
        let small = pool.alloc(512 << 10).ctx("512 KiB alloc under the limit")?;
        drop(small);
        match pool.alloc(2 << 20) {
            Ok(_) => {
                println!("result: the 2 MiB alloc succeeded");
                Ok(3)
            }
            Err(e) => {
                println!("result: {e}");
                Ok(
                    if e.errno() == Some(Errno::ENOMEM)
                        && e.to_string().contains("RLIMIT_MEMLOCK (1024 KiB")
                    {
                        0
                    } else {
                        1
                    },
                )
            }
        }
    })();
    r.unwrap_or_else(|e| {
        println!("result: {e}");
        1
    })
}

/// Runs the child and returns its exit code and `result:` line.
fn run_child(edu: PciAddress, mode: &Mode, when: &str) -> Result<(i32, String), String> {
    let out = std::process::Command::new("/proc/self/exe")
        .args([CHILD_ARG, &edu.to_string(), mode.name, when])
        .output()
        .ctx("run the child")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("result: "))
        .unwrap_or("(no result line)")
        .to_string();
    Ok((out.status.code().unwrap_or(-1), line))
}

/// Check 4 in one mode. Both type1 and iommufd decide whether to account pinned pages at
/// each map (`capable(CAP_IPC_LOCK)` then), and account when pinning: the map call answers
/// ENOMEM (on iommufd IOMMU_IOAS_MAP, not the attach), even when the capability was
/// dropped only after the container or `/dev/iommu` was set up.
pub fn memlock(rep: &mut Report, edu: PciAddress, mode: &Mode) {
    for (when, what) in [
        ("before-open", "before open"),
        ("after-open", "after the address space was set up (checked at each map)"),
    ] {
        let r = run_child(edu, mode, when)
            .and_then(|(code, line)| ensure(code == 0, || format!("child exit {code}: {line}")));
        rep.check(
            format!(
                "RLIMIT_MEMLOCK [{}]: CAP_IPC_LOCK dropped and a 1 MiB limit {what}: 512 KiB maps, 2 MiB is ENOMEM naming the limit",
                mode.name
            ),
            r,
        );
    }
}
