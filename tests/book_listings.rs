//! What the book renders from the source must read well on a page: every
//! line of a code listing or diagram fits in 80 columns, and no
//! `// ANCHOR` marker or `//!` doc prefix is ever shown.
//!
//! This resolves each `{{#include path:anchor}}` the way mdBook does
//! (an anchor, a line range `a:b`, or the whole file) and checks the lines
//! it would insert, plus every line of the fenced blocks written in the
//! chapters themselves. Snapshot includes are program output, shown as the
//! program printed it, so only their markers are checked.

use berth_tests::workspace_root;
use std::fs;
use std::path::Path;

/// The widest line a listing may have.
const COLUMNS: usize = 80;

/// The lines mdBook inserts for `spec` (what follows the path's `:`).
fn included(file: &Path, spec: Option<&str>) -> Vec<String> {
    let text = fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    let lines: Vec<&str> = text.lines().collect();
    let Some(spec) = spec else {
        return lines.iter().map(|l| l.to_string()).collect();
    };
    let number = |s: &str, default: usize| {
        if s.is_empty() {
            default
        } else {
            s.parse::<usize>().expect("a line number")
        }
    };
    let first = spec.split(':').next().unwrap_or_default();
    if first.is_empty() || first.chars().all(|c| c.is_ascii_digit()) {
        // A line range: `a`, `a:`, `:b`, `a:b` (1-based, inclusive).
        let (start, end) = match spec.split_once(':') {
            Some((a, b)) => (number(a, 1), number(b, lines.len())),
            None => (number(spec, 1), number(spec, 1)),
        };
        let end = end.min(lines.len());
        return lines[start.saturating_sub(1)..end]
            .iter()
            .map(|l| l.to_string())
            .collect();
    }
    // An anchor: the lines between its markers, minus nested markers.
    let marker = |line: &str, kind: &str| {
        line.split_once(kind).is_some_and(|(_, rest)| {
            rest.trim_start_matches(':').trim() == spec
        })
    };
    let mut inside = false;
    let mut found = false;
    let mut out = Vec::new();
    for line in lines {
        if marker(line, "ANCHOR_END") {
            inside = false;
        } else if marker(line, "ANCHOR") {
            inside = true;
            found = true;
        } else if inside && !line.contains("ANCHOR") {
            out.push(line.to_string());
        }
    }
    assert!(found, "{}: no anchor {spec:?}", file.display());
    out
}

#[test]
fn listings_fit_80_columns_and_show_no_markers() {
    let book = workspace_root().join("book/src");
    let mut problems = Vec::new();
    let mut chapters: Vec<_> = fs::read_dir(&book)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    chapters.sort();
    for chapter in chapters {
        let name = chapter.file_name().unwrap().to_string_lossy().to_string();
        let text = fs::read_to_string(&chapter).unwrap();
        let mut fenced = false;
        for (number, line) in text.lines().enumerate() {
            let at = format!("{name}:{}", number + 1);
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                continue;
            }
            if let Some(start) = line.find("{{#include ") {
                let inner = &line[start + "{{#include ".len()..];
                let inner =
                    &inner[..inner.find("}}").expect("a closed include")];
                let (path, spec) = match inner.split_once(':') {
                    Some((path, spec)) => (path, Some(spec)),
                    None => (inner, None),
                };
                let file = book.join(path);
                let output = path.ends_with(".snap");
                for shown in included(&file, spec) {
                    if shown.contains("ANCHOR") {
                        problems.push(format!("{at}: shows a marker: {shown}"));
                    }
                    if shown.trim_start().starts_with("//!") {
                        problems
                            .push(format!("{at}: shows a //! line: {shown}"));
                    }
                    let width = shown.chars().count();
                    if !output && width > COLUMNS {
                        problems.push(format!(
                            "{at}: {path}:{} has a {width}-column line: {}",
                            spec.unwrap_or(""),
                            shown.trim()
                        ));
                    }
                }
            } else if fenced && line.chars().count() > COLUMNS {
                problems.push(format!(
                    "{at}: a {}-column line: {}",
                    line.chars().count(),
                    line.trim()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems in the book's listings:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
