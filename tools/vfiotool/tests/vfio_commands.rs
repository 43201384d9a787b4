//! `vfiotool info` (its VFIO section), `rom dump`/`rom check` through the VFIO ROM region,
//! and `bench`, through `vfiotool::run` on a simulated host, in the legacy container
//! (type1v2) and iommufd modes.

use std::path::Path;
use std::sync::Arc;

use clap::Parser;
use vfio_core::kernel::{Errno, KernelOp};
use vfio_core::mock::{DeviceSpec, Fault, MockHost, MockKernelConfig};
use vfio_core::{Interface, Vfio};
use vfiotool::cli::Cli;
use vfiotool::Context;

mod common;
use common::{a, run_mock as run, Buf, Run};

fn json(r: &Run) -> serde_json::Value {
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    serde_json::from_str(&r.out).unwrap_or_else(|e| panic!("{e}: {}", r.out))
}

fn rom_file() -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../vfio-core/tests/data/rom/efi-e1000e.rom"),
    )
    .unwrap()
}

const EDU: &str = "0000:00:04.0";
const NVME: &str = "0000:01:00.0";
const IDS: &str = "1234  Technical Corp.\n\t11e8  QEMU edu device\n1af4  Red Hat, Inc.\n\
1b36  Red Hat, Inc.\n\t0010  QEMU NVM Express Controller\n\t\t1af4 1100  QEMU Virtual Machine\n\
C 00  Unclassified device\n\tff  Unassigned class\nC 01  Mass storage controller\n\
\t08  Non-Volatile memory controller\n\t\t02  NVM Express\n";

/// An edu device with the iPXE ROM on vfio-pci alone in group 1; an NVMe controller on
/// vfio-pci on bus 1 (hot-resettable) with a second function on nvme in group 5.
fn host(mode: &str) -> MockHost {
    let mut edu = DeviceSpec::edu(EDU).group(1).driver("vfio-pci");
    edu.rom = Some(rom_file());
    let h = MockHost::new([
        edu,
        DeviceSpec::nvme(NVME).group(4).driver("vfio-pci"),
        DeviceSpec::nvme("0000:01:00.1").group(5).driver("nvme"),
        DeviceSpec::edu("0000:00:05.0").group(6).driver("edu"),
    ])
    .with_sys(|s| {
        s.load_vfio();
        s.modules.insert("iommufd".into());
        s.files.insert("/usr/share/misc/pci.ids".into(), IDS.as_bytes().to_vec());
    });
    if mode == "type1v2" {
        h.set_kernel_config(MockKernelConfig { iommufd: false, ..MockKernelConfig::default() });
    }
    h
}

#[test]
fn info_shows_names_from_pci_ids() {
    let h = host("iommufd");
    let r = run(&h, &["info", NVME]);
    assert_eq!(r.code, 0, "{}", r.err);
    let first = r.out.lines().next().unwrap();
    assert_eq!(
        first,
        "0000:01:00.0 Non-Volatile memory controller (NVM Express) [010802]: 1b36:0010 \
         Red Hat, Inc. QEMU NVM Express Controller (rev 02)"
    );
    assert!(r.out.contains("  Subsystem: 1af4:1100 QEMU Virtual Machine\n"), "{}", r.out);
    let v = json(&run(&h, &["info", "--json", EDU]));
    assert_eq!(v["names"]["vendor"], "Technical Corp.");
    assert_eq!(v["names"]["device"], "QEMU edu device");
    assert_eq!(v["names"]["class"], "Unassigned class");
    assert_eq!(v["names"]["subsystem"], "Red Hat, Inc.");
    assert!(v["names"]["prog_if"].is_null());
}

#[test]
fn info_vfio_section_in_type1v2_mode() {
    let h = host("type1v2");
    let r = run(&h, &["info", EDU]);
    assert_eq!(r.code, 0, "{}", r.err);
    for want in [
        "  VFIO: opened through container (Type1v2)\n",
        "    Region 0 BAR0: 1M, rw, mmap\n",
        "    Region 6 ROM: 256K, r\n",
        "    Region 7 CONFIG: 256 bytes, rw\n",
        "    IRQ INTx: 1 vector(s), eventfd maskable automasked\n",
        "    IRQ MSI: 1 vector(s), eventfd noresize\n",
        "    IRQ MSI-X: none\n",
        "    IRQ ERR: none\n",
        "    Reset: no VFIO_DEVICE_RESET",
        "    Hot reset: unavailable: ",
        "    IOMMU page sizes: 4K 2M 1G\n",
        "    IOVA ranges: 0x0-0xfedfffff, 0xfef00000-0xffffffffffff\n",
        "    Features: low_power_entry (set), low_power_entry_with_wakeup (set), \
         low_power_exit (set), dma_buf (get)\n",
    ] {
        assert!(r.out.contains(want), "missing {want:?} in\n{}", r.out);
    }
    // The sysfs part is still there.
    assert!(r.out.contains("  Driver: vfio-pci\n"), "{}", r.out);
    assert!(!r.out.contains("Region 8 VGA"), "absent regions only with -v:\n{}", r.out);
    let v = run(&h, &["info", "-v", EDU]);
    assert!(v.out.contains("    Region 8 VGA: absent\n"), "{}", v.out);

    let v = json(&run(&h, &["info", "--json", EDU]));
    let s = &v["vfio"];
    assert_eq!(s["opened"], true);
    assert_eq!(s["interface"], "container (Type1v2)");
    assert_eq!(s["regions"][0]["name"], "BAR0");
    assert_eq!(s["regions"][0]["size"], 1 << 20);
    assert_eq!(s["regions"][0]["mmap"], true);
    assert_eq!(s["regions"][0]["mmap_areas"][0]["size"], 1 << 20);
    assert_eq!(s["regions"][6]["name"], "ROM");
    assert_eq!(s["regions"][6]["write"], false);
    assert_eq!(s["irqs"][0]["name"], "INTx");
    assert_eq!(s["irqs"][1]["count"], 1);
    assert_eq!(s["reset"]["can_reset"], false);
    assert!(s["reset"]["hot_reset_affects"].is_null());
    assert!(s["reset"]["hot_reset_error"].as_str().unwrap().contains("ENODEV"), "{s}");
    assert_eq!(s["iommu"]["page_sizes"], serde_json::json!([4096, 2 << 20, 1 << 30]));
    assert_eq!(s["iommu"]["iova_ranges"][1]["start"], 0xfef0_0000u64);
    assert_eq!(s["features"]["supported"][0]["name"], "low_power_entry");
    assert_eq!(s["features"]["supported"][0]["set"], true);
    assert_eq!(s["features"]["supported"][0]["get"], false);
    assert!(s["features"]["error"].is_null());
}

#[test]
fn info_vfio_section_in_iommufd_mode() {
    let h = host("iommufd");
    let v = json(&run(&h, &["info", "--json", NVME]));
    let s = &v["vfio"];
    assert_eq!(s["interface"], "iommufd");
    assert!(s["iommu"]["page_sizes"].is_null());
    assert_eq!(s["iommu"]["iova_ranges"][0]["last"], 0xfedf_ffffu64);
    assert_eq!(s["reset"]["can_reset"], true);
    assert_eq!(s["reset"]["hot_reset_affects"], serde_json::json!([NVME, "0000:01:00.1"]));
    assert_eq!(s["irqs"][2]["name"], "MSI-X");
    assert_eq!(s["irqs"][2]["count"], 65);
    assert_eq!(s["regions"][0]["msix_mappable"], true);
    let r = run(&h, &["info", NVME]);
    assert!(r.out.contains("  VFIO: opened through iommufd\n"), "{}", r.out);
    assert!(r.out.contains("    Hot reset resets: 0000:01:00.0, 0000:01:00.1\n"), "{}", r.out);
    assert!(r.out.contains("    IOMMU page sizes: not reported by this interface\n"), "{}", r.out);
    assert!(r.out.contains(", MSI-X table mappable"), "{}", r.out);
    // Forcing the container works on the same host.
    let v = json(&run(&h, &["info", "--json", "--interface", "container", NVME]));
    assert_eq!(v["vfio"]["interface"], "container (Type1v2)");
    assert_eq!(v["vfio"]["reset"]["hot_reset_affects"][1], "0000:01:00.1");
}

#[test]
fn info_leaves_vfio_out_for_other_drivers_and_with_no_vfio() {
    let h = host("iommufd");
    let v = json(&run(&h, &["info", "--json", "0000:00:05.0"]));
    assert!(v["vfio"].is_null());
    let v = json(&run(&h, &["info", "--json", "--no-vfio", EDU]));
    assert!(v["vfio"].is_null());
    assert_eq!(h.kernel().calls(KernelOp::DeviceGetInfo), 0);
    let r = run(&h, &["info", "0000:00:05.0"]);
    assert!(!r.out.contains("VFIO"), "{}", r.out);
}

#[test]
fn info_says_why_vfio_could_not_open_and_keeps_the_rest() {
    // The group also holds a device on a DMA-capable host driver: not viable.
    let mut other = DeviceSpec::edu("0000:00:06.0").group(1).driver("e1000e");
    other.device = 0x1000;
    let h = MockHost::new([DeviceSpec::edu(EDU).group(1).driver("vfio-pci"), other])
        .with_sys(|s| s.load_vfio());
    h.set_kernel_config(MockKernelConfig { iommufd: false, ..MockKernelConfig::default() });
    let r = run(&h, &["info", EDU]);
    assert_eq!(r.code, 0, "{}", r.err);
    let line = r.out.lines().find(|l| l.contains("VFIO:")).unwrap();
    assert!(line.starts_with("  VFIO: not opened: "), "{line}");
    assert!(line.contains("group 1") && line.contains("0000:00:06.0"), "{line}");
    assert!(r.out.contains("  Driver: vfio-pci\n") && r.out.contains("BAR0:"), "{}", r.out);
    let v = json(&run(&h, &["info", "--json", EDU]));
    assert_eq!(v["vfio"]["opened"], false);
    assert!(v["vfio"]["error"].as_str().unwrap().contains("not viable"), "{v}");
    assert_eq!(v["vfio"]["regions"], serde_json::json!([]));

    // A busy device (the cdev already open elsewhere).
    let h = host("iommufd");
    h.inject(Fault::kernel(KernelOp::OpenDeviceCdev).errno(Errno::EBUSY));
    let r = run(&h, &["info", EDU]);
    assert_eq!(r.code, 0, "{}", r.err);
    let line = r.out.lines().find(|l| l.contains("VFIO:")).unwrap();
    assert!(line.contains("not opened") && line.contains("EBUSY"), "{line}");
    assert!(line.contains("already open"), "{line}");
}

#[test]
fn rom_dump_reads_the_same_bytes_through_vfio_and_sysfs() {
    let want = rom_file();
    for mode in ["type1v2", "iommufd"] {
        let h = host(mode);
        let dir = tempfile::tempdir().unwrap();
        for source in ["vfio", "sysfs", "auto"] {
            let out = dir.path().join(format!("{source}.rom"));
            let r = run(&h, &["rom", "dump", EDU, "-o", out.to_str().unwrap(), "--source", source]);
            assert_eq!(r.code, 0, "{mode} {source}: {}", r.err);
            assert_eq!(std::fs::read(&out).unwrap(), want, "{mode} {source}");
            let through = if source == "sysfs" { "sysfs" } else { "VFIO" };
            assert!(r.out.contains(&format!("(read through {through})")), "{}", r.out);
        }
    }
    // Through VFIO nothing is written to the sysfs `rom` attribute.
    let h = host("iommufd");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.rom");
    run(&h, &["rom", "dump", EDU, "-o", out.to_str().unwrap(), "--source", "vfio"]);
    assert!(h.state().sys.writes.iter().all(|p| !p.ends_with("rom")), "{:?}", h.state().sys.writes);
    assert_eq!(h.kernel().open_fds(), 0);
}

#[test]
fn rom_dump_dry_run_describes_the_vfio_steps() {
    let h = host("iommufd");
    let r = run(&h, &["rom", "dump", EDU, "-o", "/nonexistent/x.rom", "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(r.out.contains("read the ROM region (index 6)"), "{}", r.out);
    let r = run(&h, &["rom", "dump", "0000:00:05.0", "-o", "/nonexistent/x", "--dry-run"]);
    assert!(r.out.contains("write \"1\" to /sys/bus/pci/devices/0000:00:05.0/rom"), "{}", r.out);
}

#[test]
fn rom_check_reads_a_device_through_vfio() {
    for mode in ["type1v2", "iommufd"] {
        let h = host(mode);
        // The ROM is for 8086:10d3; the edu device is 1234:11e8: a mismatch.
        let r = run(&h, &["rom", "check", EDU, "--source", "vfio"]);
        assert_eq!(r.code, 2, "{}{}", r.out, r.err);
        assert!(r.out.contains("ids match 1234:11e8: no"), "{}", r.out);
        let r = run(&h, &["rom", "check", EDU, "--source", "vfio", "--device", "8086:10d3"]);
        assert_eq!(r.code, 0, "{}{}", r.out, r.err);
        assert!(r.out.contains("UEFI (OVMF):    yes"), "{}", r.out);
    }
}

#[test]
fn rom_through_vfio_errors_are_one_line() {
    let h = host("iommufd");
    let r = run(&h, &["rom", "check", "0000:00:05.0", "--source", "vfio"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.err.lines().count(), 1, "{}", r.err);
    assert!(r.err.contains("bind it first: vfiotool bind 0000:00:05.0"), "{}", r.err);
    let r = run(&h, &["rom", "dump", NVME, "-o", "/nonexistent/x", "--source", "vfio"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.err.lines().count(), 1, "{}", r.err);
    assert!(r.err.contains("VFIO ROM region is empty"), "{}", r.err);
}

fn bar0(h: &MockHost, len: usize) -> Vec<u8> {
    let vfio = Vfio::new(h.kernel(), h.fs());
    let dev = vfio.open(a(EDU), Interface::Auto).unwrap();
    let mut b = vec![0u8; len];
    dev.read_region(0, 0, &mut b).unwrap();
    b
}

fn fill_bar0(h: &MockHost) {
    let vfio = Vfio::new(h.kernel(), h.fs());
    let dev = vfio.open(a(EDU), Interface::Auto).unwrap();
    let pattern: Vec<u8> = (0..256u32).map(|i| (i * 7 + 3) as u8).collect();
    dev.write_region(0, 0, &pattern).unwrap();
}

#[test]
fn bench_reports_every_section_in_both_modes() {
    for (mode, iface, want) in [
        ("type1v2", "auto", "container (Type1v2)"),
        ("iommufd", "auto", "iommufd"),
        ("iommufd", "container", "container (Type1v2)"),
    ] {
        let h = host(mode);
        let v =
            json(&run(&h, &["bench", EDU, "--iterations", "20", "--json", "--interface", iface]));
        assert_eq!(v["schema"], "vfiotool.bench/1");
        assert_eq!(v["interface"], want);
        assert_eq!(v["register"]["mapped"], true);
        assert_eq!(v["irq_index"], "MSI");
        let names: Vec<(String, Option<u64>)> = v["sections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["name"].as_str().unwrap().to_string(), s["size"].as_u64()))
            .collect();
        let mut want_names = vec![("mmio_read".to_string(), None), ("mmio_write".into(), None)];
        for size in [4096, 65536, 2 << 20] {
            want_names.push(("dma_map".into(), Some(size)));
            want_names.push(("dma_unmap".into(), Some(size)));
        }
        for n in ["irq_enable", "irq_disable", "irq_trigger"] {
            want_names.push((n.into(), None));
        }
        assert_eq!(names, want_names, "{mode}");
        for s in v["sections"].as_array().unwrap() {
            if s["name"] == "mmio_write" {
                assert!(s["stats"].is_null());
                assert!(s["skipped"].as_str().unwrap().contains("--write"));
                continue;
            }
            assert!(s["error"].is_null(), "{s}");
            let st = &s["stats"];
            assert_eq!(st["count"], 20, "{s}");
            let (min, p50, p99, max) = (
                st["min"].as_u64().unwrap(),
                st["p50"].as_u64().unwrap(),
                st["p99"].as_u64().unwrap(),
                st["max"].as_u64().unwrap(),
            );
            assert!(min <= p50 && p50 <= p99 && p99 <= max, "{s}");
            let in_buckets: u64 = s["histogram"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["count"].as_u64().unwrap())
                .sum();
            assert_eq!(in_buckets, 20, "{s}");
        }
        // Everything was unmapped and closed.
        assert_eq!(h.kernel().dma_mappings(), 0);
        assert_eq!(h.kernel().open_fds(), 0);
    }
}

#[test]
fn bench_text_has_a_table_and_histograms() {
    let h = host("iommufd");
    let r = run(&h, &["bench", EDU, "--iterations", "10", "--sizes", "4K"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(r.out.starts_with("0000:00:04.0 through iommufd, 10 iterations"), "{}", r.out);
    assert!(r.out.contains("Register: BAR0+0x0, 32-bit, mmap'd\n"), "{}", r.out);
    for name in ["mmio_read", "dma_map", "dma_unmap", "irq_enable", "irq_disable", "irq_trigger"] {
        assert!(r.out.lines().any(|l| l.starts_with(name)), "{name} in {}", r.out);
        assert!(r.out.contains(&format!("\n{name}")), "{}", r.out);
    }
    assert!(r.out.contains("mmio_write") && r.out.contains("skipped: not asked for"), "{}", r.out);
    assert!(
        r.out.lines().filter(|l| l.contains(" |") && l.ends_with(char::is_numeric)).count() >= 6
    );
}

#[test]
fn bench_never_writes_the_bar_without_write() {
    let h = host("iommufd");
    fill_bar0(&h);
    let before = bar0(&h, 4096);
    for width in ["8", "16", "32", "64"] {
        let r = run(&h, &["bench", EDU, "--iterations", "5", "--offset", "0x8", "--width", width]);
        assert_eq!(r.code, 0, "{}", r.err);
    }
    assert_eq!(bar0(&h, 4096), before);
    assert_eq!(h.kernel().calls(KernelOp::RegionWrite), 1, "only fill_bar0 wrote");

    let r = run(
        &h,
        &["bench", EDU, "--iterations", "5", "--offset", "0x8", "--write", "0xdeadbeef", "--json"],
    );
    let v = json(&r);
    let w = v["sections"].as_array().unwrap().iter().find(|s| s["name"] == "mmio_write").unwrap();
    assert_eq!(w["stats"]["count"], 5);
    let after = bar0(&h, 4096);
    assert_eq!(after[8..12], 0xdeadbeefu32.to_le_bytes());
    assert_eq!(after[..8], before[..8]);
    assert_eq!(after[12..], before[12..]);
}

#[test]
fn bench_refuses_bad_registers_in_one_line() {
    let h = host("iommufd");
    for (args, want) in [
        (vec!["--offset", "0x100000"], "BAR0 is 1M (0x100000 bytes)"),
        (vec!["--offset", "0xffffe"], "must start at or below 0xffffc"),
        (vec!["--offset", "0x2"], "aligned to 4 bytes"),
        (vec!["--offset", "zz"], "invalid register offset \"zz\""),
        (vec!["--bar", "3"], "no BAR3"),
        (vec!["--bar", "9"], "BARs are numbered 0 to 5"),
        (vec!["--width", "24"], "use --width 8, 16, 32 or 64"),
        (vec!["--write", "0x1ff", "--width", "8"], "does not fit in 8 bits"),
        (vec!["--sizes", "3K"], "multiple of 4 KiB"),
        (vec!["--iterations", "0"], "--iterations 1 or more"),
    ] {
        let mut argv = vec!["bench", EDU];
        argv.extend(args.iter().copied());
        let r = run(&h, &argv);
        assert_eq!(r.code, 1, "{args:?}: {}", r.out);
        assert_eq!(r.err.lines().count(), 1, "{args:?}: {}", r.err);
        assert!(r.err.contains(want), "{args:?}: {}", r.err);
        assert!(r.out.is_empty(), "{args:?}: {}", r.out);
    }
    assert_eq!(h.kernel().calls(KernelOp::RegionWrite), 0);
    assert_eq!(h.kernel().calls(KernelOp::RegionRead), 0);
    let r = run(&h, &["bench", "0000:00:05.0"]);
    assert_eq!(r.code, 1);
    assert!(r.err.contains("bind it first"), "{}", r.err);
}

#[test]
fn bench_reports_a_failing_section_and_exits_nonzero() {
    let h = host("type1v2");
    h.inject(Fault::kernel(KernelOp::DeviceSetIrqs).errno(Errno::EINVAL).always());
    let r = run(&h, &["bench", EDU, "--iterations", "3", "--sizes", "4K"]);
    assert_eq!(r.code, 1, "{}", r.out);
    assert!(r.out.contains("irq_enable") && r.out.contains("failed: "), "{}", r.out);
    assert!(r.out.lines().any(|l| l.starts_with("dma_map")), "{}", r.out);
}

/// A captured tree (as `vfiotool snapshot` writes it: device nodes as empty files) with
/// the device on vfio-pci: nothing may reach the kernel, whose groups are another host's.
#[test]
fn a_captured_tree_never_reaches_the_kernel() {
    use std::os::unix::fs::symlink;
    use vfio_core::hostfs::RealFs;

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let dev = root.join("sys/bus/pci/devices").join(EDU);
    std::fs::create_dir_all(&dev).unwrap();
    let h = host("iommufd");
    let config = h.state().devices[&a(EDU)].config.clone();
    std::fs::write(dev.join("config"), &config[..256]).unwrap();
    std::fs::write(dev.join("rom"), rom_file()).unwrap();
    std::fs::create_dir_all(root.join("sys/bus/pci/drivers/vfio-pci")).unwrap();
    symlink("../../../bus/pci/drivers/vfio-pci", dev.join("driver")).unwrap();
    std::fs::create_dir_all(root.join("sys/kernel/iommu_groups/1/devices")).unwrap();
    symlink("../../../kernel/iommu_groups/1", dev.join("iommu_group")).unwrap();
    std::fs::create_dir_all(root.join("dev/vfio")).unwrap();
    for n in ["dev/vfio/vfio", "dev/vfio/1", "dev/iommu"] {
        std::fs::write(root.join(n), b"").unwrap();
    }

    let kernel = MockHost::new([]).kernel();
    let run_tree = |args: &[&str]| {
        let (out, err) = (Buf::default(), Buf::default());
        let mut ctx = Context {
            fs: Arc::new(RealFs::new(root)),
            kernel: kernel.clone(),
            out: Box::new(out.clone()),
            err: Box::new(err.clone()),
        };
        let mut argv = vec!["vfiotool"];
        argv.extend_from_slice(args);
        let code = vfiotool::run(Cli::try_parse_from(argv).unwrap(), &mut ctx);
        Run { code, out: out.text(), err: err.text() }
    };
    let r = run_tree(&["info", EDU]);
    assert_eq!(r.code, 0, "{}", r.err);
    let line = r.out.lines().find(|l| l.contains("VFIO:")).unwrap();
    assert!(line.contains("not opened") && line.contains("captured tree"), "{line}");
    let out = root.join("x.rom");
    let r = run_tree(&["rom", "dump", EDU, "-o", out.to_str().unwrap()]);
    assert!(r.out.contains("(read through sysfs)"), "{}{}", r.out, r.err);
    let r = run_tree(&["rom", "dump", EDU, "-o", out.to_str().unwrap(), "--source", "vfio"]);
    assert_eq!(r.code, 1);
    assert!(r.err.contains("not device nodes"), "{}", r.err);
    let r = run_tree(&["bench", EDU]);
    assert_eq!(r.code, 1);
    assert_eq!(r.err.lines().count(), 1, "{}", r.err);
    for op in [KernelOp::OpenContainer, KernelOp::OpenIommufd, KernelOp::OpenGroup] {
        assert_eq!(kernel.calls(op), 0, "{op:?}");
    }
}
