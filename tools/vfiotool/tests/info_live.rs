//! `vfiotool info` on every PCI device of this machine against `lspci -vvv`: the same
//! capabilities in the same order with the same key fields. Skips when lspci is missing
//! or the test does not run as root.

use std::io::{self};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use clap::Parser;
use vfio_core::hostfs::RealFs;
use vfio_core::kernel::RealKernel;
use vfio_core::PciAddress;
use vfiotool::cli::Cli;
use vfiotool::cmd::info::collect;
use vfiotool::Context;

mod common;
use common::Buf;

#[path = "../../../vfio-core/tests/common/lspci.rs"]
mod lspci;

#[test]
fn info_agrees_with_lspci_on_every_device_of_this_machine() {
    if let Some(why) = lspci::live_skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let fs = RealFs::new("/");
    let Ok(entries) = std::fs::read_dir("/sys/bus/pci/devices") else {
        println!("skipped: no /sys/bus/pci/devices");
        return;
    };
    let mut failures = Vec::new();
    for e in entries {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        let addr = PciAddress::parse(&name).unwrap();
        let text = String::from_utf8_lossy(
            &Command::new("lspci").args(["-vvv", "-s", &name]).output().unwrap().stdout,
        )
        .into_owned();
        // The data `info` collects, field by field.
        let info = collect(&fs, addr, false).unwrap();
        for err in lspci::compare(&info.config, &text) {
            failures.push(format!("{name}: {err}"));
        }
        // The JSON `info --json` prints: offsets in lspci's order.
        let out = Buf::default();
        let mut ctx = Context {
            fs: Arc::new(RealFs::new("/")),
            kernel: Arc::new(RealKernel::new()),
            out: Box::new(out.clone()),
            err: Box::new(io::sink()),
        };
        let cli = Cli::try_parse_from(["vfiotool", "info", "--json", &name]).unwrap();
        assert_eq!(vfiotool::run(cli, &mut ctx), 0);
        let v: serde_json::Value = serde_json::from_slice(&out.0.lock().unwrap()).unwrap();
        let mut ours = Vec::new();
        for key in ["capabilities", "extended_capabilities"] {
            for c in v["config"][key].as_array().unwrap() {
                ours.push(c["offset"].as_u64().unwrap() as u16);
            }
        }
        let theirs: Vec<u16> = lspci::parse_lspci(&text).iter().map(|c| c.offset).collect();
        if ours != theirs {
            failures.push(format!("{name}: info --json offsets {ours:x?}, lspci {theirs:x?}"));
        }
        assert!(Path::new("/sys/bus/pci/devices").join(&name).exists());
    }
    assert!(failures.is_empty(), "disagreements with lspci:\n{}", failures.join("\n"));
}
