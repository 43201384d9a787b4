//! Host changes as data: every change `bind`, `unbind` and `restore` make is a [`Step`],
//! planned first and then carried out by one executor ([`run_steps`]), so the dry run
//! prints exactly the list that a real run executes.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::host::{current_driver, write_text};
use crate::hostfs::{HostFs, NodeKind};
use crate::pci::PciAddress;

/// One change to the host, or one check between changes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Step {
    /// Load a kernel module.
    Modprobe(String),
    /// Write a value to an attribute (an empty value writes a newline, which clears
    /// `driver_override`).
    Write {
        /// The attribute.
        path: PathBuf,
        /// The value.
        value: String,
    },
    /// Change the owner of a group node (`/dev/vfio/N`); only character devices.
    Chown {
        /// The node.
        path: PathBuf,
        /// New owner.
        uid: u32,
        /// New group.
        gid: u32,
    },
    /// Bind through the driver's own `bind` file when the probe left the device without
    /// a driver (a driver whose id table does not list the device).
    BindIfUnbound {
        /// The device.
        address: PciAddress,
        /// The driver.
        driver: String,
    },
    /// Check that a device is on a driver (or on none) before going on.
    Expect {
        /// The device.
        address: PciAddress,
        /// The driver it must be on.
        driver: Option<String>,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Modprobe(m) => write!(f, "modprobe {m}"),
            Step::Write { path, value } if value.is_empty() => {
                write!(f, "echo > {}", path.display())
            }
            Step::Write { path, value } => write!(f, "echo {value} > {}", path.display()),
            Step::Chown { path, uid, gid } => write!(f, "chown {uid}:{gid} {}", path.display()),
            Step::BindIfUnbound { address, driver } => write!(
                f,
                "echo {address} > /sys/bus/pci/drivers/{driver}/bind  # if the probe left it without a driver"
            ),
            Step::Expect { address, driver } => write!(
                f,
                "# check: {address} is on {}",
                driver.as_deref().unwrap_or("no driver")
            ),
        }
    }
}

/// Carries out one step.
pub fn run_step(fs: &dyn HostFs, step: &Step) -> Result<()> {
    match step {
        Step::Modprobe(m) => fs.modprobe(m).map_err(|e| {
            Error::host("modprobe", m.as_str(), e)
                .with_hint("install the kernel's modules package or build with CONFIG_VFIO_PCI")
        }),
        Step::Write { path, value } => {
            let data = if value.is_empty() { "\n" } else { value.as_str() };
            write_text(fs, path, data).map_err(|e| match e {
                Error::Host { source, .. }
                    if source.raw_os_error() == Some(libc::EBUSY)
                        && path.ends_with("driver/unbind") =>
                {
                    Error::host("write", path, source)
                        .with_hint("a VFIO user (a VM) holds the device open; stop it and retry")
                }
                e => e,
            })
        }
        Step::Chown { path, uid, gid } => {
            let m = fs.metadata(path).map_err(|e| Error::host("stat", path, e))?;
            if m.kind != NodeKind::CharDevice {
                return Err(Error::Invalid {
                    what: "group node",
                    input: path.display().to_string(),
                    reason: "it is not a character device; nothing was changed".into(),
                });
            }
            fs.chown(path, Some(*uid), Some(*gid)).map_err(|e| Error::host("chown", path, e))
        }
        Step::BindIfUnbound { address, driver } => {
            if current_driver(fs, *address).is_some() {
                return Ok(());
            }
            let bind = Path::new("/sys/bus/pci/drivers").join(driver).join("bind");
            if fs.exists(&bind) {
                write_text(fs, &bind, &address.to_string())?;
            }
            Ok(())
        }
        Step::Expect { address, driver } => {
            let now = current_driver(fs, *address);
            if now == *driver {
                return Ok(());
            }
            let want = driver.as_deref().unwrap_or("no driver");
            Err(Error::BindFailed {
                device: address.to_string(),
                driver: want.to_string(),
                reason: format!(
                    "it is on {} after the change{}",
                    now.as_deref().unwrap_or("no driver"),
                    match driver {
                        Some(d) =>
                            format!("; load the driver (modprobe {d}) and restore {address} again"),
                        None => String::new(),
                    }
                ),
            })
        }
    }
}

/// Carries out steps in order, stopping at the first failure.
pub fn run_steps(fs: &dyn HostFs, steps: &[Step]) -> Result<()> {
    steps.iter().try_for_each(|s| run_step(fs, s))
}
