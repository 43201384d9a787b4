//! Fuzzes the bind journal's parser (`Journal::parse`, what `restore` reads from
//! `/run/vfiotool/journal.json`): whatever parses passes the journal's own checks and
//! reads back, written out again, as the same journal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfio_core::host::journal::Journal;

fuzz_target!(|data: &[u8]| {
    if let Ok(j) = Journal::parse(data) {
        assert!(j.check().is_ok());
        let bytes = j.to_bytes();
        let again = Journal::parse(&bytes).expect("a written journal parses");
        assert_eq!(again, j);
        assert_eq!(again.to_bytes(), bytes);
        for e in &j.devices {
            assert!(e.pci_address().is_ok());
            assert_eq!(j.entry(e.pci_address().unwrap()).map(|x| &x.address), Some(&e.address));
        }
        for n in &j.nodes {
            assert!(n.path.starts_with("/dev/vfio/") && n.group().is_some());
        }
    }
});
