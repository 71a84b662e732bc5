//! `.dockerignore`: which files of the build context the build does not
//! see, as Docker matches them. One pattern a line; `#` starts a
//! comment; `!` re-includes what an earlier pattern excluded; the last
//! pattern that matches a path decides. `*` and `?` stay within one
//! path component, `**` spans any number of them, `[a-z]` is a class.
//! A pattern that matches a directory excludes everything in it.

/// The patterns of a `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    patterns: Vec<(bool, Vec<String>)>,
}

impl Ignore {
    /// Read the text of a `.dockerignore`.
    pub fn parse(text: &str) -> Ignore {
        let mut patterns = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negated, pattern) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let parts = clean(pattern);
            if !parts.is_empty() {
                patterns.push((negated, parts));
            }
        }
        Ignore { patterns }
    }

    /// Whether `path` (relative to the context, `/`-separated) is left
    /// out.
    pub fn excludes(&self, path: &str) -> bool {
        let path = clean(path);
        let mut excluded = false;
        for (negated, pattern) in &self.patterns {
            // The path itself, or a directory above it.
            let hit = (1..=path.len()).any(|n| matches(pattern, &path[..n]));
            if hit {
                excluded = !negated;
            }
        }
        excluded
    }
}

/// The components of `path`, as `filepath.Clean` leaves them: no empty
/// ones, no `.`, `..` taking one back, no leading `/`.
pub fn clean(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            part => out.push(part.to_owned()),
        }
    }
    out
}

/// Whether the components `pattern` match the components `path`.
pub fn matches(pattern: &[String], path: &[String]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| matches(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((name, others)) => {
                component(first.as_bytes(), name.as_bytes())
                    && matches(rest, others)
            }
            None => false,
        },
    }
}

/// Whether one component matches: `*`, `?`, `[class]`, `\x`. Linear
/// in practice: a mismatch goes back to the last `*` only (a pattern of
/// many stars cannot make it exponential).
fn component(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    // After the last `*`: where the pattern resumes, and the name
    // position it resumed at.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() {
            if pattern[p] == b'*' {
                star = Some((p + 1, n));
                p += 1;
                continue;
            }
            if let Some(len) = single(&pattern[p..], name[n]) {
                p += len;
                n += 1;
                continue;
            }
        }
        match star {
            Some((resume, at)) => {
                p = resume;
                n = at + 1;
                star = Some((resume, at + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|b| *b == b'*')
}

/// If the first element of `pattern` (`?`, `[class]`, `\x` or a byte)
/// matches `c`: its length in the pattern.
fn single(pattern: &[u8], c: u8) -> Option<usize> {
    match pattern.first()? {
        b'?' => Some(1),
        b'\\' if pattern.len() > 1 => (pattern[1] == c).then_some(2),
        b'[' => {
            let end = pattern.iter().position(|b| *b == b']')?;
            let (negated, class) = match pattern[1..end].split_first() {
                Some((b'^' | b'!', class)) => (true, class),
                _ => (false, &pattern[1..end]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            (hit != negated).then_some(end + 1)
        }
        b => (*b == c).then_some(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_dockers() {
        let ignore = Ignore::parse(
            "# comment\n*.log\n!keep.log\nbuild/\n**/tmp\nsecret?.txt\n/docs/[a-c]*\n",
        );
        for (path, excluded) in [
            ("app.log", true),
            ("keep.log", false),
            ("sub/app.log", false),
            ("build", true),
            ("build/out/x", true),
            ("tmp", true),
            ("a/b/tmp/file", true),
            ("secret1.txt", true),
            ("secret10.txt", false),
            ("docs/apple", true),
            ("docs/zebra", false),
            ("src/main.rs", false),
            ("./app.log", true),
        ] {
            assert_eq!(ignore.excludes(path), excluded, "{path}");
        }
    }

    #[test]
    fn many_stars_match_in_linear_time() {
        let pattern = format!("{}b", "*a".repeat(40));
        let ignore = Ignore::parse(&pattern);
        let name = "a".repeat(250);
        let start = std::time::Instant::now();
        assert!(!ignore.excludes(&name));
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        assert!(Ignore::parse("a*b*c").excludes("axxbyyc"));
        assert!(!Ignore::parse("a*b*c").excludes("axxbyy"));
    }

    #[test]
    fn the_last_pattern_wins() {
        let ignore = Ignore::parse("*\n!src\nsrc/*.tmp\n");
        assert!(ignore.excludes("README"));
        assert!(!ignore.excludes("src/lib.rs"));
        assert!(ignore.excludes("src/x.tmp"));
    }
}
