//! Fuzzes the kernel command line as `doctor` reads it (`/proc/cmdline`) and as
//! `snapshot` redacts it: the facts found are parameters of the input, and redacting
//! keeps every parameter and every fact.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfio_core::host::doctor::parse_cmdline;
use vfio_core::host::redact;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let facts = parse_cmdline(&text);
    let args: Vec<&str> = text.split_whitespace().collect();
    // Every parameter a fact names is a parameter of the input.
    for a in facts.iommu_off.iter().chain(facts.acs_override.iter()) {
        assert!(args.contains(&a.as_str()), "{a:?}");
    }
    for a in &facts.iommu_off {
        assert!(matches!(a.as_str(), "intel_iommu=off" | "amd_iommu=off" | "iommu=off"));
    }
    assert_eq!(facts.passthrough, args.contains(&"iommu=pt"));
    assert!(facts.acs_override.as_deref().is_none_or(|a| a.starts_with("pcie_acs_override")));

    // Redacting: as many parameters, each changed only where an identifier was, the
    // same facts, and a second pass changes nothing.
    let r = redact::cmdline(&text);
    let rargs: Vec<&str> = r.split_whitespace().collect();
    assert_eq!(args.len(), rargs.len(), "{text:?} -> {r:?}");
    let mut rf = parse_cmdline(&r);
    assert_eq!(rf.iommu_asked, facts.iommu_asked);
    assert_eq!(rf.iommu_off, facts.iommu_off);
    assert_eq!(rf.passthrough, facts.passthrough);
    assert_eq!(rf.acs_override.is_some(), facts.acs_override.is_some());
    rf.acs_override = facts.acs_override.clone();
    assert_eq!(rf, facts);
    assert_eq!(redact::cmdline(&r), r);
    let places = text.matches('=').count() + text.matches('/').count();
    assert!(r.len() <= text.len() + places * redact::REDACTED.len());
});
