//! The harness vfiotool's integration tests share: the tool run in-process through
//! `vfiotool::run` against chosen backends, with what it prints captured.

#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use clap::Parser;
use vfio_core::hostfs::{HostFs, RealFs};
use vfio_core::kernel::{RealKernel, VfioKernel};
use vfio_core::mock::{DeviceSpec, MdevTypeSpec, MockHost};
use vfio_core::PciAddress;
use vfiotool::cli::Cli;
use vfiotool::Context;

/// An output stream that keeps what is written to it.
#[derive(Clone, Default)]
pub struct Buf(pub Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buf {
    /// What was written, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// One run of the tool: exit code, standard output, standard error.
pub struct Run {
    pub code: i32,
    pub out: String,
    pub err: String,
}

/// Runs `vfiotool ARGS` against the given host view and kernel.
pub fn run_with(fs: Arc<dyn HostFs>, kernel: Arc<dyn VfioKernel>, args: &[&str]) -> Run {
    let (out, err) = (Buf::default(), Buf::default());
    let mut ctx = Context { fs, kernel, out: Box::new(out.clone()), err: Box::new(err.clone()) };
    let mut argv = vec!["vfiotool"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("arguments parse");
    let code = vfiotool::run(cli, &mut ctx);
    Run { code, out: out.text(), err: err.text() }
}

/// Runs the tool on a simulated host: its sysfs and its mock kernel.
pub fn run_mock(h: &MockHost, args: &[&str]) -> Run {
    run_with(h.fs(), h.kernel(), args)
}

/// Runs the tool on a host view with the real kernel behind it (the host commands use no
/// VFIO ioctls; VFIO commands refuse a captured tree).
pub fn run_fs(fs: Arc<dyn HostFs>, args: &[&str]) -> Run {
    run_with(fs, Arc::new(RealKernel::new()), args)
}

/// Runs the tool on the real filesystem under `root`.
pub fn run_root(root: &str, args: &[&str]) -> Run {
    run_fs(Arc::new(RealFs::new(root)), args)
}

/// A PCI address literal.
pub fn a(s: &str) -> PciAddress {
    PciAddress::parse(s).unwrap()
}

/// An Intel 82576 NIC (igb) with SR-IOV (4 VFs, none enabled) at `address`.
pub fn igb_sriov_nic(address: &str, group: u32) -> DeviceSpec {
    let mut nic = DeviceSpec::igb(address).driver("igb").group(group);
    if let Some(sriov) = &mut nic.sriov {
        // The harness's VFs come up without a driver (igbvf not loaded).
        sriov.vf_driver = None;
    }
    nic
}

/// An Intel integrated GPU (i915) offering the GVT-g mediated type `i915-GVTg_V5_4`.
pub fn i915_gvt(address: &str, group: u32) -> DeviceSpec {
    let mut igd = DeviceSpec::new(address).driver("i915").group(group);
    igd.class = 0x030000;
    igd.mdev_types = vec![MdevTypeSpec {
        id: "i915-GVTg_V5_4".into(),
        name: "GVTg_V5_4".into(),
        description: "low_gm_size: 128MB".into(),
        device_api: "vfio-pci".into(),
        max_instances: 2,
        device: None,
    }];
    igd
}
