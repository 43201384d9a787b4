//! Fuzzes sysfs attribute parsing: the `resource` file, and the bind journal read back
//! from `/run/vfiotool/journal.json` and acted on by `restore` on a simulated host.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfio_core::host::journal::{read_journal, JOURNAL};
use vfio_core::host::restore::restore;
use vfio_core::hostfs::HostFs;
use vfio_core::mock::{DeviceSpec, MockHost};
use vfio_core::pci::config::{parse_sysfs_resource, DecodeOptions};

fuzz_target!(|data: &[u8]| {
    let (kind, rest) = match data.split_first() {
        Some((k, r)) => (*k, r),
        None => return,
    };
    if kind & 1 == 0 {
        let text = String::from_utf8_lossy(rest);
        if let Ok(lines) = parse_sysfs_resource(&text) {
            assert!(lines.len() <= text.lines().count());
            let _ = DecodeOptions::from_resource(&lines);
        }
    } else {
        let host = MockHost::new([DeviceSpec::edu("0000:00:04.0").driver("vfio-pci")]);
        let fs = host.fs();
        fs.create_dir_all(std::path::Path::new("/run/vfiotool"), 0o700).unwrap();
        fs.replace_file(std::path::Path::new(JOURNAL), rest, 0o600).unwrap();
        if read_journal(&*fs).is_ok() {
            let _ = restore(&*fs, None);
        } else {
            // A journal that does not parse is refused by restore as well, untouched.
            assert!(restore(&*fs, None).is_err());
            assert_eq!(fs.read(std::path::Path::new(JOURNAL)).unwrap(), rest);
        }
    }
});
