//! `list` and `doctor` on this machine's real /sys: structural facts only.

use std::path::Path;

mod common;
use common::run_root;

fn run(args: &[&str]) -> (i32, String) {
    run_at("/", args)
}

fn run_at(root: &str, args: &[&str]) -> (i32, String) {
    let r = run_root(root, args);
    (r.code, r.out)
}

fn have_pci() -> bool {
    if Path::new("/sys/bus/pci/devices").is_dir() {
        true
    } else {
        eprintln!("skipped: /sys/bus/pci/devices is absent on this machine");
        false
    }
}

#[test]
fn list_shows_exactly_the_devices_of_sys_bus_pci() {
    if !have_pci() {
        return;
    }
    let (code, out) = run(&["list", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let listed: Vec<String> =
        v.as_array().unwrap().iter().map(|d| d["address"].as_str().unwrap().to_string()).collect();
    let mut present: Vec<String> = std::fs::read_dir("/sys/bus/pci/devices")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    assert_eq!(listed, present);
    for d in v.as_array().unwrap() {
        let addr = d["address"].as_str().unwrap();
        let vendor =
            std::fs::read_to_string(format!("/sys/bus/pci/devices/{addr}/vendor")).unwrap();
        assert_eq!(format!("0x{:04x}", d["vendor"].as_u64().unwrap()), vendor.trim());
        let driver = std::fs::read_link(format!("/sys/bus/pci/devices/{addr}/driver"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        assert_eq!(d["driver"].as_str().map(str::to_string), driver);
        let group = Path::new(&format!("/sys/bus/pci/devices/{addr}/iommu_group")).exists();
        assert_eq!(!d["iommu_group"].is_null(), group);
    }
}

#[test]
fn doctor_tells_the_truth_about_the_iommu_and_modules() {
    if !have_pci() {
        return;
    }
    let (code, out) = run(&["doctor", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let status = |id: &str| {
        v.as_array().unwrap().iter().find(|c| c["id"] == id).unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let iommu_active = std::fs::read_dir("/sys/class/iommu")
        .map(|d| d.count() > 0)
        .unwrap_or(false)
        || std::fs::read_dir("/sys/kernel/iommu_groups").map(|d| d.count() > 0).unwrap_or(false);
    assert_eq!(status("iommu") == "pass", iommu_active);
    if !iommu_active {
        eprintln!("this machine has no IOMMU: doctor must fail");
        assert_eq!(code, 1);
        assert_eq!(status("interrupt-remapping"), "skip");
    }
    for m in ["vfio", "vfio_iommu_type1", "vfio_pci"] {
        assert_eq!(
            status(&format!("module:{m}")) == "pass",
            Path::new(&format!("/sys/module/{m}")).exists(),
            "{m}"
        );
    }
}

#[test]
fn groups_and_a_snapshot_of_this_machine_agree_with_it() {
    if !have_pci() {
        return;
    }
    let (code, out) = run(&["groups"]);
    assert_eq!(code, 0);
    let groups = std::fs::read_dir("/sys/kernel/iommu_groups").map(|d| d.count()).unwrap_or(0);
    assert_eq!(out.contains("no IOMMU groups"), groups == 0, "{out}");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snap");
    let (code, _) = run(&["snapshot", dir.to_str().unwrap()]);
    assert_eq!(code, 0);
    let (_, live) = run(&["list"]);
    let (_, captured) = run_at(dir.to_str().unwrap(), &["list"]);
    assert!(dir.join("sys/bus/pci/devices").is_dir());
    assert_eq!(live, captured);
}
