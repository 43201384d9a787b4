//! Host checks for PCI passthrough, each with the exact fix for this host.
//!
//! The checks follow what the setup guides verify by hand: the IOMMU is active (and in
//! passthrough mode), interrupt remapping is available on every IOMMU, the VFIO modules
//! are loaded, unsafe options are off, the device nodes exist with sane permissions and
//! the locked-memory limit covers a guest. Fixes name the files and commands of the boot
//! loader and initramfs tool found on this host.

use std::fmt;
use std::path::Path;

use crate::host::read_opt;
use crate::hostfs::{HostFs, NodeKind};

/// The verdict of one check (PASS, WARN, FAIL or SKIP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Fine.
    Pass,
    /// Works, with a risk or a cost worth knowing.
    Warn,
    /// Passthrough will not work until fixed.
    Fail,
    /// Not applicable here (depends on a check that failed).
    Skip,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "PASS",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        })
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// Stable identifier (`iommu`, `module:vfio_pci`...).
    pub id: String,
    /// The verdict (the `status` of `doctor --json`).
    pub status: Verdict,
    /// What was found.
    pub message: String,
    /// What to do, for this host, when not passing.
    pub fix: Option<String>,
}

fn check(id: &str, status: Verdict, message: impl Into<String>, fix: Option<String>) -> Check {
    Check { id: id.into(), status, message: message.into(), fix }
}

/// How this host sets its kernel command line and rebuilds its initramfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum BootLoader {
    /// Proxmox's `proxmox-boot-tool` with `/etc/kernel/cmdline`.
    ProxmoxBootTool,
    /// systemd-boot with `/etc/kernel/cmdline`.
    SystemdBoot,
    /// GRUB with `/etc/default/grub`.
    Grub,
    /// Not recognised.
    Unknown,
}

/// The initramfs generator found on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Initramfs {
    /// Debian's `update-initramfs`.
    UpdateInitramfs,
    /// `dracut`.
    Dracut,
    /// Not recognised.
    Unknown,
}

fn any_exists(fs: &dyn HostFs, paths: &[&str]) -> bool {
    paths.iter().any(|p| fs.exists(Path::new(p)))
}

/// Finds the boot loader configuration in use.
pub fn detect_boot_loader(fs: &dyn HostFs) -> BootLoader {
    let kcmd = fs.exists(Path::new("/etc/kernel/cmdline"));
    if kcmd && any_exists(fs, &["/usr/sbin/proxmox-boot-tool", "/etc/kernel/proxmox-boot-uuids"]) {
        BootLoader::ProxmoxBootTool
    } else if kcmd {
        BootLoader::SystemdBoot
    } else if fs.exists(Path::new("/etc/default/grub")) {
        BootLoader::Grub
    } else {
        BootLoader::Unknown
    }
}

/// Finds the initramfs generator.
pub fn detect_initramfs(fs: &dyn HostFs) -> Initramfs {
    if any_exists(fs, &["/usr/sbin/update-initramfs", "/sbin/update-initramfs"]) {
        Initramfs::UpdateInitramfs
    } else if any_exists(fs, &["/usr/bin/dracut", "/usr/sbin/dracut", "/sbin/dracut"]) {
        Initramfs::Dracut
    } else {
        Initramfs::Unknown
    }
}

/// How to add `params` to the kernel command line on this host, then reboot.
pub fn cmdline_fix(fs: &dyn HostFs, params: &str) -> String {
    match detect_boot_loader(fs) {
        BootLoader::ProxmoxBootTool => format!(
            "add '{params}' to the single line of /etc/kernel/cmdline, run 'proxmox-boot-tool refresh', reboot"
        ),
        BootLoader::SystemdBoot => format!(
            "add '{params}' to the single line of /etc/kernel/cmdline, run 'kernel-install add $(uname -r) /boot/vmlinuz-$(uname -r)' (or 'bootctl update'), reboot"
        ),
        BootLoader::Grub => {
            let update = if any_exists(fs, &["/usr/sbin/update-grub", "/sbin/update-grub"]) {
                "update-grub"
            } else {
                "grub2-mkconfig -o /boot/grub2/grub.cfg"
            };
            format!(
                "add '{params}' to GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub, run '{update}', reboot"
            )
        }
        BootLoader::Unknown => {
            format!("add '{params}' to the kernel command line of your boot loader, reboot")
        }
    }
}

/// The command that rebuilds the initramfs on this host.
pub fn initramfs_command(fs: &dyn HostFs) -> &'static str {
    match detect_initramfs(fs) {
        Initramfs::UpdateInitramfs => "update-initramfs -u -k all",
        Initramfs::Dracut => "dracut -f --regenerate-all",
        Initramfs::Unknown => "rebuild the initramfs with your distribution's tool",
    }
}

/// Parameters of the checks.
#[derive(Debug, Clone, Copy)]
pub struct DoctorOptions {
    /// Guest memory that must be lockable (bytes); VFIO pins all guest RAM.
    pub guest_memory: u64,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        DoctorOptions { guest_memory: 1 << 30 }
    }
}

fn module_loaded(fs: &dyn HostFs, m: &str) -> bool {
    fs.exists(&Path::new("/sys/module").join(m))
}

fn param(fs: &dyn HostFs, m: &str, p: &str) -> Option<String> {
    read_opt(fs, &Path::new("/sys/module").join(m).join("parameters").join(p))
}

fn truthy(v: &str) -> bool {
    matches!(v, "Y" | "y" | "1")
}

/// The kernel release as (major, minor).
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Parses the soft "Max locked memory" of `/proc/self/limits` (`None`: unlimited).
pub fn parse_memlock(limits: &str) -> Option<Option<u64>> {
    let line = limits.lines().find(|l| l.starts_with("Max locked memory"))?;
    let soft = line["Max locked memory".len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        Some(None)
    } else {
        soft.parse().ok().map(Some)
    }
}

/// What the checks learn from the kernel command line (`/proc/cmdline`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CmdlineFacts {
    /// `intel_iommu` or `amd_iommu` is given (with any value).
    pub iommu_asked: bool,
    /// The parameters that turn the IOMMU off (`intel_iommu=off`, `amd_iommu=off`,
    /// `iommu=off`), in order.
    pub iommu_off: Vec<String>,
    /// `iommu=pt` is given.
    pub passthrough: bool,
    /// The first `pcie_acs_override...` parameter.
    pub acs_override: Option<String>,
}

/// Parses a kernel command line: parameters are separated by white space. Pure; fuzzed.
pub fn parse_cmdline(text: &str) -> CmdlineFacts {
    let args: Vec<&str> = text.split_whitespace().collect();
    let has = |p: &str| {
        args.iter().any(|a| *a == p || a.strip_prefix(p).is_some_and(|r| r.starts_with('=')))
    };
    CmdlineFacts {
        iommu_asked: has("intel_iommu") || has("amd_iommu"),
        iommu_off: args
            .iter()
            .filter(|a| matches!(**a, "intel_iommu=off" | "amd_iommu=off" | "iommu=off"))
            .map(|a| a.to_string())
            .collect(),
        passthrough: args.contains(&"iommu=pt"),
        acs_override: args
            .iter()
            .find(|a| a.starts_with("pcie_acs_override"))
            .map(|a| a.to_string()),
    }
}

/// Parses an IOMMU unit's capability register as sysfs shows it: Intel VT-d `ecap` or
/// `cap` (`f0205e`, `0xf0205e`) or AMD-Vi `features` (`25bf732fa2295afe`; newer kernels
/// add the second extended feature register: `25bf732fa2295afe:53d`). Returns the
/// register and the second one when present. Pure; fuzzed.
pub fn parse_iommu_register(text: &str) -> Option<(u64, Option<u64>)> {
    let hex = |s: &str| u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok();
    match text.trim().split_once(':') {
        Some((a, b)) => Some((hex(a)?, Some(hex(b)?))),
        None => Some((hex(text)?, None)),
    }
}

/// Whether a VT-d `ecap` value says the unit remaps interrupts (bit 3, IR).
pub fn ecap_remaps_interrupts(ecap: u64) -> bool {
    ecap & (1 << 3) != 0
}

/// Runs every check.
pub fn run_checks(fs: &dyn HostFs, opts: &DoctorOptions) -> Vec<Check> {
    let mut out = vec![];
    let cmdline = parse_cmdline(&read_opt(fs, Path::new("/proc/cmdline")).unwrap_or_default());
    let iommus = fs.read_dir(Path::new("/sys/class/iommu")).unwrap_or_default();
    let groups = fs.read_dir(Path::new("/sys/kernel/iommu_groups")).unwrap_or_default();
    let log = read_opt(fs, Path::new("/var/log/kern.log")).unwrap_or_default();
    let log_lines: Vec<&str> = log
        .lines()
        .filter(|l| ["DMAR", "AMD-Vi", "IOMMU", "iommu"].iter().any(|k| l.contains(k)))
        .collect();
    let cpu = read_opt(fs, Path::new("/proc/cpuinfo")).unwrap_or_default();
    let iommu_param = if cpu.contains("AuthenticAMD") {
        "amd_iommu=on iommu=pt"
    } else if cpu.contains("GenuineIntel") {
        "intel_iommu=on iommu=pt"
    } else {
        "intel_iommu=on (Intel) or amd_iommu=on (AMD), and iommu=pt"
    };

    // 1. IOMMU.
    let active = !iommus.is_empty() || !groups.is_empty();
    if active {
        let mut msg = format!(
            "IOMMU active: {} ({} IOMMU groups)",
            if iommus.is_empty() { "no units listed".to_string() } else { iommus.join(", ") },
            groups.len()
        );
        if let Some(l) = log_lines.first() {
            msg += &format!("; kernel log: {}", l.trim());
        }
        out.push(check("iommu", Verdict::Pass, msg, None));
    } else {
        let asked = cmdline.iommu_asked;
        let mut msg =
            "no IOMMU is active (/sys/class/iommu and /sys/kernel/iommu_groups are empty)"
                .to_string();
        if !log_lines.is_empty() {
            msg += &format!("; kernel log: {}", log_lines.join(" | "));
        }
        let fix = if !cmdline.iommu_off.is_empty() {
            format!(
                "the command line turns it off ({}): remove that, then {}",
                cmdline.iommu_off.join(" "),
                cmdline_fix(fs, iommu_param)
            )
        } else if asked {
            "the command line already asks for it: enable VT-d (Intel) or AMD-Vi/IOMMU (AMD) in the firmware setup".to_string()
        } else {
            format!(
                "enable VT-d/AMD-Vi in the firmware setup, then {}",
                cmdline_fix(fs, iommu_param)
            )
        };
        out.push(check("iommu", Verdict::Fail, msg, Some(fix)));
    }

    // 2. Passthrough mode for host devices.
    if !active {
        out.push(check("iommu-pt", Verdict::Skip, "no IOMMU", None));
    } else if cmdline.passthrough {
        out.push(check(
            "iommu-pt",
            Verdict::Pass,
            "iommu=pt: host devices bypass translation",
            None,
        ));
    } else {
        out.push(check(
            "iommu-pt",
            Verdict::Warn,
            "iommu=pt is not set: every host device DMA is translated, which costs performance",
            Some(cmdline_fix(fs, "iommu=pt")),
        ));
    }

    // 3. Interrupt remapping.
    let unsafe_ok = param(fs, "vfio_iommu_type1", "allow_unsafe_interrupts")
        .is_some_and(|v| truthy(&v))
        || param(fs, "iommufd", "allow_unsafe_interrupts").is_some_and(|v| truthy(&v));
    if !active {
        out.push(check("interrupt-remapping", Verdict::Skip, "no IOMMU", None));
    } else {
        let mut lacking = vec![];
        for u in &iommus {
            let base = Path::new("/sys/class/iommu").join(u);
            if let Some(ecap) = read_opt(fs, &base.join("intel-iommu/ecap")) {
                let v = parse_iommu_register(&ecap).map_or(0, |(v, _)| v);
                if !ecap_remaps_interrupts(v) {
                    lacking.push(format!("{u} (ecap {ecap}: bit 3 clear)"));
                }
            } else if !fs.exists(&base.join("amd-iommu")) {
                lacking.push(format!("{u} (no interrupt remapping)"));
            }
        }
        let ir_log = log.lines().any(|l| l.contains("remapping") && l.contains("nabled"));
        if lacking.is_empty() {
            let how = if ir_log {
                "every IOMMU remaps interrupts (kernel log agrees)"
            } else {
                "every IOMMU remaps interrupts"
            };
            out.push(check("interrupt-remapping", Verdict::Pass, how, None));
        } else if unsafe_ok {
            out.push(check(
                "interrupt-remapping",
                Verdict::Warn,
                format!(
                    "no interrupt remapping on {}; allowed by allow_unsafe_interrupts",
                    lacking.join(", ")
                ),
                None,
            ));
        } else {
            out.push(check(
                "interrupt-remapping",
                Verdict::Fail,
                format!("no interrupt remapping on {}: VFIO refuses to attach devices (EPERM)", lacking.join(", ")),
                Some("if you accept that a guest could forge interrupts: echo 'options vfio_iommu_type1 allow_unsafe_interrupts=1' > /etc/modprobe.d/iommu_unsafe_interrupts.conf, then reload vfio_iommu_type1 or reboot".into()),
            ));
        }
    }

    // 4. Modules.
    for m in ["vfio", "vfio_iommu_type1", "vfio_pci"] {
        let id = format!("module:{m}");
        if module_loaded(fs, m) {
            out.push(check(&id, Verdict::Pass, format!("{m} is loaded"), None));
        } else {
            out.push(check(
                &id,
                Verdict::Fail,
                format!("{m} is not loaded (/sys/module/{m} is missing)"),
                Some(format!("modprobe {m}; at boot: echo {m} >> /etc/modules-load.d/vfio.conf")),
            ));
        }
    }
    if module_loaded(fs, "iommufd") {
        out.push(check("module:iommufd", Verdict::Pass, "iommufd is loaded (/dev/iommu)", None));
    } else {
        out.push(check(
            "module:iommufd",
            Verdict::Warn,
            "iommufd is not loaded: only the legacy container interface (/dev/vfio/vfio) is available",
            Some("modprobe iommufd (kernel 6.2 or later with CONFIG_IOMMUFD)".into()),
        ));
    }
    let release = read_opt(fs, Path::new("/proc/sys/kernel/osrelease")).unwrap_or_default();
    match kernel_version(&release) {
        Some(v) if v < (6, 2) => {
            if module_loaded(fs, "vfio_virqfd") {
                out.push(check("module:vfio_virqfd", Verdict::Pass, "vfio_virqfd is loaded", None));
            } else {
                out.push(check(
                    "module:vfio_virqfd",
                    Verdict::Fail,
                    format!("kernel {release} needs vfio_virqfd, which is not loaded"),
                    Some("modprobe vfio_virqfd; at boot: echo vfio_virqfd >> /etc/modules-load.d/vfio.conf".into()),
                ));
            }
        }
        Some(_) => out.push(check(
            "module:vfio_virqfd",
            Verdict::Pass,
            format!("kernel {release}: vfio_virqfd is part of vfio since 6.2"),
            None,
        )),
        None => {
            out.push(check("module:vfio_virqfd", Verdict::Skip, "kernel release unknown", None))
        }
    }

    // 5. Unsafe options.
    match param(fs, "vfio_iommu_type1", "allow_unsafe_interrupts") {
        Some(v) if truthy(&v) => out.push(check(
            "unsafe-interrupts",
            Verdict::Warn,
            "allow_unsafe_interrupts is on: a device can forge MSIs to the host",
            Some("remove allow_unsafe_interrupts=1 from /etc/modprobe.d once the IOMMU remaps interrupts".into()),
        )),
        Some(_) => out.push(check("unsafe-interrupts", Verdict::Pass, "allow_unsafe_interrupts is off", None)),
        None => out.push(check("unsafe-interrupts", Verdict::Skip, "vfio_iommu_type1 is not loaded", None)),
    }
    if let Some(a) = &cmdline.acs_override {
        out.push(check(
            "acs-override",
            Verdict::Warn,
            format!("{a} is in use: groups are split without hardware isolation; devices may still reach each other"),
            Some("prefer a slot whose IOMMU group is isolated; drop pcie_acs_override when possible".into()),
        ));
    } else {
        out.push(check("acs-override", Verdict::Pass, "pcie_acs_override is not used", None));
    }
    match param(fs, "vfio", "enable_unsafe_noiommu_mode") {
        Some(v) if truthy(&v) => out.push(check(
            "noiommu",
            Verdict::Warn,
            "VFIO no-IOMMU mode is enabled: devices do DMA without protection (/dev/vfio/noiommu-N)",
            Some("echo N > /sys/module/vfio/parameters/enable_unsafe_noiommu_mode".into()),
        )),
        _ => out.push(check("noiommu", Verdict::Pass, "no-IOMMU mode is off", None)),
    }

    // 6. Device nodes.
    if !module_loaded(fs, "vfio") {
        out.push(check("dev-vfio", Verdict::Skip, "vfio is not loaded", None));
    } else {
        match fs.metadata(Path::new("/dev/vfio/vfio")) {
            Ok(m) if m.kind == NodeKind::CharDevice && m.mode & 0o666 == 0o666 => {
                let nodes: Vec<String> = fs
                    .read_dir(Path::new("/dev/vfio"))
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|n| n.parse::<u32>().is_ok())
                    .map(|n| {
                        let m = fs.metadata(&Path::new("/dev/vfio").join(&n)).ok();
                        format!(
                            "{n} (uid {}, mode {:o})",
                            m.map_or(0, |m| m.uid),
                            m.map_or(0, |m| m.mode)
                        )
                    })
                    .collect();
                let msg = if nodes.is_empty() {
                    "/dev/vfio/vfio is usable by all; no group is bound to vfio-pci yet".to_string()
                } else {
                    format!("/dev/vfio/vfio is usable by all; group nodes: {}", nodes.join(", "))
                };
                out.push(check("dev-vfio", Verdict::Pass, msg, None));
            }
            Ok(m) => out.push(check(
                "dev-vfio",
                Verdict::Warn,
                format!("/dev/vfio/vfio has mode {:o}; unprivileged VMMs need 0666", m.mode),
                Some("chmod 0666 /dev/vfio/vfio".into()),
            )),
            Err(_) => out.push(check(
                "dev-vfio",
                Verdict::Fail,
                "/dev/vfio/vfio is missing although vfio is loaded",
                Some("check that devtmpfs is mounted on /dev and udev is running".into()),
            )),
        }
    }
    if module_loaded(fs, "iommufd") {
        match fs.metadata(Path::new("/dev/iommu")) {
            Ok(m) => {
                let st = if m.mode & 0o006 != 0 { Verdict::Warn } else { Verdict::Pass };
                out.push(check(
                    "dev-iommu",
                    st,
                    format!("/dev/iommu: mode {:o}, uid {}, gid {}", m.mode, m.uid, m.gid),
                    (st == Verdict::Warn)
                        .then(|| "chmod 0660 /dev/iommu and give it to the VMM's group".into()),
                ));
            }
            Err(_) => out.push(check(
                "dev-iommu",
                Verdict::Fail,
                "/dev/iommu is missing although iommufd is loaded",
                Some("check that devtmpfs is mounted on /dev".into()),
            )),
        }
    }

    // 7. Locked memory.
    match read_opt(fs, Path::new("/proc/self/limits")).as_deref().and_then(parse_memlock) {
        Some(None) => out.push(check("memlock", Verdict::Pass, "RLIMIT_MEMLOCK is unlimited", None)),
        Some(Some(v)) if v >= opts.guest_memory => out.push(check(
            "memlock",
            Verdict::Pass,
            format!("RLIMIT_MEMLOCK {} MiB covers a {} MiB guest", v >> 20, opts.guest_memory >> 20),
            None,
        )),
        Some(Some(v)) => out.push(check(
            "memlock",
            Verdict::Warn,
            format!(
                "RLIMIT_MEMLOCK is {} KiB: VFIO pins all guest RAM, a {} MiB guest needs more unless the VMM runs as root",
                v >> 10,
                opts.guest_memory >> 20
            ),
            Some("for the VMM's user: 'USER hard memlock unlimited' and 'USER soft memlock unlimited' in /etc/security/limits.conf, or LimitMEMLOCK=infinity in its systemd unit".into()),
        )),
        None => out.push(check("memlock", Verdict::Skip, "/proc/self/limits is not readable", None)),
    }
    out
}

/// Whether any check failed.
pub fn any_failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.status == Verdict::Fail)
}

#[cfg(all(test, feature = "mock"))]
mod tests {
    use super::*;
    use crate::mock::sysfs::SimIommu;
    use crate::mock::{DeviceSpec, MockHost, SysState};

    fn status(checks: &[Check], id: &str) -> Verdict {
        checks.iter().find(|c| c.id == id).unwrap_or_else(|| panic!("no check {id}")).status
    }

    fn fix(checks: &[Check], id: &str) -> String {
        checks.iter().find(|c| c.id == id).unwrap().fix.clone().unwrap_or_default()
    }

    #[test]
    fn a_ready_intel_host_passes() {
        let h = MockHost::new([DeviceSpec::edu("0000:00:04.0").group(1)]).with_sys(|s| {
            *s = SysState::intel_ready();
            s.load_vfio();
            s.modules.insert("iommufd".into());
        });
        let c = run_checks(&*h.fs(), &DoctorOptions::default());
        assert!(!any_failed(&c), "{c:#?}");
        for id in [
            "iommu",
            "iommu-pt",
            "interrupt-remapping",
            "module:vfio_pci",
            "dev-vfio",
            "dev-iommu",
            "memlock",
        ] {
            assert_eq!(status(&c, id), Verdict::Pass, "{id}: {c:#?}");
        }
        assert!(c[0].message.contains("DMAR: IOMMU enabled"));
    }

    #[test]
    fn no_iommu_fails_with_a_fix_for_the_boot_loader() {
        let h = MockHost::new([DeviceSpec::edu("0000:00:04.0")]).with_sys(|s| {
            s.cmdline = "root=/dev/sda1 quiet".into();
            s.files.insert(
                "/etc/default/grub".into(),
                b"GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n".to_vec(),
            );
            s.files.insert("/usr/sbin/update-grub".into(), vec![]);
        });
        let fs = h.fs();
        let c = run_checks(&*fs, &DoctorOptions::default());
        assert!(any_failed(&c));
        assert_eq!(status(&c, "iommu"), Verdict::Fail);
        assert!(fix(&c, "iommu")
            .contains("GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub, run 'update-grub'"));
        assert_eq!(status(&c, "interrupt-remapping"), Verdict::Skip);
        assert_eq!(status(&c, "module:vfio"), Verdict::Fail);
        h.state().sys.cmdline += " intel_iommu=off";
        let c = run_checks(&*fs, &DoctorOptions::default());
        assert!(
            fix(&c, "iommu").starts_with("the command line turns it off (intel_iommu=off)"),
            "{c:#?}"
        );
        // Proxmox: /etc/kernel/cmdline and proxmox-boot-tool win over GRUB.
        h.state()
            .sys
            .files
            .insert("/etc/kernel/cmdline".into(), b"root=ZFS=rpool quiet\n".to_vec());
        h.state().sys.files.insert("/usr/sbin/proxmox-boot-tool".into(), vec![]);
        assert!(cmdline_fix(&*fs, "iommu=pt").contains("proxmox-boot-tool refresh"));
        h.state().sys.files.remove(Path::new("/usr/sbin/proxmox-boot-tool"));
        assert!(cmdline_fix(&*fs, "iommu=pt").contains("/etc/kernel/cmdline"));
        assert_eq!(initramfs_command(&*fs), "rebuild the initramfs with your distribution's tool");
        h.state().sys.files.insert("/usr/bin/dracut".into(), vec![]);
        assert_eq!(initramfs_command(&*fs), "dracut -f --regenerate-all");
    }

    #[test]
    fn interrupt_remapping_follows_ecap_bit_3_and_unsafe_option() {
        let h = MockHost::new([DeviceSpec::edu("0000:00:04.0").group(1)]).with_sys(|s| {
            *s = SysState::intel_ready();
            s.iommus.push(SimIommu {
                name: "dmar1".into(),
                intel_ecap: Some(0xf02056),
                amd_features: None,
            });
            s.load_vfio();
        });
        let fs = h.fs();
        let c = run_checks(&*fs, &DoctorOptions::default());
        assert_eq!(status(&c, "interrupt-remapping"), Verdict::Fail);
        assert!(c.iter().any(|c| c.message.contains("dmar1 (ecap f02056")));
        assert!(fix(&c, "interrupt-remapping").contains("allow_unsafe_interrupts=1"));
        h.state()
            .sys
            .module_params
            .insert(("vfio_iommu_type1".into(), "allow_unsafe_interrupts".into()), "Y".into());
        let c = run_checks(&*fs, &DoctorOptions::default());
        assert_eq!(status(&c, "interrupt-remapping"), Verdict::Warn);
        assert_eq!(status(&c, "unsafe-interrupts"), Verdict::Warn);
    }

    #[test]
    fn warnings_for_acs_override_noiommu_memlock_and_old_kernels() {
        let h = MockHost::new([DeviceSpec::edu("0000:00:04.0").group(1)]).with_sys(|s| {
            *s = SysState::intel_ready();
            s.cmdline += " pcie_acs_override=downstream,multifunction";
            s.kernel_release = "5.15.0-91-generic".into();
            s.memlock = Some(8 << 20);
            s.load_vfio();
            s.module_params
                .insert(("vfio".into(), "enable_unsafe_noiommu_mode".into()), "Y".into());
        });
        let c = run_checks(&*h.fs(), &DoctorOptions { guest_memory: 4 << 30 });
        assert_eq!(status(&c, "acs-override"), Verdict::Warn);
        assert_eq!(status(&c, "noiommu"), Verdict::Warn);
        assert_eq!(status(&c, "memlock"), Verdict::Warn);
        assert_eq!(status(&c, "module:vfio_virqfd"), Verdict::Fail);
        assert_eq!(status(&c, "module:iommufd"), Verdict::Warn);
    }

    #[test]
    fn parsers() {
        assert_eq!(kernel_version("6.12.0-amd64"), Some((6, 12)));
        assert_eq!(kernel_version("x"), None);
        let l = "Limit Soft Hard Units\nMax locked memory         8388608              8388608              bytes\n";
        assert_eq!(parse_memlock(l), Some(Some(8388608)));
        assert_eq!(parse_memlock("Max locked memory unlimited unlimited bytes"), Some(None));
        assert_eq!(parse_memlock("nothing"), None);
        assert_eq!(parse_iommu_register("f0205e"), Some((0xf0205e, None)));
        assert_eq!(parse_iommu_register("0xf0205e\n"), Some((0xf0205e, None)));
        assert_eq!(
            parse_iommu_register("25bf732fa2295afe:53d"),
            Some((0x25bf732fa2295afe, Some(0x53d)))
        );
        assert_eq!(parse_iommu_register("zz"), None);
        assert!(ecap_remaps_interrupts(0xf0205e) && !ecap_remaps_interrupts(0xf02056));
        let c = parse_cmdline("ro intel_iommu=on iommu=pt iommu=off pcie_acs_override=downstream");
        assert_eq!(
            c,
            CmdlineFacts {
                iommu_asked: true,
                iommu_off: vec!["iommu=off".into()],
                passthrough: true,
                acs_override: Some("pcie_acs_override=downstream".into()),
            }
        );
        assert!(!parse_cmdline("intel_iommux=on amd_iommu_intr=legacy").iommu_asked);
        assert!(parse_cmdline("amd_iommu").iommu_asked);
    }
}
