//! The guest's initramfs: busybox, the project's static binaries, test executables, the
//! stock kernel's modules and an init script that runs one command and reports its status.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{LabError, Result};
use crate::kernel::GuestModule;

/// The guest scripts shipped in every initramfs under `/lab`.
pub const GUEST_FILES: &[(&str, &str)] = &[
    ("lib.sh", include_str!("../guest/lib.sh")),
    ("suite.sh", include_str!("../guest/suite.sh")),
    ("demo.sh", include_str!("../guest/demo.sh")),
];

/// Where busybox-static installs its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// The marker line prefix the init script prints before the command starts.
pub const BEGIN: &str = "VFIO-LAB-BEGIN";
/// The marker line prefix the init script prints with the command's exit status.
pub const EXIT: &str = "VFIO-LAB-EXIT";

/// What the guest's init does after setting up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestAction {
    /// Run this command (argv), print the exit marker, power off.
    Run(Vec<String>),
    /// An interactive shell on the console, then power off.
    Shell,
}

/// Everything that goes into one initramfs.
#[derive(Debug, Clone)]
pub struct InitramfsSpec {
    /// Executables for `/bin`.
    pub bins: Vec<PathBuf>,
    /// Executables for `/tests` (the suite runs each).
    pub tests: Vec<PathBuf>,
    /// Modules to load, in order.
    pub modules: Vec<GuestModule>,
    /// `VFIO_LAB_*` variables.
    pub env: Vec<(String, String)>,
    /// Extra files: (host source, guest path).
    pub files: Vec<(PathBuf, String)>,
    /// The action.
    pub action: GuestAction,
    /// The unique token in the marker lines of this boot.
    pub nonce: String,
}

/// Quotes one word for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The `/etc/vfio-lab.env` text: `export NAME=value` lines.
pub fn env_file(env: &[(String, String)]) -> String {
    env.iter().map(|(k, v)| format!("export {k}={}\n", shell_quote(v))).collect()
}

/// The `/init` script.
pub fn init_script(spec: &InitramfsSpec) -> String {
    let mut s = String::from(
        "#!/bin/busybox sh\n\
         /bin/busybox mkdir -p /proc /sys /dev /tmp /run /sbin /usr/bin /usr/sbin\n\
         /bin/busybox --install -s /bin\n\
         export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         mkdir -p /dev/hugepages /dev/pts /root\n\
         mount -t devpts devpts /dev/pts 2>/dev/null\n\
         mount -t tmpfs tmpfs /tmp\n\
         mount -t hugetlbfs hugetlbfs /dev/hugepages || echo 'vfio-lab: no hugetlbfs'\n\
         echo 16 > /proc/sys/vm/nr_hugepages 2>/dev/null\n\
         echo 4 > /proc/sys/kernel/printk 2>/dev/null\n",
    );
    for m in &spec.modules {
        let name = m.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        s.push_str(&format!(
            "insmod /lib/modules/{name} {} || echo 'vfio-lab: insmod {name} failed'\n",
            m.params
        ));
    }
    s.push_str(". /etc/vfio-lab.env\n");
    s.push_str(&format!("echo '{BEGIN} {}'\ncd /\n", spec.nonce));
    match &spec.action {
        GuestAction::Run(_) => s.push_str("sh /lab/cmd\nrc=$?\n"),
        GuestAction::Shell => s.push_str("setsid cttyhack sh -l\nrc=$?\n"),
    }
    // Power-off shuts devices down in reverse creation order: the virtio-iommu goes before
    // the devices it translates, and nvme's shutdown then waits 60 s for a DMA that faults.
    // Unbinding the device drivers first (keeping the IOMMU's virtio-pci) avoids that.
    s.push_str(&format!(
        "sync\necho \"{EXIT} {} $rc\"\n\
         [ \"$rc\" = 0 ] || {{ echo 'vfio-lab: guest kernel log (last 60 lines):'; dmesg | tail -n 60; }}\n\
         for d in /sys/bus/pci/devices/*/driver; do\n\
         \x20   case \"$(readlink \"$d\")\" in */virtio-pci|*/pcieport) ;; *) echo \"$(basename \"$(dirname \"$d\")\")\" > \"$d/unbind\" 2>/dev/null ;; esac\n\
         done\n\
         poweroff -f\nreboot -f\n",
        spec.nonce
    ));
    s
}

/// The `/lab/cmd` script for a command line.
pub fn command_script(argv: &[String]) -> String {
    let words: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
    format!("{}\n", words.join(" "))
}

fn put(root: &Path, guest: &str, data: &[u8], mode: u32) -> Result<()> {
    let p = root.join(guest.trim_start_matches('/'));
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).map_err(|e| LabError::io("create directory", d, e))?;
    }
    std::fs::write(&p, data).map_err(|e| LabError::io("write", &p, e))?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
        .map_err(|e| LabError::io("chmod", &p, e))
}

fn copy_in(root: &Path, src: &Path, guest: &str, mode: u32) -> Result<()> {
    let data = std::fs::read(src).map_err(|e| LabError::io("read", src, e))?;
    put(root, guest, &data, mode)
}

fn file_name(p: &Path) -> Result<String> {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| LabError::Usage(format!("{} has no file name", p.display())))
}

/// Lays out the initramfs tree in `root`.
pub fn stage(spec: &InitramfsSpec, root: &Path) -> Result<()> {
    copy_in(root, Path::new(BUSYBOX), "/bin/busybox", 0o755)?;
    put(root, "/init", init_script(spec).as_bytes(), 0o755)?;
    put(root, "/etc/vfio-lab.env", env_file(&spec.env).as_bytes(), 0o644)?;
    for (name, text) in GUEST_FILES {
        put(root, &format!("/lab/{name}"), text.as_bytes(), 0o755)?;
    }
    if let GuestAction::Run(argv) = &spec.action {
        put(root, "/lab/cmd", command_script(argv).as_bytes(), 0o755)?;
    }
    for b in &spec.bins {
        copy_in(root, b, &format!("/bin/{}", file_name(b)?), 0o755)?;
    }
    std::fs::create_dir_all(root.join("tests"))
        .map_err(|e| LabError::io("create directory", root, e))?;
    for t in &spec.tests {
        copy_in(root, t, &format!("/tests/{}", file_name(t)?), 0o755)?;
    }
    for m in &spec.modules {
        copy_in(root, &m.path, &format!("/lib/modules/{}", file_name(&m.path)?), 0o644)?;
    }
    for (src, guest) in &spec.files {
        copy_in(root, src, guest, 0o644)?;
    }
    Ok(())
}

/// Builds `out` (gzip'd newc cpio) from a staged tree, with cpio and gzip.
pub fn pack(root: &Path, out: &Path) -> Result<()> {
    let file = std::fs::File::create(out).map_err(|e| LabError::io("create", out, e))?;
    let script = "find . -print0 | cpio --null -o -H newc -R 0:0 --quiet | gzip -1";
    let status = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(file)
        .status()
        .map_err(|e| LabError::Command { command: script.into(), detail: e.to_string() })?;
    if !status.success() {
        return Err(LabError::Command { command: script.into(), detail: status.to_string() });
    }
    Ok(())
}

/// Stages and packs an initramfs into `out`.
pub fn build(spec: &InitramfsSpec, work: &Path, out: &Path) -> Result<()> {
    let root = work.join("root");
    std::fs::create_dir_all(&root).map_err(|e| LabError::io("create directory", &root, e))?;
    stage(spec, &root)?;
    pack(&root, out)?;
    std::io::stderr().flush().ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(action: GuestAction) -> InitramfsSpec {
        InitramfsSpec {
            bins: vec![],
            tests: vec![],
            modules: vec![
                GuestModule { path: "/x/vfio.ko".into(), params: String::new() },
                GuestModule {
                    path: "/x/vfio_iommu_type1.ko".into(),
                    params: "allow_unsafe_interrupts=1".into(),
                },
            ],
            env: vec![("VFIO_LAB_KERNEL".into(), "stock".into())],
            files: vec![],
            action,
            nonce: "n0nce".into(),
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("vfiotool"), "vfiotool");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(x)"), "'$(x)'");
    }

    #[test]
    fn init_loads_modules_in_order_with_params() {
        let s = init_script(&spec(GuestAction::Run(vec!["true".into()])));
        let a = s.find("insmod /lib/modules/vfio.ko").unwrap();
        let b =
            s.find("insmod /lib/modules/vfio_iommu_type1.ko allow_unsafe_interrupts=1").unwrap();
        assert!(a < b);
        assert!(s.contains("mount -t hugetlbfs"));
        assert!(s.contains("mount -t devtmpfs"));
        assert!(s.contains("echo \"VFIO-LAB-EXIT n0nce $rc\""));
        assert!(s.contains("sh /lab/cmd"));
        // Drivers are unbound before power-off, after the exit marker.
        let exit = s.find("VFIO-LAB-EXIT").unwrap();
        let unbind = s.find("/unbind").unwrap();
        assert!(exit < unbind && unbind < s.find("poweroff -f").unwrap());
    }

    #[test]
    fn shell_action_runs_interactive_shell() {
        let s = init_script(&spec(GuestAction::Shell));
        assert!(s.contains("cttyhack sh"));
        assert!(!s.contains("/lab/cmd"));
    }

    #[test]
    fn command_script_quotes_each_word() {
        let argv = vec!["vfiotool".to_string(), "list".into(), "a b".into()];
        assert_eq!(command_script(&argv), "vfiotool list 'a b'\n");
    }

    #[test]
    fn env_file_exports() {
        let e = env_file(&[("A".into(), "x y".into())]);
        assert_eq!(e, "export A='x y'\n");
    }

    #[test]
    fn stage_lays_out_files() {
        if !Path::new(BUSYBOX).exists() {
            eprintln!("skipped: {BUSYBOX} missing (apt-get install busybox-static)");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("tool");
        std::fs::write(&bin, b"#!/bin/sh\n").unwrap();
        let m = d.path().join("m.ko");
        std::fs::write(&m, b"ko").unwrap();
        let mut s = spec(GuestAction::Run(vec!["tool".into()]));
        s.bins = vec![bin.clone()];
        s.tests = vec![bin];
        s.modules = vec![GuestModule { path: m, params: String::new() }];
        let root = d.path().join("root");
        stage(&s, &root).unwrap();
        for p in [
            "init",
            "bin/busybox",
            "bin/tool",
            "tests/tool",
            "lib/modules/m.ko",
            "lab/suite.sh",
            "lab/cmd",
            "etc/vfio-lab.env",
        ] {
            assert!(root.join(p).exists(), "{p}");
        }
        let mode = std::fs::metadata(root.join("init")).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111);
    }
}
