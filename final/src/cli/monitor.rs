//! `berth events` and `berth stats`: what the engine and its containers
//! are doing, printed as the docker CLI prints it.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::models::ContainerStatsResponse;
use bollard::query_parameters as q;
use futures_util::StreamExt;

use super::{Failure, format, print, short};

/// A time as the docker CLI takes it for `--since` and `--until`: a
/// duration before now (`10m`, `1h30m`, `500ms`), an RFC 3339 time, or
/// seconds since the epoch; as the API wants it (`SECONDS.NANOS`).
pub fn timestamp(text: &str) -> Result<String, Failure> {
    let bad = || {
        Failure::engine(format!(
            "invalid time {text:?}: expected a duration (10m), RFC 3339 or seconds since the epoch"
        ))
    };
    let is_number = |t: &str| {
        let (whole, fraction) = t.split_once('.').unwrap_or((t, "0"));
        !whole.is_empty()
            && whole.bytes().all(|b| b.is_ascii_digit())
            && fraction.bytes().all(|b| b.is_ascii_digit())
    };
    if is_number(text) {
        return Ok(text.to_owned());
    }
    let at = match duration(text) {
        Some(ago) => SystemTime::now().checked_sub(ago).ok_or_else(bad)?,
        None => crate::time::parse_rfc3339(text).ok_or_else(bad)?,
    };
    let since = at.duration_since(UNIX_EPOCH).map_err(|_| bad())?;
    Ok(format!("{}.{:09}", since.as_secs(), since.subsec_nanos()))
}

/// A Go duration (`1h30m`, `10m`, `2.5s`, `500ms`), or `None`.
fn duration(text: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .filter(|n| *n > 0)?;
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * seconds;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// `berth events`: the daemon's events, one line each as the docker CLI
/// prints them (`TIME TYPE ACTION ID (k=v, …)`), or their JSON with
/// `--format json`; until `until`, or for ever.
pub async fn events(
    docker: &Docker,
    since: Option<String>,
    until: Option<String>,
    filters: &[String],
    json: bool,
) -> Result<u8, Failure> {
    let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
    for filter in filters {
        let (key, value) = filter.split_once('=').ok_or_else(|| {
            Failure::engine(format!(
                "bad format of filter (expected name=value): {filter}"
            ))
        })?;
        by_key
            .entry(key.to_owned())
            .or_default()
            .push(value.to_owned());
    }
    let options = q::EventsOptions {
        since: since.as_deref().map(timestamp).transpose()?,
        until: until.as_deref().map(timestamp).transpose()?,
        filters: (!by_key.is_empty()).then_some(by_key),
    };
    let mut stream = docker.events(Some(options));
    while let Some(event) = stream.next().await {
        let event = event?;
        if json {
            let line = serde_json::to_string(&event)
                .map_err(|e| Failure::engine(format!("json: {e}")))?;
            print(&format!("{line}\n"));
            continue;
        }
        let nanos = event.time_nano.unwrap_or(0).max(0) as u64;
        let at = UNIX_EPOCH + Duration::from_nanos(nanos);
        let actor = event.actor.unwrap_or_default();
        let mut line = format!(
            "{} {} {} {}",
            crate::time::rfc3339(at),
            event.typ.map(|t| t.to_string()).unwrap_or_default(),
            event.action.unwrap_or_default(),
            actor.id.unwrap_or_default(),
        );
        let mut attributes: Vec<(String, String)> =
            actor.attributes.unwrap_or_default().into_iter().collect();
        attributes.sort();
        if !attributes.is_empty() {
            let pairs: Vec<String> =
                attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
            line.push_str(&format!(" ({})", pairs.join(", ")));
        }
        print(&format!("{line}\n"));
    }
    Ok(0)
}

/// `units.BytesSize`: binary units, four significant digits (`676KiB`,
/// `23.54GiB`).
fn binary_size(bytes: u64) -> String {
    format::significant(
        bytes as f64,
        4,
        1024.0,
        &["B", "KiB", "MiB", "GiB", "TiB", "PiB"],
    )
}

/// One row of the `stats` table from a sample, as the docker CLI
/// computes it.
fn row(stats: &ContainerStatsResponse) -> Vec<String> {
    let cpu = stats.cpu_stats.clone().unwrap_or_default();
    let pre = stats.precpu_stats.clone().unwrap_or_default();
    let total = |c: &bollard::models::ContainerCpuStats| {
        c.cpu_usage
            .as_ref()
            .and_then(|u| u.total_usage)
            .unwrap_or(0) as f64
    };
    let cpu_delta = total(&cpu) - total(&pre);
    let system_delta = cpu.system_cpu_usage.unwrap_or(0) as f64
        - pre.system_cpu_usage.unwrap_or(0) as f64;
    let cpus = f64::from(cpu.online_cpus.unwrap_or(1));
    let percent = if cpu_delta > 0.0 && system_delta > 0.0 {
        cpu_delta / system_delta * cpus * 100.0
    } else {
        0.0
    };
    let memory = stats.memory_stats.clone().unwrap_or_default();
    let counters = memory.stats.unwrap_or_default();
    let usage = memory.usage.unwrap_or(0);
    // The page cache the kernel reclaims first is not counted.
    let cache = counters
        .get("total_inactive_file")
        .or(counters.get("inactive_file"))
        .copied()
        .filter(|c| *c < usage)
        .unwrap_or(0);
    let used = usage - cache;
    let limit = memory.limit.unwrap_or(0);
    let memory_percent = if limit > 0 {
        used as f64 / limit as f64 * 100.0
    } else {
        0.0
    };
    let (rx, tx) =
        stats
            .networks
            .iter()
            .flatten()
            .fold((0, 0), |(rx, tx), (_, n)| {
                (rx + n.rx_bytes.unwrap_or(0), tx + n.tx_bytes.unwrap_or(0))
            });
    let (read, write) = stats
        .blkio_stats
        .as_ref()
        .and_then(|b| b.io_service_bytes_recursive.clone())
        .unwrap_or_default()
        .iter()
        .fold((0, 0), |(r, w), entry| {
            let value = entry.value.unwrap_or(0);
            match entry.op.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("read") => (r + value, w),
                Some("write") => (r, w + value),
                _ => (r, w),
            }
        });
    let name = stats.name.clone().unwrap_or_default();
    let pids = stats
        .pids_stats
        .as_ref()
        .and_then(|p| p.current)
        .unwrap_or(0);
    vec![
        short(&stats.id.clone().unwrap_or_default()),
        name.trim_start_matches('/').to_owned(),
        format!("{percent:.2}%"),
        format!("{} / {}", binary_size(used), binary_size(limit)),
        format!("{memory_percent:.2}%"),
        format!("{} / {}", format::size(rx as i64), format::size(tx as i64)),
        format!(
            "{} / {}",
            format::size(read as i64),
            format::size(write as i64)
        ),
        pids.to_string(),
    ]
}

/// `berth stats [--no-stream] [-a] [CONTAINER...]`: the table of what
/// each container uses; without `--no-stream`, again every second (the
/// screen cleared first on a terminal).
pub async fn stats(
    docker: &Docker,
    containers: Vec<String>,
    all: bool,
    no_stream: bool,
) -> Result<u8, Failure> {
    use std::io::IsTerminal;
    const HEADERS: [&str; 8] = [
        "CONTAINER ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "NET I/O",
        "BLOCK I/O",
        "PIDS",
    ];
    loop {
        let names = if containers.is_empty() {
            let options = q::ListContainersOptions {
                all,
                ..Default::default()
            };
            docker
                .list_containers(Some(options))
                .await?
                .into_iter()
                .filter_map(|c| c.id)
                .collect()
        } else {
            containers.clone()
        };
        let samples =
            futures_util::future::join_all(names.iter().map(|name| {
                let options = q::StatsOptions {
                    stream: false,
                    one_shot: false,
                };
                let mut stream = docker.stats(name, Some(options));
                async move { stream.next().await }
            }))
            .await;
        let mut rows = Vec::new();
        for sample in samples {
            match sample {
                Some(Ok(stats)) => rows.push(row(&stats)),
                // Gone meanwhile: left out, unless named.
                Some(Err(e)) if !containers.is_empty() => return Err(e.into()),
                _ => {}
            }
        }
        if !no_stream && std::io::stdout().is_terminal() {
            print("\x1b[2J\x1b[H");
        }
        print(&format::table(&HEADERS, &rows, 10));
        if no_stream {
            return Ok(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_the_docker_cli_reads_them() {
        assert_eq!(timestamp("1700000000").ok().unwrap(), "1700000000");
        assert_eq!(timestamp("1700000000.5").ok().unwrap(), "1700000000.5");
        assert_eq!(
            timestamp("2023-11-14T22:13:20Z").ok().unwrap(),
            "1700000000.000000000"
        );
        assert_eq!(duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(duration("10"), None);
        assert_eq!(duration("5x"), None);
        assert!(timestamp("soon").is_err());
        let ago: f64 = timestamp("10m").ok().unwrap().parse().unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert!((now.as_secs_f64() - ago - 600.0).abs() < 5.0);
    }

    #[test]
    fn binary_sizes_as_docker_prints_them() {
        assert_eq!(binary_size(692_224), "676KiB");
        assert_eq!(binary_size(25_275_465_728), "23.54GiB");
        assert_eq!(binary_size(0), "0B");
        assert_eq!(binary_size(1536), "1.5KiB");
    }
}
