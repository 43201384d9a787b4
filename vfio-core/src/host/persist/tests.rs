//! Unit tests of persist on the simulated host and of its pure text functions.
use super::*;
use crate::host::bind::{bind, BindRequest};
use crate::mock::{DeviceSpec, MockHost, SysState};

fn a(s: &str) -> PciAddress {
    PciAddress::parse(s).unwrap()
}

const USER: &str = "# my settings\noptions kvm ignore_msrs=1\n\nblacklist nouveau\n";

#[test]
fn a_block_is_appended_replaced_and_removed_keeping_every_other_byte() {
    // No file: the block alone; no block and nothing to write: no file.
    assert_eq!(merge_block(None, Some("x\n")).unwrap().unwrap(), format!("{BEGIN}\nx\n{END}\n"));
    assert_eq!(merge_block(None, None).unwrap(), None);
    // A file without a block gets it appended.
    let one = merge_block(Some(USER), Some("a\n")).unwrap().unwrap();
    assert_eq!(one, format!("{USER}{BEGIN}\na\n{END}\n"));
    // The block is replaced in place, what surrounds it untouched.
    let mut around = one.clone();
    around.push_str("options kvm_intel nested=1"); // no final newline
    let two = merge_block(Some(&around), Some("b\nc")).unwrap().unwrap();
    assert_eq!(two, format!("{USER}{BEGIN}\nb\nc\n{END}\noptions kvm_intel nested=1"));
    let s = split_block(&two).unwrap();
    assert_eq!((s.before, s.block, s.after), (USER, Some("b\nc\n"), "options kvm_intel nested=1"));
    // Same block again: same bytes.
    assert_eq!(merge_block(Some(&two), Some("b\nc\n")).unwrap().unwrap(), two);
    // Removing the block gives back the user's bytes.
    assert_eq!(
        merge_block(Some(&two), None).unwrap().unwrap(),
        format!("{USER}options kvm_intel nested=1")
    );
    // A file that held only the block goes; one without a block stays as it is.
    assert_eq!(merge_block(Some(&format!("{BEGIN}\nx\n{END}\n")), None).unwrap(), None);
    assert_eq!(merge_block(Some(USER), None).unwrap().as_deref(), Some(USER));
    // A last line without a newline is closed before the block.
    assert_eq!(
        merge_block(Some("options kvm ignore_msrs=1"), Some("a\n")).unwrap().unwrap(),
        format!("options kvm ignore_msrs=1\n{BEGIN}\na\n{END}\n")
    );
    // Markers with surrounding blanks and CRLF endings are markers.
    let crlf = format!("u\r\n  {BEGIN} \r\nold\r\n{END}\r\nv\r\n");
    let s = split_block(&crlf).unwrap();
    assert_eq!((s.before, s.block, s.after), ("u\r\n", Some("old\r\n"), "v\r\n"));
}

#[test]
fn unpaired_or_repeated_markers_are_refused() {
    let cases = [
        (format!("a\n{BEGIN}\nb\n"), 2, "no END"),
        (format!("{END}\n{BEGIN}\n{END}\n"), 1, "no BEGIN"),
        (format!("{BEGIN}\n{BEGIN}\n{END}\n"), 2, "inside the block"),
        (format!("{BEGIN}\n{END}\n{BEGIN}\n{END}\n"), 3, "second vfiotool block"),
        (format!("{BEGIN}\n{END}\n{END}\n"), 3, "no BEGIN"),
    ];
    for (text, line, what) in cases {
        let e = split_block(&text).unwrap_err();
        assert_eq!(e.line, line, "{text:?}: {e}");
        assert!(e.to_string().contains(what), "{text:?}: {e}");
        assert!(merge_block(Some(&text), Some("x\n")).is_err());
    }
    // A new block may not carry a marker.
    assert!(merge_block(None, Some(&format!("x\n{END}\n"))).is_err());
}

fn sample() -> Persisted {
    let mut p = Persisted {
        by_id: vec![
            IdDevice {
                address: a("0000:05:00.1"),
                vendor: 0x10de,
                device: 0x10f0,
                native: Some("snd_hda_intel".into()),
                display: false,
            },
            IdDevice {
                address: a("0000:05:00.0"),
                vendor: 0x10de,
                device: 0x1b80,
                native: Some("nouveau".into()),
                display: true,
            },
        ],
        by_address: vec![a("0000:04:00.0")],
        numvfs: vec![(a("0000:02:00.0"), 2)],
    };
    p.normalize();
    p
}

#[test]
fn blocks_render_and_parse_back() {
    let p = sample();
    let modprobe = p.render_modprobe().unwrap();
    assert_eq!(
        modprobe,
        format!(
            "{MODPROBE_HEADER}\n\
             # device 0000:05:00.0 10de:1b80 nouveau display\n\
             # device 0000:05:00.1 10de:10f0 snd_hda_intel\n\
             options vfio-pci ids=10de:10f0,10de:1b80 disable_vga=1\n\
             softdep nouveau pre: vfio-pci\n\
             softdep snd_hda_intel pre: vfio-pci\n"
        )
    );
    let rules = p.render_rules().unwrap();
    assert!(rules.contains(
        "ACTION==\"add\", SUBSYSTEM==\"pci\", KERNEL==\"0000:04:00.0\", ATTR{driver_override}=\"vfio-pci\""
    ));
    assert!(rules.contains(
        "ACTION==\"add|bind\", SUBSYSTEM==\"pci\", KERNEL==\"0000:02:00.0\", ATTR{sriov_numvfs}=\"2\"\n"
    ));
    let modules = p.render_modules().unwrap();
    assert!(modules.ends_with("vfio\nvfio_iommu_type1\nvfio_pci\n"));
    let (back, foreign) = Persisted::parse(Some(&modprobe), Some(&modules), Some(&rules));
    assert_eq!(back, p);
    assert!(foreign.is_empty(), "{foreign:?}");
    // Nothing persisted: no blocks.
    let none = Persisted::default();
    assert_eq!(
        (none.render_modprobe(), none.render_modules(), none.render_rules()),
        (None, None, None)
    );
    // Only VF counts: the rules, without the modules.
    let vfs = Persisted { numvfs: vec![(a("02:00.0"), 3)], ..Default::default() };
    assert!(vfs.render_modules().is_none() && vfs.render_rules().is_some());
}

#[test]
fn lines_vfiotool_did_not_write_are_reported() {
    let p = sample();
    let mut modprobe = p.render_modprobe().unwrap();
    modprobe += "options kvm ignore_msrs=1\n";
    // An ids= line edited by hand no longer follows from the devices.
    let edited = modprobe.replace("ids=10de:10f0,10de:1b80", "ids=10de:10f0");
    let rules = p.render_rules().unwrap().replace("\"2\"", "\"two\"");
    let (back, foreign) = Persisted::parse(Some(&edited), Some("vfio\nkvm\n"), Some(&rules));
    assert_eq!(back.by_id, p.by_id);
    assert!(back.numvfs.is_empty());
    let lines: Vec<&str> = foreign.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(lines.len(), 4, "{foreign:?}");
    assert!(lines.contains(&"options kvm ignore_msrs=1"));
    assert!(lines.contains(&"options vfio-pci ids=10de:10f0 disable_vga=1"));
    assert!(lines.contains(&"kvm"));
    assert!(lines.iter().any(|l| l.contains("\"two\"")));
    // A device line with a driver that is not a module name is not vfiotool's.
    let (back, foreign) =
        Persisted::parse(Some("# device 0000:01:00.0 1234:5678 a/b\n"), None, None);
    assert!(back.by_id.is_empty() && foreign.len() == 1);
}

#[test]
fn vf_counts_parse_with_clear_errors() {
    assert_eq!(parse_numvfs("0000:02:00.0=4").unwrap(), (a("0000:02:00.0"), 4));
    assert_eq!(parse_numvfs("02:00.0=7").unwrap(), (a("0000:02:00.0"), 7));
    for (bad, says) in [
        ("02:00.0", "write PF=N"),
        ("02:00.0:4", "write PF=N"),
        ("nic=4", "not a PCI address"),
        ("02:00.0=four", "not a count"),
        ("02:00.0=-1", "not a count"),
        ("02:00.0=70000", "not a count"),
    ] {
        let e = parse_numvfs(bad).unwrap_err().to_string();
        assert!(e.contains(says) && !e.contains('\n'), "{bad}: {e}");
    }
}

#[test]
fn options_softdeps_and_shared_ids() {
    let mut vga = DeviceSpec::new("0000:05:00.0").driver("nouveau").group(7);
    vga.vendor = 0x10de;
    vga.device = 0x1b80;
    vga.class = 0x030000;
    let h = MockHost::new([
        vga,
        DeviceSpec::edu("0000:00:04.0").driver("edu").group(1),
        DeviceSpec::edu("0000:00:05.0").driver("edu").group(2),
    ])
    .with_sys(|s| *s = SysState::intel_ready());
    let fs = h.fs();
    assert!(plan_persist(&*fs, &PersistRequest::default()).is_err());
    bind(&*fs, &BindRequest::vfio("0000:00:04.0")).unwrap();
    bind(&*fs, &BindRequest::vfio("0000:05:00.0")).unwrap();
    let p = plan_persist(&*fs, &PersistRequest::default()).unwrap();
    assert_eq!(p.ids, vec!["10de:1b80", "1234:11e8"]);
    assert_eq!(p.softdeps, vec!["edu", "nouveau"]);
    assert_eq!(p.also_claimed, vec![a("00:05.0")]);
    let conf = p.files.iter().find(|f| f.path == Path::new(MODPROBE_CONF)).unwrap();
    let text = conf.new.as_deref().unwrap();
    assert!(text.contains("options vfio-pci ids=10de:1b80,1234:11e8 disable_vga=1\n"), "{text}");
    assert!(text.contains("softdep nouveau pre: vfio-pci\n"));
    assert_eq!(p.after[0], "update-initramfs -u -k all");
    persist(&*fs, &PersistRequest::default()).unwrap();
    assert_eq!(fs.read(Path::new(MODPROBE_CONF)).unwrap(), text.as_bytes());
    assert!(fs.read_string(Path::new(MODULES_CONF)).unwrap().contains("vfio_pci"));
    // What the files hold reads back; the same request again changes nothing.
    let st = read_persisted(&*fs).unwrap();
    assert_eq!(st.persisted, p.persisted);
    let again = plan_persist(&*fs, &PersistRequest::default()).unwrap();
    assert!(again.files.is_empty() && again.after.is_empty(), "{again:?}");
}
