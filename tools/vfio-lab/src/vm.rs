//! Booting the VM and reading its serial console.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::{LabError, Result};
use crate::initramfs::{BEGIN, EXIT};
use crate::topology::{qemu_args, VmConfig};

/// A marker line printed by the guest's init.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// The command starts.
    Begin,
    /// The command ended with this status.
    Exit(i32),
}

/// Finds this boot's marker in a console line (the kernel may print before it on the line).
pub fn parse_marker(line: &str, nonce: &str) -> Option<Marker> {
    let begin = format!("{BEGIN} {nonce}");
    if line.trim_end().ends_with(&begin) {
        return Some(Marker::Begin);
    }
    let exit = format!("{EXIT} {nonce} ");
    let i = line.find(&exit)?;
    line[i + exit.len()..].trim().parse().ok().map(Marker::Exit)
}

/// How much of the console to show while the VM runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// Everything, boot log included.
    All,
    /// Only the command's output (after the begin marker); the boot log is shown on failure.
    Command,
}

/// How long a guest that has reported its exit status may take to power off.
pub const POWER_OFF_GRACE: Duration = Duration::from_secs(20);

/// Boots the VM, streams the console, returns the guest command's exit status.
/// The boot log is printed on failure. A timeout kills QEMU; so does a guest that has
/// reported its status but not powered off within [`POWER_OFF_GRACE`].
pub fn run(cfg: &VmConfig, nonce: &str, timeout: Duration, echo: Echo) -> Result<i32> {
    run_with_grace(cfg, nonce, timeout, POWER_OFF_GRACE, echo)
}

/// [`run`] with a chosen power-off grace period.
fn run_with_grace(
    cfg: &VmConfig,
    nonce: &str,
    timeout: Duration,
    grace: Duration,
    echo: Echo,
) -> Result<i32> {
    let args = qemu_args(cfg);
    let spawn = || {
        Command::new(&cfg.qemu)
            .envs(cfg.qemu_env.iter().map(|(k, v)| (k, v)))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
    };
    // ETXTBSY: an executable written a moment ago stays "busy" while any process forked
    // meanwhile (by another thread) still holds the writer's descriptor; it passes.
    let mut tries = 0;
    let mut child = loop {
        match spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            r => {
                break r.map_err(|e| LabError::Command {
                    command: format!("{} {}", cfg.qemu.display(), args.join(" ")),
                    detail: format!("{e} (apt-get install qemu-system-x86)"),
                })?
            }
        }
    };
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .replace('\r', "");
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut deadline = Instant::now() + timeout;
    let mut boot_log: Vec<String> = Vec::new();
    let mut begun = false;
    let mut status: Option<i32> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                match parse_marker(&line, nonce) {
                    Some(Marker::Begin) => {
                        begun = true;
                        continue;
                    }
                    Some(Marker::Exit(s)) => {
                        status = Some(s);
                        // The result is in: the guest gets a short grace period to
                        // power off, after which the VM is stopped from here (a guest
                        // shutdown that stalls must not turn a finished run into a
                        // timeout).
                        deadline = deadline.min(Instant::now() + grace);
                        continue;
                    }
                    None => {}
                }
                if echo == Echo::All || (begun && status.is_none()) {
                    println!("{line}");
                } else {
                    boot_log.push(line);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                kill(&mut child);
                let _ = reader.join();
                if let Some(s) = status {
                    eprintln!(
                        "vfio-lab: the guest did not power off within {} s of finishing; VM stopped",
                        grace.as_secs()
                    );
                    if s != 0 {
                        show_boot_log(&boot_log, echo);
                    }
                    return Ok(s);
                }
                show_boot_log(&boot_log, echo);
                return Err(LabError::Timeout(timeout.as_secs()));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let qemu_status = child.wait().map_err(|e| LabError::Command {
        command: cfg.qemu.display().to_string(),
        detail: e.to_string(),
    })?;
    let _ = reader.join();
    match status {
        Some(0) => Ok(0),
        Some(s) => {
            show_boot_log(&boot_log, echo);
            Ok(s)
        }
        None => {
            show_boot_log(&boot_log, echo);
            Err(LabError::NoMarker { status: qemu_status.to_string() })
        }
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn show_boot_log(log: &[String], echo: Echo) {
    if echo == Echo::All || log.is_empty() {
        return;
    }
    eprintln!("---- vfio-lab: guest console (outside the command) ----");
    for l in log {
        eprintln!("{l}");
    }
    eprintln!("---- end of guest console ----");
}

/// Boots the VM with the serial console on this terminal (for `shell`).
pub fn interactive(cfg: &VmConfig) -> Result<i32> {
    let args = qemu_args(cfg);
    let status = Command::new(&cfg.qemu)
        .envs(cfg.qemu_env.iter().map(|(k, v)| (k, v)))
        .args(&args)
        .status()
        .map_err(|e| LabError::Command {
            command: cfg.qemu.display().to_string(),
            detail: e.to_string(),
        })?;
    Ok(status.code().unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::IommuMode;
    use std::os::unix::fs::PermissionsExt;

    /// A VM config whose "QEMU" is a shell script printing `body`'s output.
    fn fake(dir: &std::path::Path, body: &str) -> VmConfig {
        let q = dir.join("fake-qemu");
        std::fs::write(&q, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&q, std::fs::Permissions::from_mode(0o755)).unwrap();
        VmConfig {
            qemu: q,
            firmware: vec![],
            qemu_env: vec![],
            newer_devices: false,
            accel: "tcg".into(),
            memory_mib: 64,
            cpus: 1,
            kernel: "/k".into(),
            initrd: "/i".into(),
            nvme_image: "/d".into(),
            iommu: IommuMode::Virtio,
            cmdline: String::new(),
        }
    }

    #[test]
    fn guest_status_becomes_the_result() {
        let d = tempfile::tempdir().unwrap();
        let cfg = fake(
            d.path(),
            "printf 'boot\\r\\nVFIO-LAB-BEGIN t1\\r\\nout\\r\\nVFIO-LAB-EXIT t1 3\\r\\n'",
        );
        assert_eq!(run(&cfg, "t1", Duration::from_secs(600), Echo::Command).unwrap(), 3);
        let cfg = fake(d.path(), "echo 'VFIO-LAB-BEGIN t2'; echo 'VFIO-LAB-EXIT t2 0'");
        assert_eq!(run(&cfg, "t2", Duration::from_secs(600), Echo::All).unwrap(), 0);
    }

    #[test]
    fn exit_without_marker_fails() {
        let d = tempfile::tempdir().unwrap();
        // A marker with another boot's token does not count.
        let cfg = fake(d.path(), "echo 'VFIO-LAB-EXIT old 0'; exit 1");
        let e = run(&cfg, "new", Duration::from_secs(600), Echo::Command).unwrap_err();
        assert!(matches!(e, LabError::NoMarker { .. }), "{e}");
    }

    #[test]
    fn hung_vm_is_killed_at_the_timeout() {
        let d = tempfile::tempdir().unwrap();
        let cfg = fake(d.path(), "echo 'VFIO-LAB-BEGIN t3'; exec sleep 1000");
        let e = run(&cfg, "t3", Duration::from_secs(1), Echo::Command).unwrap_err();
        assert!(matches!(e, LabError::Timeout(1)), "{e}");
    }

    #[test]
    fn a_guest_that_finished_but_does_not_power_off_is_stopped_with_its_status() {
        let d = tempfile::tempdir().unwrap();
        let cfg =
            fake(d.path(), "echo 'VFIO-LAB-BEGIN t4'; echo 'VFIO-LAB-EXIT t4 5'; exec sleep 1000");
        let r = run_with_grace(
            &cfg,
            "t4",
            Duration::from_secs(600),
            Duration::from_secs(1),
            Echo::Command,
        );
        assert_eq!(r.unwrap(), 5);
    }

    #[test]
    fn missing_qemu_is_a_command_error() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = fake(d.path(), "");
        cfg.qemu = "/nonexistent/qemu".into();
        let e = run(&cfg, "x", Duration::from_secs(1), Echo::Command).unwrap_err();
        assert!(e.to_string().contains("qemu-system-x86"), "{e}");
    }

    #[test]
    fn markers_parse_for_this_nonce_only() {
        assert_eq!(parse_marker("VFIO-LAB-BEGIN abc", "abc"), Some(Marker::Begin));
        assert_eq!(parse_marker("VFIO-LAB-EXIT abc 0", "abc"), Some(Marker::Exit(0)));
        assert_eq!(parse_marker("VFIO-LAB-EXIT abc 127", "abc"), Some(Marker::Exit(127)));
        assert_eq!(parse_marker("VFIO-LAB-EXIT xyz 0", "abc"), None);
        assert_eq!(parse_marker("echo VFIO-LAB-EXIT abc $rc", "abc"), None);
        assert_eq!(
            parse_marker("[    1.0] random: crngVFIO-LAB-EXIT abc 3", "abc"),
            Some(Marker::Exit(3))
        );
        assert_eq!(parse_marker("hello", "abc"), None);
    }
}
