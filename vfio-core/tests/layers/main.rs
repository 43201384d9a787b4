//! The crate's layers are a strict order, and the error enum is kept sorted.
//!
//! Bottom to top: the pure decoders, the seams (kernel and host filesystem), the VFIO
//! objects, DMA and what builds on it, the host layer. The mock sits beside the objects:
//! it implements both seams and may use them and the decoders, nothing above. A module
//! may use modules of its own layer and step, or below; never above.
//!
//! The check reads `src/**/*.rs` as text: it takes the `crate::`, `super::` and
//! `self::` paths of `use` declarations and of code, leaving out comments, string
//! literals and `#[cfg(test)]` items (test modules may use the mock), follows `pub use`
//! re-exports to the module that defines a name, and reports each edge to a higher
//! layer with its file and line. The second check reads the enums whose documentation
//! says their variants are sorted, `error::Error` first among them.

mod scan;

use std::collections::BTreeSet;
use std::fmt;

use scan::{claimed_sorted, edges, module_of, prepare, sources, strip, variants, Source};

/// The layers, bottom to top. The mock is outside the order: see [`allowed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    Decoders,
    Seams,
    Objects,
    DmaAndAbove,
    Host,
    Mock,
}

/// Where each module sits: its layer and its step inside the layer (a module may use
/// modules of a lower or equal step of its own layer). The longest matching prefix
/// wins; every module of the crate must match one entry.
const LAYERS: &[(&str, Layer, u8)] = &[
    // Pure decoders over bytes. Inside `pci`: the error, the address, the config-space
    // view and sysfs `resource`, then the capability chains, then the full decode, then
    // the module's re-exports.
    ("bytes", Layer::Decoders, 0),
    ("info", Layer::Decoders, 0),
    ("iova", Layer::Decoders, 0),
    ("rom", Layer::Decoders, 0),
    ("pci::error", Layer::Decoders, 0),
    ("pci::address", Layer::Decoders, 0),
    ("pci::space", Layer::Decoders, 0),
    ("pci::resource", Layer::Decoders, 0),
    ("pci::header", Layer::Decoders, 0),
    ("pci::vpd", Layer::Decoders, 0),
    ("pci::caps", Layer::Decoders, 1),
    ("pci::config", Layer::Decoders, 2),
    ("pci", Layer::Decoders, 3),
    // The seams: the kernel interface, the error type (which names kernel operations),
    // the host filesystem (whose device view returns errors).
    ("kernel", Layer::Seams, 0),
    ("error", Layer::Seams, 1),
    ("hostfs", Layer::Seams, 2),
    // VFIO objects: what the map calls share, then the kernel objects.
    ("dma_perm", Layer::Objects, 0),
    ("container", Layer::Objects, 1),
    ("group", Layer::Objects, 1),
    ("iommufd", Layer::Objects, 1),
    ("device", Layer::Objects, 1),
    ("region", Layer::Objects, 1),
    ("irq", Layer::Objects, 1),
    ("reset", Layer::Objects, 1),
    ("feature", Layer::Objects, 1),
    // DMA on top of the objects, then the opener, fd passing and KVM.
    ("dma", Layer::DmaAndAbove, 0),
    ("fds", Layer::DmaAndAbove, 1),
    ("vfio", Layer::DmaAndAbove, 1),
    ("kvm", Layer::DmaAndAbove, 1),
    ("host", Layer::Host, 0),
    ("mock", Layer::Mock, 0),
];

/// A module's place in the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    layer: Layer,
    step: u8,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} layer, step {}", self.layer, self.step)
    }
}

fn place(module: &str) -> Option<Place> {
    LAYERS
        .iter()
        .filter(|(prefix, ..)| is_within(module, prefix))
        .max_by_key(|(prefix, ..)| prefix.len())
        .map(|&(_, layer, step)| Place { layer, step })
}

/// Whether `module` is `prefix` or inside it.
fn is_within(module: &str, prefix: &str) -> bool {
    module == prefix || (module.starts_with(prefix) && module[prefix.len()..].starts_with("::"))
}

/// Whether a module at `from` may use one at `to`.
fn allowed(from: Place, to: Place) -> bool {
    match (from.layer, to.layer) {
        (Layer::Mock, Layer::Mock) => true,
        (Layer::Mock, t) => t <= Layer::Seams,
        (_, Layer::Mock) => false,
        (f, t) => (t, to.step) <= (f, from.step),
    }
}

/// The layer violations among `sources`, one line each.
fn violations(raw: Vec<Source>) -> Vec<String> {
    let (sources, krate) = prepare(raw);
    let mut out = Vec::new();
    for m in &krate.modules {
        if !m.is_empty() && place(m).is_none() {
            out.push(format!("module {m} has no layer: add it to LAYERS in tests/layers/main.rs"));
        }
    }
    let mut seen = BTreeSet::new();
    for e in edges(&sources, &krate) {
        if e.from.is_empty() {
            continue; // the crate root declares and re-exports every module
        }
        let (Some(from), Some(to)) = (place(&e.from), place(&e.to)) else { continue };
        if allowed(from, to) {
            continue;
        }
        if seen.insert((e.file.clone(), e.line, e.to.clone())) {
            out.push(format!(
                "{}:{}: {} ({from}) uses {} ({to}) through `{}`: a module may use only its own \
                 layer or those below",
                e.file, e.line, e.from, e.to, e.path
            ));
        }
    }
    out
}

#[test]
fn modules_use_only_their_layer_and_below() {
    let bad = violations(sources());
    assert!(bad.is_empty(), "upward imports:\n{}", bad.join("\n"));
}

/// Sources for the checker's own tests.
fn fake(files: &[(&str, &str)]) -> Vec<Source> {
    files
        .iter()
        .map(|(rel, text)| Source {
            file: format!("src/{rel}"),
            module: module_of(rel),
            text: text.to_string(),
        })
        .collect()
}

#[test]
fn the_layer_check_finds_upward_imports() {
    let files = [
        ("lib.rs", "pub mod pci;\npub mod kernel;\npub mod error;\npub use error::Error;\n"),
        ("pci/mod.rs", "mod address;\npub mod caps;\npub mod config;\n"),
        // An upward edge in a use tree, one in code, one through a root re-export.
        ("pci/address.rs", "use crate::{kernel::Errno};\nfn f() { crate::error::g(); }\n"),
        ("pci/caps.rs", "// use crate::pci::config::X; in a comment\nuse super::config::X;\n"),
        ("pci/config.rs", "use super::caps::Y;\nfn e() -> crate::Error { todo!() }\n"),
        ("kernel/mod.rs", "pub struct Errno;\n#[cfg(test)]\nmod tests { use crate::mock::M; }\n"),
        ("error.rs", "use crate::kernel::Errno;\nconst S: &str = \"crate::mock::X\";\n"),
    ];
    let bad = violations(fake(&files));
    let text = bad.join("\n");
    assert!(text.contains("src/pci/address.rs:1: pci::address"), "{text}");
    assert!(text.contains("uses kernel (Seams layer, step 0)"), "{text}");
    assert!(text.contains("src/pci/address.rs:2: pci::address"), "{text}");
    assert!(text.contains("src/pci/caps.rs:2: pci::caps"), "{text}");
    assert!(
        text.contains("src/pci/config.rs:2: pci::config (Decoders layer, step 2) uses error"),
        "{text}"
    );
    assert_eq!(bad.len(), 4, "{text}");
}

#[test]
fn the_layer_check_holds_the_mock_to_the_seams() {
    let files = [
        ("lib.rs", "pub mod mock;\npub mod host;\npub mod device;\npub mod kernel;\n"),
        ("mock/mod.rs", "mod sysfs;\nuse crate::kernel::VfioKernel;\nuse crate::device::Device;\n"),
        ("mock/sysfs.rs", "fn f() { crate::host::mdev::is_uuid(\"\"); }\n"),
        ("host/mod.rs", "pub mod mdev;\nuse crate::mock::MockHost;\n"),
        ("host/mdev.rs", "pub fn is_uuid(_: &str) -> bool { true }\n"),
        ("device.rs", ""),
        ("kernel/mod.rs", ""),
    ];
    let bad = violations(fake(&files));
    let text = bad.join("\n");
    assert!(text.contains("src/mock/mod.rs:3: mock (Mock layer, step 0) uses device"), "{text}");
    assert!(text.contains("src/host/mod.rs:2: host (Host layer, step 0) uses mock"), "{text}");
    assert!(
        text.contains("src/mock/sysfs.rs:1: mock::sysfs (Mock layer, step 0) uses host::mdev"),
        "{text}"
    );
    assert_eq!(bad.len(), 3, "{text}");
}

/// Enums claimed sorted that are not, one message each.
fn unsorted(raw: &[Source]) -> Vec<String> {
    let mut out = Vec::new();
    for s in raw {
        let text = strip(&s.text);
        for name in claimed_sorted(&s.text) {
            let vs = variants(&text, &name).unwrap_or_default();
            for w in vs.windows(2) {
                if w[0].0 > w[1].0 {
                    let mut sorted: Vec<&str> = vs.iter().map(|v| v.0.as_str()).collect();
                    sorted.sort();
                    out.push(format!(
                        "{}:{}: {name}::{} comes after {name}::{}, but {name}'s variants are \
                         sorted by name: {}",
                        s.file,
                        w[1].1,
                        w[1].0,
                        w[0].0,
                        sorted.join(", ")
                    ));
                    break;
                }
            }
        }
    }
    out
}

#[test]
fn error_variants_are_sorted() {
    let raw = sources();
    let error = raw.iter().find(|s| s.file == "src/error.rs").expect("src/error.rs");
    assert!(
        claimed_sorted(&error.text).contains(&"Error".to_string()),
        "error.rs should say the variants of Error are sorted by name"
    );
    let names = variants(&strip(&error.text), "Error").expect("pub enum Error in error.rs");
    assert!(names.len() > 5, "found only {names:?} in Error");
    let bad = unsorted(&raw);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn the_sort_check_finds_a_variant_out_of_place() {
    let text = "/// What went wrong. Variants are sorted by name.\n#[derive(Debug)]\npub enum \
                Error {\n    /// a\n    #[error(\"x, y\")]\n    Bind { a: u8, b: (u8, u8) },\n    \
                Another(u8),\n    Zed,\n}\n";
    let bad = unsorted(&fake(&[("error.rs", text)]));
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0].starts_with("src/error.rs:7: Error::Another comes after Error::Bind"),
        "{bad:?}"
    );
    let fixed = text.replace("Bind", "Alpha");
    assert!(unsorted(&fake(&[("error.rs", &fixed)])).is_empty());
}
