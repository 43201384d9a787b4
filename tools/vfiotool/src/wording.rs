//! The library's fixes in the command line's words.
//!
//! vfio-core names a fix in its own terms ("force the change", "a group bind of X",
//! `PersistRequest::per_device`), since a VMM or a daemon embeds it as well as this tool.
//! vfiotool prints the same fix as the option or command that does it. Each rule matches
//! one phrase the library writes; a test checks every phrase still occurs in vfio-core's
//! sources, so a reworded hint cannot silently lose its command-line form.

use std::sync::LazyLock;

use regex::Regex;

/// `(library phrase as a regex, command-line replacement)`, applied in order.
pub const RULES: &[(&str, &str)] = &[
    (
        r"stop that use first, or force the change to take it anyway",
        "stop that use first, or pass --force to take it anyway",
    ),
    (
        r"unbind them from vfio-pci first \(([^)]*)\), or force the change to remove them anyway",
        "unbind them first (vfiotool unbind $1), or pass --force to remove them anyway",
    ),
    (
        r"bind the whole group to vfio-pci \(a group bind of ([^)]*)\)",
        "bind the whole group: vfiotool bind --group $1",
    ),
    (
        r"bind them to vfio-pci first, or name them \(PersistRequest::devices\)",
        "bind them first (vfiotool bind ADDRESS) or name them: vfiotool persist ADDRESS...",
    ),
    (r"; bind ([0-9a-f]{4}:\S+) to vfio-pci first", "; bind it first: vfiotool bind $1"),
    (
        r"bind (\S+) first, then bind it\s+again for the user",
        "run 'vfiotool bind $1', then the same command with --user",
    ),
    (r"\(a bind for that user\)", "(vfiotool bind --user NAME)"),
    (r"restore every journaled device to finish", "run 'vfiotool restore --all' to finish"),
    (r"persist by address \(PersistRequest::per_device\) to claim", "use --per-device to claim"),
    (
        r"read_persisted gives the devices and VF counts persisted",
        "'vfiotool persist --list' shows the devices and VF counts it holds",
    ),
    (r"remove (\S+) from what is persisted", "run 'vfiotool persist --remove $1'"),
    (r"\(forced\)", "(--force)"),
    (
        r"^ls /sys/bus/pci/drivers/vfio-pci  \(should list ([^)]*)\)$",
        "vfiotool list $1  (the driver column should read vfio-pci)",
    ),
    (
        r"^cat /sys/bus/pci/devices/(\S+)/sriov_numvfs  \(should read (\d+)\)$",
        "vfiotool sriov $1  (should show $2 VFs enabled)",
    ),
    (r"keep_private keeps it", "--keep-private keeps it"),
    (r"\(the doctor checks say how\)", "(vfiotool doctor says how)"),
    (r"changing the host needs root", "changing the host needs root: run vfiotool with sudo"),
];

static COMPILED: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    RULES
        .iter()
        .map(|(p, r)| (Regex::new(p).expect("wording rules are valid regexes"), *r))
        .collect()
});

/// A library message or advice as the command line says it.
pub fn cli(text: &str) -> String {
    let mut s = text.to_string();
    for (re, with) in COMPILED.iter() {
        if re.is_match(&s) {
            s = re.replace_all(&s, *with).into_owned();
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_replace_library_fixes() {
        assert_eq!(
            cli("x is in use by the host: boot display; stop that use first, or force the change to take it anyway"),
            "x is in use by the host: boot display; stop that use first, or pass --force to take it anyway"
        );
        assert_eq!(
            cli("cat /sys/bus/pci/devices/0000:02:00.0/sriov_numvfs  (should read 3)"),
            "vfiotool sriov 0000:02:00.0  (should show 3 VFs enabled)"
        );
        // Text without a library phrase is left alone.
        assert_eq!(cli("edu 0000:00:04.0 (forcedeth)"), "edu 0000:00:04.0 (forcedeth)");
    }

    #[test]
    fn every_phrase_is_one_the_library_writes() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../vfio-core/src");
        let mut sources = String::new();
        let mut stack = vec![std::path::PathBuf::from(root)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().path()) {
                if e.is_dir() {
                    stack.push(e);
                } else if e.extension().is_some_and(|x| x == "rs") {
                    sources.push_str(&std::fs::read_to_string(&e).unwrap());
                }
            }
        }
        // Joined continuation lines ("...\<newline>   more") read as one line.
        let joined = Regex::new(r"\\\n\s*").unwrap().replace_all(&sources, "");
        // The literal parts of each rule (outside regex groups) appear in the sources.
        let literal = Regex::new(r"\([^)]*\)[*+?]?|\\.[*+?]?|[\^$]").unwrap();
        for (pattern, _) in RULES {
            for part in literal.split(pattern).map(str::trim).filter(|p| p.len() > 6) {
                assert!(joined.contains(part), "`{part}` (rule `{pattern}`) is not in vfio-core");
            }
        }
    }
}
