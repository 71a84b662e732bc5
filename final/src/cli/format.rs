//! docker's output formats, for `berth`'s: tables with columns three
//! spaces apart (Go's tabwriter as the docker CLI sets it up), sizes in
//! decimal units with three significant digits, times as "… ago".

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Rows under `headers`, each column as wide as its widest cell plus
/// three spaces, and at least `min` (the last one not padded): Go's
/// tabwriter as the docker CLI configures it (`min` 10 for `ps` and
/// `images`, 20 for `top`).
pub fn table(headers: &[&str], rows: &[Vec<String>], min: usize) -> String {
    let mut widths: Vec<usize> =
        headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let pad = (widths[i] + 3).max(min) - cell.chars().count();
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `units.HumanSizeWithPrecision(size, 3)`: `4.26MB`, `12.3kB`, `999B`.
pub fn size(bytes: i64) -> String {
    significant(
        bytes.max(0) as f64,
        3,
        1000.0,
        &["B", "kB", "MB", "GB", "TB", "PB"],
    )
}

/// `value` in the largest of `units` (each `base` times the one before)
/// that keeps it at least 1, with `digits` significant digits and no
/// trailing zeros: Go's `%.Ng` as docker's `units` package uses it.
pub fn significant(
    value: f64,
    digits: usize,
    base: f64,
    units: &[&str],
) -> String {
    let mut value = value.max(0.0);
    let mut unit = 0;
    while value >= base && unit + 1 < units.len() {
        value /= base;
        unit += 1;
    }
    let whole = if value < 1.0 {
        1
    } else {
        value.log10().floor() as usize + 1
    };
    let decimals = digits.saturating_sub(whole);
    let mut text = format!("{value:.decimals$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_owned();
    }
    format!("{text}{}", units.get(unit).copied().unwrap_or(""))
}

/// How long ago `seconds` since the epoch was: `5 seconds ago`.
pub fn ago(seconds: i64) -> String {
    let then = UNIX_EPOCH + Duration::from_secs(seconds.max(0) as u64);
    let elapsed = SystemTime::now().duration_since(then).unwrap_or_default();
    format!("{} ago", crate::daemon::http::human_duration(elapsed))
}

/// `docker ps`'s COMMAND: quoted, cut to 20 characters with `…`.
pub fn command(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() > 20 {
        format!("\"{}…\"", chars[..19].iter().collect::<String>())
    } else {
        format!("\"{text}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_docker_prints_them() {
        assert_eq!(size(999), "999B");
        assert_eq!(size(1500), "1.5kB");
        assert_eq!(size(4_262_912), "4.26MB");
        assert_eq!(size(42_629_120), "42.6MB");
        assert_eq!(size(1_000_000), "1MB");
    }

    #[test]
    fn tables_pad_to_the_widest_cell() {
        let rows = vec![
            vec!["a".to_owned(), "bb".to_owned()],
            vec!["ccc".to_owned(), "d".to_owned()],
        ];
        assert_eq!(
            table(&["X", "Y"], &rows, 0),
            "X     Y\na     bb\nccc   d\n"
        );
        assert_eq!(
            table(&["X", "Y"], &rows, 10),
            "X         Y\na         bb\nccc       d\n"
        );
    }

    #[test]
    fn commands_are_quoted_and_cut() {
        assert_eq!(command("sleep 1000"), "\"sleep 1000\"");
        assert_eq!(
            command("sh -c 'echo hello world'"),
            "\"sh -c 'echo hello w…\""
        );
    }
}
