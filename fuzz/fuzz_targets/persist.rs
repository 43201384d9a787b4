//! Fuzzes the text of `persist`: cutting a configuration file around vfiotool's block,
//! merging a new block in or taking it out, and reading what a block holds. The input is
//! a file, optionally followed by a NUL and the lines of a new block.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfio_core::host::persist::{merge_block, split_block, Persisted, BEGIN, END};

fn is_marker(l: &str) -> bool {
    l.trim() == BEGIN || l.trim() == END
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (old, inner) = match text.split_once('\0') {
        Some((o, i)) => (o, Some(i)),
        None => (&*text, None),
    };

    // Whatever a block holds parses; what vfiotool renders from it parses back to the
    // same thing, with no line left over.
    let (mut p, _) = Persisted::parse(Some(old), Some(old), Some(old));
    p.normalize();
    let (mut q, foreign) = Persisted::parse(
        p.render_modprobe().as_deref(),
        p.render_modules().as_deref(),
        p.render_rules().as_deref(),
    );
    q.normalize();
    assert!(foreign.is_empty(), "{foreign:?}");
    assert_eq!(p, q);

    let Ok(split) = split_block(old) else {
        // A file whose markers do not pair up is never rewritten.
        assert!(merge_block(Some(old), inner).is_err());
        return;
    };
    // The cut keeps the file's ends.
    assert!(old.starts_with(split.before) && old.ends_with(split.after));
    assert!(split.before.len() + split.after.len() <= old.len());
    if split.block.is_none() {
        assert_eq!(split.before, old);
        assert_eq!(merge_block(Some(old), None).unwrap().as_deref(), Some(old));
    }
    let Some(inner) = inner else { return };
    let merged = match merge_block(Some(old), Some(inner)) {
        Ok(m) => m.expect("a file with a block exists"),
        Err(_) => {
            assert!(inner.lines().any(is_marker), "refused a block without markers");
            return;
        }
    };
    let again = split_block(&merged).expect("a merged file splits");
    // The block holds the new lines, with a final newline.
    let want = if inner.is_empty() || inner.ends_with('\n') {
        inner.to_string()
    } else {
        format!("{inner}\n")
    };
    assert_eq!(again.block, Some(want.as_str()));
    // Every byte outside the block is kept (a last line without a newline gets one).
    match split.block {
        Some(_) => assert_eq!((again.before, again.after), (split.before, split.after)),
        None => {
            assert!(again.before == old || again.before == format!("{old}\n"));
            assert_eq!(again.after, "");
        }
    }
    // The same block again changes nothing; taking it out leaves the outside alone.
    assert_eq!(merge_block(Some(&merged), Some(inner)).unwrap().as_deref(), Some(&*merged));
    let removed = merge_block(Some(&merged), None).unwrap();
    assert_eq!(removed.unwrap_or_default(), again.outside());
});
