//! `vfiotool info`, `rom check` and `rom dump` through `vfiotool::run`, on a sysfs tree
//! built in a temporary directory and served by `RealFs`.

use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use vfio_core::hostfs::{HostFs, NodeMeta, RealFs};

mod common;
use common::{run_fs, Run};

fn test_data(rel: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../vfio-core/tests/data").join(rel),
    )
    .unwrap()
}

const NVME: &str = "0000:01:00.0";
const AUDIO: &str = "0000:01:00.1";
const NIC: &str = "0000:02:00.0";

/// A sysfs tree: an NVMe controller with SR-IOV sharing IOMMU group 7 with an audio
/// function, and an e1000e NIC with its ROM and no IOMMU group.
fn build_tree(root: &Path, nvme_config: &[u8]) {
    let devs = root.join("sys/bus/pci/devices");
    let put = |dev: &str, name: &str, data: &[u8]| {
        let d = devs.join(dev);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), data).unwrap();
    };
    put(NVME, "config", nvme_config);
    let mut res = String::from("0x00000000fe800000 0x00000000fe803fff 0x0000000000140204\n");
    for _ in 0..6 {
        res += "0x0000000000000000 0x0000000000000000 0x0000000000000000\n";
    }
    put(NVME, "resource", res.as_bytes());
    put(NVME, "driver_override", b"(null)\n");
    put(NVME, "reset_method", b"flr bus\n");
    put(NVME, "sriov_totalvfs", b"4\n");
    put(NVME, "sriov_numvfs", b"0\n");
    symlink("../../../bus/pci/drivers/nvme", devs.join(NVME).join("driver")).unwrap();
    symlink("../../../kernel/iommu_groups/7", devs.join(NVME).join("iommu_group")).unwrap();
    put(AUDIO, "config", &test_data("config/qemu-ich9-hda.bin")[..256]);
    symlink("../../../bus/pci/drivers/snd_hda_intel", devs.join(AUDIO).join("driver")).unwrap();
    let g = root.join("sys/kernel/iommu_groups/7/devices");
    std::fs::create_dir_all(&g).unwrap();
    for d in [NVME, AUDIO] {
        symlink(format!("../../../../bus/pci/devices/{d}"), g.join(d)).unwrap();
    }
    put(NIC, "config", &test_data("config/qemu-e1000e.bin"));
    put(NIC, "rom", &test_data("rom/efi-e1000e.rom"));
    put(NIC, "driver_override", b"vfio-pci\n");
}

/// A `RealFs` that behaves like sysfs for `rom` files: reads fail with EINVAL until "1"
/// is written, writes of "1"/"0" switch the state instead of replacing the file, and
/// every ROM operation is logged. Optionally ROM reads fail with EIO.
#[derive(Debug)]
struct SysfsRom {
    inner: RealFs,
    enabled: Mutex<bool>,
    log: Mutex<Vec<String>>,
    fail_reads: bool,
}

impl SysfsRom {
    fn new(root: &Path, fail_reads: bool) -> Arc<Self> {
        Arc::new(SysfsRom {
            inner: RealFs::new(root),
            enabled: Mutex::new(false),
            log: Mutex::new(Vec::new()),
            fail_reads,
        })
    }
    fn is_rom(p: &Path) -> bool {
        p.file_name().is_some_and(|n| n == "rom")
    }
    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl HostFs for SysfsRom {
    fn read_limited(&self, path: &Path, max: usize) -> io::Result<Vec<u8>> {
        if Self::is_rom(path) {
            self.log.lock().unwrap().push("read".into());
            if !*self.enabled.lock().unwrap() {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
        }
        self.inner.read_limited(path, max)
    }
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if Self::is_rom(path) {
            self.log.lock().unwrap().push(format!("read_at {offset:#x}"));
            if !*self.enabled.lock().unwrap() {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            if self.fail_reads {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
        }
        self.inner.read_at(path, offset, buf)
    }
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        if Self::is_rom(path) {
            let s = String::from_utf8_lossy(data).trim().to_string();
            self.log.lock().unwrap().push(format!("write {s}"));
            *self.enabled.lock().unwrap() = s == "1";
            return Ok(());
        }
        self.inner.write(path, data)
    }
    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        self.inner.read_link(path)
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.read_dir(path)
    }
    fn metadata(&self, path: &Path) -> io::Result<NodeMeta> {
        self.inner.metadata(path)
    }
    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        self.inner.chown(path, uid, gid)
    }
    fn create_dir_all(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.inner.create_dir_all(path, mode)
    }
    fn replace_file(&self, path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
        self.inner.replace_file(path, data, mode)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn vfio_core::hostfs::HeldLock>> {
        self.inner.lock(path)
    }
    fn modprobe(&self, module: &str) -> io::Result<()> {
        self.inner.modprobe(module)
    }
}

fn run_with(fs: Arc<dyn HostFs>, args: &[&str]) -> Run {
    run_fs(fs, args)
}

fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path(), &test_data("config/qemu-nvme-sriov.bin"));
    dir
}

#[test]
fn info_default_output_fits_a_screen_and_shows_the_passthrough_facts() {
    let dir = tree();
    let r = run_with(Arc::new(RealFs::new(dir.path())), &["info", "01:00.0"]);
    assert_eq!(r.code, 0, "{}", r.err);
    let o = &r.out;
    for want in [
        "0000:01:00.0 class 010802: 1b36:0010 (rev 02)",
        "Driver: nvme",
        "IOMMU group: 7 shared with 0000:01:00.1 [snd_hda_intel]",
        "Reset: flr bus",
        "SR-IOV: 0 of 4 VFs enabled",
        "BAR0: 64-bit memory at 0xfe800000 [16K], non-prefetchable",
        "MSI-X 4 vector(s) (table BAR0+0x2000)",
        "PCIe: Endpoint, link 2.5GT/s x1 (max 2.5GT/s x1), FLR capable",
        "Capabilities: [40] MSI-X, [80] PCI Express, [60] Power Management",
        "Extended: [100] Alternative Routing-ID Interpretation, [120] SR-IOV",
    ] {
        assert!(o.contains(want), "missing {want:?} in:\n{o}");
    }
    assert!(!o.contains("driver_override"), "(null) is no override:\n{o}");
    assert!(o.lines().count() <= 24, "{} lines:\n{o}", o.lines().count());
}

#[test]
fn info_does_not_touch_the_rom_without_v_and_reads_it_with_v() {
    let dir = tree();
    let fs = SysfsRom::new(dir.path(), false);
    let r = run_with(fs.clone(), &["info", NIC]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(r.out.contains("ROM: present, not read (-v reads it"), "{}", r.out);
    assert!(r.out.contains("IOMMU group: none"), "{}", r.out);
    assert!(r.out.contains("Driver: none (driver_override: vfio-pci)"), "{}", r.out);
    assert!(fs.log().is_empty(), "{:?}", fs.log());
    let r = run_with(fs.clone(), &["info", "-v", NIC]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(r.out.contains("ROM: 244 KiB, 2 image(s) [legacy, EFI], UEFI capable"), "{}", r.out);
    assert!(r.out.contains("Capability [100 v2] Advanced Error Reporting"), "{}", r.out);
    assert!(r.out.contains("MSI: 1/1 vectors enabled/capable, 64-bit+"), "{}", r.out);
    let log = fs.log();
    assert_eq!(log.first().map(String::as_str), Some("write 1"));
    assert_eq!(log.last().map(String::as_str), Some("write 0"));
    let r = run_with(fs, &["info", "-vv", NIC]);
    assert!(r.out.contains("000: 86 80 d3 10"), "hex dump:\n{}", r.out);
}

#[test]
fn info_json_has_the_documented_schema() {
    let dir = tree();
    let r = run_with(Arc::new(RealFs::new(dir.path())), &["info", "--json", NVME]);
    assert_eq!(r.code, 0, "{}", r.err);
    let v: serde_json::Value = serde_json::from_str(&r.out).unwrap();
    assert_eq!(v["schema"], "vfiotool.info/1");
    assert_eq!(v["address"], NVME);
    assert!(v["vfio"].is_null());
    for k in ["vendor", "device", "subsystem", "class"] {
        assert!(v["names"][k].is_null(), "{k}");
    }
    assert_eq!(v["driver"], "nvme");
    assert!(v["driver_override"].is_null());
    assert_eq!(v["iommu_group"]["id"], 7);
    assert_eq!(v["iommu_group"]["others"][0]["address"], AUDIO);
    assert_eq!(v["iommu_group"]["others"][0]["driver"], "snd_hda_intel");
    assert_eq!(v["reset_methods"], serde_json::json!(["flr", "bus"]));
    assert_eq!(v["sriov"]["total_vfs"], 4);
    assert!(v["rom"].is_null());
    assert_eq!(v["config"]["vendor_id"], 0x1b36);
    assert_eq!(v["config"]["header"]["bars"][0]["size"], 16384);
    assert_eq!(v["config"]["capabilities"][0]["fields"]["kind"], "msix");
    assert_eq!(v["config"]["extended_capabilities"][1]["fields"]["kind"], "sriov");
}

#[test]
fn info_on_a_64_byte_config_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path(), &test_data("config/qemu-nvme-sriov.bin")[..64]);
    let r = run_with(Arc::new(RealFs::new(dir.path())), &["info", NVME]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(r.out.contains("Not decoded: capabilities: the image has only 64 bytes"), "{}", r.out);
    assert!(r.out.contains("run as root"), "{}", r.out);
}

#[test]
fn info_errors_are_one_line() {
    let dir = tree();
    let fs: Arc<dyn HostFs> = Arc::new(RealFs::new(dir.path()));
    let r = run_with(fs.clone(), &["info", "0000:09:00.0"]);
    assert_eq!(r.code, 1);
    assert!(r.err.contains("PCI device 0000:09:00.0 not found; see `vfiotool list`"), "{}", r.err);
    assert_eq!(r.err.lines().count(), 1);
    let r = run_with(fs, &["info", "zz:00"]);
    assert_eq!(r.code, 1);
    assert!(r.err.contains("invalid PCI address"), "{}", r.err);
}

fn write_file(dir: &Path, name: &str, data: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn rom_check_file_verdicts_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn HostFs> = Arc::new(RealFs::new(dir.path()));
    let good = write_file(dir.path(), "good.rom", &test_data("rom/efi-e1000e.rom"));
    let r = run_with(fs.clone(), &["rom", "check", &good]);
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    for want in [
        "Image 1 at 0x0: type 0 (x86 PC-AT (legacy BIOS)), 8086:10d3, class 020000",
        "Image 2 at 0x12600: type 3 (EFI), 8086:10d3",
        "EFI: signature valid, boot service driver (11), machine X64",
        "checksum: ok",
        "UEFI (OVMF):    yes",
        "valid:          yes",
    ] {
        assert!(r.out.contains(want), "missing {want:?}:\n{}", r.out);
    }
    let r = run_with(fs.clone(), &["rom", "check", &good, "--device", "10de:1b80"]);
    assert_eq!(r.code, 2);
    assert!(r.out.contains("ids match 10de:1b80: no (images are for 8086:10d3"), "{}", r.out);
    let r = run_with(fs.clone(), &["rom", "check", &good, "--device", "8086:10D3", "--json"]);
    assert_eq!(r.code, 0);
    let v: serde_json::Value = serde_json::from_str(&r.out).unwrap();
    assert_eq!(v["schema"], "vfiotool.rom-check/1");
    assert_eq!(v["report"]["verdicts"]["uefi_capable"], true);
    assert_eq!(v["report"]["images"][1]["efi"]["machine_name"], "X64");
    let legacy = write_file(dir.path(), "vga.bin", &test_data("rom/vgabios-bochs-display.bin"));
    let r = run_with(fs.clone(), &["rom", "check", &legacy]);
    assert_eq!(r.code, 0);
    assert!(r.out.contains("no EFI image: boot the VM with SeaBIOS"), "{}", r.out);
    let mut broken = test_data("rom/vgabios-bochs-display.bin");
    broken[0x200] ^= 0x40;
    let bad = write_file(dir.path(), "bad.bin", &broken);
    let r = run_with(fs.clone(), &["rom", "check", &bad]);
    assert_eq!(r.code, 2);
    assert!(r.out.contains("checksum: BAD") && r.out.contains("valid:          no"), "{}", r.out);
    let r = run_with(fs.clone(), &["rom", "check", "/nonexistent/x.rom"]);
    assert_eq!(r.code, 1);
    assert!(r.err.contains("open ROM file /nonexistent/x.rom"), "{}", r.err);
    let r = run_with(fs, &["rom", "check", &good, "--device", "8086"]);
    assert_eq!(r.code, 1);
    assert!(r.err.contains("expected VVVV:DDDD"), "{}", r.err);
}

#[test]
fn rom_check_address_compares_with_the_device_ids() {
    let dir = tree();
    let fs = SysfsRom::new(dir.path(), false);
    let r = run_with(fs.clone(), &["rom", "check", NIC]);
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert!(r.out.contains("ROM device 0000:02:00.0"), "{}", r.out);
    assert!(r.out.contains("ids match 8086:10d3: yes"), "{}", r.out);
    assert_eq!(fs.log().last().map(String::as_str), Some("write 0"));
    // The same ROM behind the NVMe controller: ids differ.
    std::fs::copy(
        dir.path().join(format!("sys/bus/pci/devices/{NIC}/rom")),
        dir.path().join(format!("sys/bus/pci/devices/{NVME}/rom")),
    )
    .unwrap();
    let r = run_with(fs, &["rom", "check", NVME]);
    assert_eq!(r.code, 2);
    assert!(r.out.contains("ids match 1b36:0010: no"), "{}", r.out);
    let r = run_with(Arc::new(RealFs::new(dir.path())), &["rom", "check", AUDIO]);
    assert_eq!(r.code, 1);
    assert!(r.err.contains("no expansion ROM BAR"), "{}", r.err);
}

#[test]
fn rom_dump_enables_reads_and_disables() {
    let dir = tree();
    let fs = SysfsRom::new(dir.path(), false);
    let out = dir.path().join("dump.rom");
    let o = out.to_str().unwrap();
    let r = run_with(fs.clone(), &["rom", "dump", NIC, "-o", o, "--dry-run"]);
    assert_eq!(r.code, 0);
    assert!(fs.log().is_empty());
    assert!(!out.exists());
    assert!(r.out.contains("write \"1\" to /sys/bus/pci/devices/0000:02:00.0/rom"), "{}", r.out);
    let r = run_with(fs.clone(), &["rom", "dump", NIC, "-o", o]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(std::fs::read(&out).unwrap(), test_data("rom/efi-e1000e.rom"));
    assert!(r.out.contains("Wrote 249856 bytes"), "{}", r.out);
    assert!(r.out.contains("UEFI capable"), "{}", r.out);
    let log = fs.log();
    assert_eq!(log[0], "write 1");
    assert!(log[1..log.len() - 1].iter().all(|l| l.starts_with("read_at")), "{log:?}");
    assert!(log.len() > 4, "read in chunks: {log:?}");
    assert_eq!(log.last().unwrap(), "write 0");
}

#[test]
fn rom_dump_disables_the_rom_even_when_the_read_fails() {
    let dir = tree();
    let fs = SysfsRom::new(dir.path(), true);
    let out = dir.path().join("dump.rom");
    let r = run_with(fs.clone(), &["rom", "dump", NIC, "-o", out.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.err.contains("read ROM") && r.err.contains("hidden or shadowed"), "{}", r.err);
    assert_eq!(fs.log(), ["write 1", "read_at 0x0", "write 0"]);
    assert!(!out.exists());
}

#[test]
fn rom_dump_explains_a_blank_rom() {
    let dir = tree();
    std::fs::write(dir.path().join(format!("sys/bus/pci/devices/{NIC}/rom")), vec![0xffu8; 65536])
        .unwrap();
    let fs = SysfsRom::new(dir.path(), false);
    let out = dir.path().join("dump.rom");
    let r = run_with(fs.clone(), &["rom", "dump", NIC, "-o", out.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.err.contains("reads all 0xFF") && r.err.contains("another slot"), "{}", r.err);
    assert!(!out.exists());
    assert_eq!(fs.log().last().unwrap(), "write 0");
    std::fs::write(dir.path().join(format!("sys/bus/pci/devices/{NIC}/rom")), b"").unwrap();
    let r = run_with(fs, &["rom", "dump", NIC, "-o", out.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.err.contains("reads empty (0 bytes)"), "{}", r.err);
}
