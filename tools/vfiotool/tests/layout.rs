//! The layout rule of the command line: commands never import each other. A command
//! (`src/cmd/<name>.rs` or `src/cmd/<name>/`) may use its own submodules and what lives
//! outside `cmd` (`context`, `format`, `open`, the library), never another command: what
//! two commands share moves out of `cmd`.
//!
//! The check reads the sources: every path through `crate::cmd::` or `super::` (in `use`
//! declarations and in expressions, brace groups included) is resolved against the
//! module it appears in, and must not name another command.

use std::path::{Path, PathBuf};

/// Source text with comments removed and string and character literals emptied, so
/// that neither a doc comment naming a path nor a `{` in a format string counts.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &src[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            i += rest.find("*/").map_or(rest.len(), |e| e + 2);
        } else if let Some(hashes) = raw_string_start(rest) {
            let close = format!("\"{}", "#".repeat(hashes));
            let body = 2 + hashes;
            i += body + rest[body..].find(&close).map_or(rest.len() - body, |e| e + close.len());
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && (rest.get(2..3) == Some("'") || rest.starts_with("'\\")) {
            // A character literal ('{', '\n', '\u{7f}'); a lifetime has no closing quote.
            i += 1 + rest[1..].find('\'').map_or(0, |e| e + 1);
            if rest.starts_with("'\\") && rest[2..].starts_with('\'') {
                i += 1; // '\''
            }
            out.push_str("' '");
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// `Some(number of #)` when `s` starts a raw string (`r"`, `r#"`, ...).
fn raw_string_start(s: &str) -> Option<usize> {
    let t = s.strip_prefix('r')?;
    let hashes = t.len() - t.trim_start_matches('#').len();
    t[hashes..].starts_with('"').then_some(hashes)
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The paths that follow a `::` at the start of `s` (`a::b`, `{a, b::{c, d}}`, `*`), each
/// as its segments; a brace group gives one path per item.
fn paths_after(s: &str) -> Vec<Vec<String>> {
    let s = s.trim_start();
    if let Some(inner) = s.strip_prefix('{') {
        let mut depth = 0;
        let mut items = Vec::new();
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    items.push(&inner[start..i]);
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&inner[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        return items
            .into_iter()
            .filter(|it| !it.trim().is_empty())
            .flat_map(|it| path_from(it.trim_start()))
            .collect();
    }
    path_from(s)
}

/// The path starting at `s` (a segment, then `::` and more).
fn path_from(s: &str) -> Vec<Vec<String>> {
    let seg: String = if s.starts_with('*') {
        "*".into()
    } else {
        s.chars().take_while(|&c| is_ident(c)).collect()
    };
    if seg.is_empty() {
        return vec![Vec::new()];
    }
    let rest = s[seg.len()..].trim_start();
    match rest.strip_prefix("::") {
        Some(more) => paths_after(more)
            .into_iter()
            .map(|mut p| {
                p.insert(0, seg.clone());
                p
            })
            .collect(),
        None => vec![vec![seg]],
    }
}

/// The module path of a source file under `src/` (`cmd/bench/measure.rs` is
/// `["cmd", "bench", "measure"]`).
fn module_of(rel: &Path) -> Vec<String> {
    let mut m: Vec<String> =
        rel.with_extension("").iter().map(|c| c.to_string_lossy().into_owned()).collect();
    if m.last().is_some_and(|l| l == "mod") {
        m.pop();
    }
    m
}

/// The references of one file (its path under `src/`, its text) to commands other
/// than its own, as `crate::...` paths.
fn foreign_commands(rel: &Path, src: &str) -> Vec<String> {
    let file_module = module_of(rel);
    let Some(own) = file_module.get(1).cloned() else {
        return Vec::new(); // cmd/mod.rs: the list of commands itself.
    };
    let code = code_only(src);
    let mut found = Vec::new();
    // Inline modules (`mod tests { ... }`) open around their position.
    let mut stack: Vec<Option<String>> = Vec::new();
    let mut prev_ident = String::new();
    let mut last_word = String::new();
    let mut i = 0;
    while i < code.len() {
        let rest = &code[i..];
        let c = rest.chars().next().unwrap();
        let boundary = !code[..i].ends_with(is_ident) && !code[..i].ends_with("::");
        let keyword = ["crate", "super"]
            .into_iter()
            .any(|k| rest.starts_with(k) && !rest[k.len()..].starts_with(is_ident));
        if boundary && keyword {
            let mut module: Vec<String> = file_module.clone();
            module.extend(stack.iter().flatten().cloned());
            let mut t = rest;
            let mut base = if t.starts_with("crate") {
                t = &t["crate".len()..];
                Vec::new()
            } else {
                module
            };
            while let Some(r) = t.trim_start().strip_prefix("super") {
                if r.starts_with(is_ident) {
                    break;
                }
                base.pop();
                t = r;
                match t.trim_start().strip_prefix("::") {
                    Some(r2) if r2.trim_start().starts_with("super") => t = r2,
                    _ => break,
                }
            }
            let tails = match t.trim_start().strip_prefix("::") {
                Some(r) => paths_after(r),
                None => vec![Vec::new()],
            };
            for tail in tails {
                let mut full = base.clone();
                full.extend(tail);
                // `cmd` itself (`use crate::cmd;`, `{self}`) reaches every command.
                let names_other = match full.as_slice() {
                    [cmd] if cmd == "cmd" => true,
                    [cmd, x, ..] if cmd == "cmd" => x != &own,
                    _ => false,
                };
                if names_other {
                    found.push(format!("crate::{}", full.join("::")));
                }
            }
            i += "crate".len();
            continue;
        }
        match c {
            '{' => {
                stack.push((last_word == "mod").then(|| prev_ident.clone()));
                last_word.clear();
            }
            '}' => {
                stack.pop();
                last_word.clear();
            }
            c if is_ident(c) => {
                let w: String = rest.chars().take_while(|&c| is_ident(c)).collect();
                i += w.len();
                prev_ident = w.clone();
                if last_word != "mod" {
                    last_word = w;
                }
                continue;
            }
            c if c.is_whitespace() => {}
            _ => last_word.clear(),
        }
        i += c.len_utf8();
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn commands_never_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src.join("cmd"), &mut files);
    files.sort();
    assert!(files.len() > 13, "the command sources: {files:?}");
    let mut bad = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let text = std::fs::read_to_string(f).unwrap();
        for r in foreign_commands(rel, &text) {
            bad.push(format!("{}: {r}", rel.display()));
        }
    }
    assert!(
        bad.is_empty(),
        "commands import other commands (move what they share to context.rs, format.rs or \
         open.rs):\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_check_finds_imports_of_other_commands() {
    let check = |file: &str, src: &str| foreign_commands(Path::new(file), src);
    // Another command, by every spelling.
    assert_eq!(
        check("cmd/bench.rs", "use crate::cmd::info::human_size;"),
        ["crate::cmd::info::human_size"]
    );
    assert_eq!(check("cmd/rom.rs", "use crate::cmd::{info, rom::x};"), ["crate::cmd::info"]);
    assert_eq!(
        check("cmd/rom.rs", "fn f() { crate::cmd::info::open_live(a) }"),
        ["crate::cmd::info::open_live"]
    );
    assert_eq!(check("cmd/list.rs", "use super::info::collect;"), ["crate::cmd::info::collect"]);
    assert_eq!(check("cmd/list.rs", "use super::{info, list};"), ["crate::cmd::info"]);
    assert_eq!(check("cmd/list.rs", "use super::*;"), ["crate::cmd::*"]);
    assert_eq!(check("cmd/list.rs", "use crate::cmd;"), ["crate::cmd"]);
    assert_eq!(check("cmd/list.rs", "use crate::cmd::{self};"), ["crate::cmd::self"]);
    assert_eq!(
        check("cmd/bench/measure.rs", "use super::super::info::X;"),
        ["crate::cmd::info::X"]
    );
    assert_eq!(check("cmd/rom/mod.rs", "use super::info;"), ["crate::cmd::info"]);
    assert_eq!(
        check("cmd/info/render.rs", "use crate::{cmd::rom::x, format};"),
        ["crate::cmd::rom::x"]
    );
    // A command's own submodules, shared modules, tests and text are fine.
    for (file, src) in [
        ("cmd/bench/measure.rs", "use super::report::{Section, SCHEMA};\nuse super::BenchArgs;"),
        ("cmd/bench/mod.rs", "pub mod stats;\nuse self::stats::Stats;\nuse crate::cmd::bench::x;"),
        ("cmd/info/mod.rs", "use crate::context::{out, Context};\nuse crate::open::{self};"),
        ("cmd/list.rs", "#[cfg(test)]\nmod tests {\n    use super::*;\n    fn f() {}\n}"),
        ("cmd/list.rs", "/// See [`crate::cmd::info`].\nfn f() { \"crate::cmd::info\"; }"),
        ("cmd/list.rs", "fn f() { let c = '{'; let d = '}'; }\nmod m { use super::table; }"),
        ("cmd/list.rs", "fn f<'a>(x: &'a str) { format!(\"{{\"); }\nuse super::list::x;"),
        ("cmd/mod.rs", "pub mod info;\npub mod rom;"),
    ] {
        assert_eq!(check(file, src), Vec::<String>::new(), "{file}: {src}");
    }
}
