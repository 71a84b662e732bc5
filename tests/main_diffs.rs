//! The book shows each step's `main.rs` as a diff against the previous
//! step's. The diffs are snapshots, so a change to a `main.rs` fails this
//! test until the new diff is reviewed — and the chapter shows the new one.

use berth_tests::{snapshot_settings, workspace_root};
use similar::TextDiff;

/// Step directories, in order.
const STEPS: [&str; 8] = [
    "01-uts",
    "02-pid",
    "03-mount-chroot",
    "04-net",
    "05-user-ipc",
    "06-cgroups",
    "07-overlay",
    "08-oci-bundle",
];

/// What the chapter shows of a `main.rs`: its code, without the crate docs
/// (the chapter's prose says it) or the book's anchor markers.
fn code(text: &str) -> String {
    text.lines()
        .filter(|line| {
            let line = line.trim_start();
            !line.starts_with("//!") && !line.starts_with("// ANCHOR")
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

#[test]
fn main_rs_diffs_between_steps() {
    for pair in STEPS.windows(2) {
        let [before, after] = pair else {
            unreachable!("windows(2) yields pairs")
        };
        let path = |step: &str| format!("steps/{step}/src/main.rs");
        let read = |step: &str| {
            std::fs::read_to_string(workspace_root().join(path(step)))
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path(step)))
        };
        let (old, new) = (code(&read(before)), code(&read(after)));
        let diff = TextDiff::from_lines(&old, &new)
            .unified_diff()
            .context_radius(2)
            .header(&path(before), &path(after))
            .to_string();
        assert!(!diff.is_empty(), "{after} must change main.rs");
        let name = format!("main_diff_{}", &after[..2]);
        snapshot_settings().bind(|| insta::assert_snapshot!(name, diff));
    }
}
