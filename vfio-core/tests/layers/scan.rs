//! Reading the crate's sources as text: modules from file paths, comments, literals and
//! test-only items blanked, `use` trees expanded, paths resolved through re-exports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::is_within;

/// One source file: its module path (`""` for the crate root) and its text.
pub struct Source {
    pub file: String,
    pub module: String,
    pub text: String,
}

/// A reference from one module to another, where it is written.
#[derive(Debug, Clone)]
pub struct Edge {
    pub file: String,
    pub line: usize,
    pub from: String,
    pub to: String,
    pub path: String,
}

/// The crate's sources, from `src/`.
pub fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
                let text = std::fs::read_to_string(&path).unwrap();
                out.push(Source { file: format!("src/{rel}"), module: module_of(&rel), text });
            }
        }
    }
    out.sort_by(|a, b| a.file.cmp(&b.file));
    out
}

/// The module path of a file under `src/`: `lib.rs` is `""`, `a/mod.rs` and `a.rs` are
/// `a`, `a/b.rs` is `a::b`.
pub fn module_of(rel: &str) -> String {
    let rel = rel.strip_suffix(".rs").unwrap();
    let rel = rel.strip_suffix("/mod").unwrap_or(rel);
    if rel == "lib" {
        return String::new();
    }
    rel.replace('/', "::")
}

pub fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}::{child}")
    }
}

/// The text with comments, string and char literals blanked (newlines kept, so line
/// numbers stay right).
pub fn strip(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |p| i + p);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                let mut j = i;
                while j < b.len() {
                    if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
                        depth += 1;
                        j += 2;
                    } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
                        depth -= 1;
                        j += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        j += 1;
                    }
                }
                blank(&mut out, i, j);
                i = j;
            }
            b'r' if (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
                && (i == 0 || !is_ident(b[i - 1])) =>
            {
                // A raw string: r"..." or r#"..."#.
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close: Vec<u8> =
                    std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
                let body = i + 2 + hashes;
                let end = b[body..]
                    .windows(close.len())
                    .position(|w| w == close.as_slice())
                    .map_or(b.len(), |p| body + p + close.len());
                blank(&mut out, i, end);
                i = end;
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                let end = (j + 1).min(b.len());
                blank(&mut out, i, end);
                i = end;
            }
            b'\'' => {
                // A char literal ('x', '\n', '\u{..}'), not a lifetime ('a).
                let width = match b.get(i + 1) {
                    Some(c) if *c >= 0xf0 => 4,
                    Some(c) if *c >= 0xe0 => 3,
                    Some(c) if *c >= 0xc0 => 2,
                    _ => 1,
                };
                let end = if b.get(i + 1) == Some(&b'\\') {
                    b.get(i + 3..)
                        .and_then(|r| r.iter().position(|&c| c == b'\''))
                        .map(|p| i + 3 + p + 1)
                } else if b.get(i + 1 + width) == Some(&b'\'') {
                    Some(i + 2 + width)
                } else {
                    None
                };
                match end {
                    Some(end) => {
                        blank(&mut out, i, end);
                        i = end;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    String::from_utf8(out).unwrap()
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Whether a `#[cfg(...)]` attribute's content turns its item on only in tests.
fn is_test_cfg(content: &str) -> bool {
    let words: Vec<&str> = content
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    words.contains(&"test") && !content.replace(' ', "").contains("not(test")
}

/// Blanks the items under a test-only `#[cfg]`, and returns the names of the file
/// modules declared under one (`#[cfg(test)] mod tests;`).
fn drop_test_items(text: &mut String) -> Vec<String> {
    let mut test_mods = Vec::new();
    let mut b = text.as_bytes().to_vec();
    let mut from = 0;
    while let Some(p) = find(&b, b"#[cfg(", from) {
        let open = p + 1;
        let close = matching(&b, open, b'[', b']').unwrap_or(b.len() - 1);
        let content = String::from_utf8_lossy(&b[p + 6..close]).to_string();
        from = close + 1;
        if !is_test_cfg(&content) {
            continue;
        }
        // The item runs to its first `;` or its first `{ ... }` block.
        let mut j = close + 1;
        let end = loop {
            match b.get(j) {
                None => break b.len(),
                Some(b';') => break j + 1,
                Some(b'{') => break matching(&b, j, b'{', b'}').map_or(b.len(), |e| e + 1),
                _ => j += 1,
            }
        };
        let item = String::from_utf8_lossy(&b[close + 1..end]).to_string();
        let words: Vec<&str> = item.split_whitespace().collect();
        if let Some(pos) = words.iter().position(|w| *w == "mod") {
            if let Some(name) = words.get(pos + 1) {
                if let Some(name) = name.strip_suffix(';') {
                    test_mods.push(name.to_string());
                }
            }
        }
        for c in &mut b[p..end] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
        from = end;
    }
    *text = String::from_utf8(b).unwrap();
    test_mods
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| from + p)
}

/// The index of the bracket closing the one at `open`.
fn matching(b: &[u8], open: usize, o: u8, c: u8) -> Option<usize> {
    let mut depth = 0usize;
    for (i, &ch) in b.iter().enumerate().skip(open) {
        if ch == o {
            depth += 1;
        } else if ch == c {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}

fn line_of(text: &str, pos: usize) -> usize {
    text[..pos].bytes().filter(|&c| c == b'\n').count() + 1
}

/// Expands a use tree (`a::{b, c::{d, e}}`) into its paths, each as segments.
fn expand_use(tree: &str) -> Vec<Vec<String>> {
    fn go(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
        let tree = tree.trim();
        if tree.is_empty() {
            return;
        }
        if let Some(open) = tree.find('{') {
            let head: Vec<String> = tree[..open]
                .split("::")
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            let close = matching(tree.as_bytes(), open, b'{', b'}').unwrap_or(tree.len() - 1);
            let inner = &tree[open + 1..close];
            let mut depth = 0;
            let mut start = 0;
            let mut prefix2 = prefix.to_vec();
            prefix2.extend(head);
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        go(&prefix2, &inner[start..i], out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            go(&prefix2, &inner[start..], out);
        } else {
            let path = tree.split(" as ").next().unwrap();
            let mut segs = prefix.to_vec();
            segs.extend(path.split("::").map(|s| s.trim().to_string()).filter(|s| !s.is_empty()));
            out.push(segs);
        }
    }
    let mut out = Vec::new();
    go(&[], tree, &mut out);
    out
}

/// A `use` declaration: where it starts and ends, whether it is `pub`, and its paths.
struct Use {
    start: usize,
    end: usize,
    is_pub: bool,
    paths: Vec<Vec<String>>,
}

/// The `use` declarations of a stripped text.
fn uses(text: &str) -> Vec<Use> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(p) = find(b, b"use ", from) {
        from = p + 4;
        if p > 0 && is_ident(b[p - 1]) {
            continue;
        }
        // Only at the start of an item: after `;`, `{`, `}`, `]` or a visibility.
        let before = text[..p].trim_end();
        let is_pub = before.ends_with("pub")
            || before.ends_with("pub(crate)")
            || before.ends_with("pub(super)");
        let at_item = is_pub
            || before.is_empty()
            || before.ends_with(';')
            || before.ends_with('{')
            || before.ends_with('}')
            || before.ends_with(']');
        if !at_item {
            continue;
        }
        let Some(end) = find(b, b";", p) else { break };
        out.push(Use { start: p, end, is_pub, paths: expand_use(&text[p + 4..end]) });
        from = end;
    }
    out
}

/// The paths starting with `crate::`, `super::` or `self::` outside `use` declarations:
/// (position, segments).
fn code_paths(text: &str) -> Vec<(usize, Vec<String>)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let at_word = i == 0 || !(is_ident(b[i - 1]) || b[i - 1] == b'$' || b[i - 1] == b':');
        let start =
            ["crate::", "super::", "self::"].iter().find(|k| b[i..].starts_with(k.as_bytes()));
        if let (true, Some(_)) = (at_word, start) {
            let mut j = i;
            let mut segs = Vec::new();
            loop {
                let s = j;
                while j < b.len() && is_ident(b[j]) {
                    j += 1;
                }
                if s == j {
                    break;
                }
                segs.push(text[s..j].to_string());
                if b[j..].starts_with(b"::") && b.get(j + 2).is_some_and(|&c| is_ident(c)) {
                    j += 2;
                } else {
                    break;
                }
            }
            out.push((i, segs));
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// What the checker knows of the crate: its modules, and the names each re-exports.
pub struct Crate {
    pub modules: BTreeSet<String>,
    /// module -> name -> absolute path (segments after `crate`).
    reexports: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

impl Crate {
    /// Absolute segments (after `crate`) of a path written in `module`, or `None` for a
    /// path that leaves the crate.
    fn absolute(&self, module: &str, segs: &[String]) -> Option<Vec<String>> {
        let mut base: Vec<String> =
            if module.is_empty() { vec![] } else { module.split("::").map(String::from).collect() };
        let mut rest = segs;
        match rest.first().map(String::as_str) {
            Some("crate") => {
                base.clear();
                rest = &rest[1..];
            }
            Some("self") => rest = &rest[1..],
            Some("super") => {
                while rest.first().map(String::as_str) == Some("super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
            }
            // A child module named without a prefix (`use caps::X` in `pci`).
            Some(first) if self.modules.contains(&join(module, first)) => {}
            _ => return None,
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    /// The module that defines what `abs` names: its longest module prefix, through
    /// the re-exports of that module.
    fn resolve(&self, abs: &[String]) -> String {
        let mut abs = abs.to_vec();
        for _ in 0..8 {
            let mut n = abs.len();
            while n > 0 && !self.modules.contains(&abs[..n].join("::")) {
                n -= 1;
            }
            let module = abs[..n].join("::");
            let Some(name) = abs.get(n) else { return module };
            match self.reexports.get(&module).and_then(|r| r.get(name)) {
                Some(target) if target.as_slice() != &abs[..=n] => {
                    let mut next = target.clone();
                    next.extend(abs[n + 1..].iter().cloned());
                    abs = next;
                }
                _ => return module,
            }
        }
        abs.join("::")
    }
}

/// The cleaned sources (comments, literals and test-only items removed) and the crate's
/// module list, without the test-only modules.
pub fn prepare(raw: Vec<Source>) -> (Vec<Source>, Crate) {
    let mut test_only = BTreeSet::new();
    let mut cleaned = Vec::new();
    for s in raw {
        let mut text = strip(&s.text);
        for name in drop_test_items(&mut text) {
            test_only.insert(join(&s.module, &name));
        }
        cleaned.push(Source { text, ..s });
    }
    cleaned.retain(|s| !test_only.iter().any(|t| is_within(&s.module, t)));
    let modules: BTreeSet<String> = cleaned.iter().map(|s| s.module.clone()).collect();
    let mut krate = Crate { modules, reexports: BTreeMap::new() };
    let mut reexports: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for s in &cleaned {
        for u in uses(&s.text).into_iter().filter(|u| u.is_pub) {
            for segs in u.paths {
                let Some(last) = segs.last() else { continue };
                if last == "*" || last == "self" {
                    continue;
                }
                if let Some(abs) = krate.absolute(&s.module, &segs) {
                    reexports.entry(s.module.clone()).or_default().insert(last.clone(), abs);
                }
            }
        }
    }
    krate.reexports = reexports;
    (cleaned, krate)
}

/// Every reference from one module of the crate to another.
pub fn edges(sources: &[Source], krate: &Crate) -> Vec<Edge> {
    let mut out = Vec::new();
    for s in sources {
        // The paths of the use declarations, then those of the code without them.
        let mut code = s.text.as_bytes().to_vec();
        let mut refs: Vec<(usize, Vec<String>)> = Vec::new();
        for u in uses(&s.text) {
            refs.extend(u.paths.into_iter().map(|segs| (u.start, segs)));
            code[u.start..u.end].fill(b' ');
        }
        refs.extend(code_paths(&String::from_utf8(code).unwrap()));
        for (p, segs) in refs {
            let Some(abs) = krate.absolute(&s.module, &segs) else { continue };
            let to = krate.resolve(&abs);
            if to.is_empty() || to == s.module {
                continue;
            }
            out.push(Edge {
                file: s.file.clone(),
                line: line_of(&s.text, p),
                from: s.module.clone(),
                to,
                path: segs.join("::"),
            });
        }
    }
    out
}

/// The variant names of `pub enum NAME` in a stripped text, in order.
pub fn variants(text: &str, name: &str) -> Option<Vec<(String, usize)>> {
    let b = text.as_bytes();
    let head = format!("pub enum {name} ");
    let p = find(b, head.as_bytes(), 0)?;
    let open = p + find(&b[p..], b"{", 0)?;
    let close = matching(b, open, b'{', b'}')?;
    let mut out = Vec::new();
    let mut depth = 0;
    let mut i = open + 1;
    let mut expect_name = true;
    while i < close {
        match b[i] {
            b'{' | b'(' | b'[' => depth += 1,
            b'}' | b')' | b']' => depth -= 1,
            b',' if depth == 0 => expect_name = true,
            b'#' if depth == 0 => {}
            c if depth == 0 && expect_name && c.is_ascii_alphabetic() => {
                let s = i;
                while i < close && is_ident(b[i]) {
                    i += 1;
                }
                out.push((text[s..i].to_string(), line_of(text, s)));
                expect_name = false;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Some(out)
}

/// The enums of `text` whose doc comment says their variants are sorted.
pub fn claimed_sorted(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut doc = String::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(d) = t.strip_prefix("///") {
            doc.push_str(d);
            doc.push(' ');
            continue;
        }
        if t.starts_with("#[") {
            continue;
        }
        if let Some(rest) = t.strip_prefix("pub enum ") {
            let lower = doc.to_lowercase();
            if lower.contains("variants are sorted") || lower.contains("sorted by name") {
                let name = rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).next();
                out.push(name.unwrap_or_default().to_string());
            }
        }
        doc.clear();
    }
    out
}
