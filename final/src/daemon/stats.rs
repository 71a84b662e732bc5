//! `GET /containers/ID/stats`: what a container uses, in Docker's shape,
//! from step 6's accounting of its cgroup (the runtime made it at
//! `/berth/ID`, whichever runtime it was) and the counters of its
//! network namespace.
//!
//! CPU use is a ratio, so a sample carries the one before it
//! (`precpu_stats`): with `stream`, one sample a second, each with its
//! predecessor; without, the second of two samples a second apart (as
//! dockerd answers `docker stats --no-stream`); with `one-shot`, one
//! sample and no predecessor.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde_json::{Value, json};

use super::containers::{Engine, Error, Record, blocking};
use crate::cgroup::{self, Cgroup, CgroupPath, Layout};

/// Time between two samples.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// One reading of a container's counters.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// When (RFC 3339), `0001-01-01T00:00:00Z` for none.
    pub read: String,
    /// The cgroup's accounting.
    pub cgroup: cgroup::Stats,
    /// The whole machine's CPU time, in nanoseconds (`/proc/stat`).
    pub system_nanos: u64,
    /// CPUs online.
    pub cpus: u64,
    /// Per interface but loopback: bytes and packets received and sent.
    pub networks: Vec<(String, [u64; 4])>,
    /// The host's memory, in bytes: the limit of a container without one.
    pub host_memory: u64,
    /// Whether the cgroups are v1 (the names of memory counters differ).
    pub v1: bool,
}

/// The machine's total memory, from `/proc/meminfo`.
pub fn host_memory() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .map_or(0, |kb: u64| kb.saturating_mul(1024))
}

/// The machine's CPU time in nanoseconds and its online CPUs, from
/// `/proc/stat` (the first line's ticks; one `cpuN` line per CPU).
fn system_cpu() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let ticks = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .unwrap_or(100)
        .max(1);
    let mut total = 0;
    let mut cpus = 0;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        match fields.next() {
            Some("cpu") => {
                // user nice system idle iowait irq softirq (steal): the
                // guest fields are already counted in user and nice.
                total = fields
                    .take(8)
                    .filter_map(|f| f.parse::<u64>().ok())
                    .sum::<u64>();
            }
            Some(name) if name.starts_with("cpu") => cpus += 1,
            _ => {}
        }
    }
    (total.saturating_mul(1_000_000_000 / ticks), cpus.max(1))
}

/// `/proc/PID/net/dev` of the container's first process: its network
/// namespace's counters (none for a process gone, or loopback only).
pub fn networks(pid: i64) -> Vec<(String, [u64; 4])> {
    let path = format!("/proc/{pid}/net/dev");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    parse_net_dev(&text)
}

/// The interfaces of a `/proc/net/dev` text but `lo`: rx bytes, rx
/// packets, tx bytes, tx packets.
fn parse_net_dev(text: &str) -> Vec<(String, [u64; 4])> {
    let mut out = Vec::new();
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let n: Vec<u64> = counters
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        if n.len() >= 10 {
            out.push((name.to_owned(), [n[0], n[1], n[8], n[9]]));
        }
    }
    out
}

/// Read container `record`'s counters now.
pub fn sample(record: &Record) -> Result<Sample, Error> {
    let layout = crate::oci::full_layout()
        .map_err(|e| Error::Internal(format!("cgroups: {e}")))?;
    let path = CgroupPath::parse_field(&format!("berth/{}", record.id), "id")
        .map_err(|e| Error::Internal(e.to_string()))?;
    let stats = Cgroup::open(&layout, &path).stats();
    let (system_nanos, cpus) = system_cpu();
    Ok(Sample {
        read: crate::time::rfc3339(SystemTime::now()),
        cgroup: stats,
        system_nanos,
        cpus,
        networks: networks(record.state.pid),
        host_memory: host_memory(),
        v1: matches!(layout, Layout::Legacy { .. }),
    })
}

/// Docker's stats JSON of `now` after `before` (`None`: no CPU ratio).
pub fn to_json(
    record: &Record,
    now: &Sample,
    before: Option<&Sample>,
) -> Value {
    let cpu = |s: &Sample| {
        json!({
            "cpu_usage": {
                "total_usage": s.cgroup.cpu_usec.saturating_mul(1000),
                "usage_in_kernelmode": 0,
                "usage_in_usermode": 0,
            },
            "system_cpu_usage": s.system_nanos,
            "online_cpus": s.cpus,
            "throttling_data": {
                "periods": 0,
                "throttled_periods": s.cgroup.throttled_periods,
                "throttled_time": 0,
            },
        })
    };
    let empty = Sample {
        read: super::containers::ZERO_TIME.into(),
        ..Sample::default()
    };
    let before = before.unwrap_or(&empty);
    let stats = &now.cgroup;
    // dockerd's names: v1's total_inactive_file, v2's inactive_file.
    let inactive = if now.v1 {
        "total_inactive_file"
    } else {
        "inactive_file"
    };
    let limit = match (stats.memory_limit, now.host_memory) {
        (Some(limit), 0) => limit,
        (Some(limit), host) => limit.min(host),
        (None, host) => host,
    };
    let networks: serde_json::Map<String, Value> = now
        .networks
        .iter()
        .map(|(name, [rx, rx_packets, tx, tx_packets])| {
            (
                name.clone(),
                json!({
                    "rx_bytes": rx, "rx_packets": rx_packets,
                    "rx_errors": 0, "rx_dropped": 0,
                    "tx_bytes": tx, "tx_packets": tx_packets,
                    "tx_errors": 0, "tx_dropped": 0,
                }),
            )
        })
        .collect();
    let mut value = json!({
        "read": now.read,
        "preread": before.read,
        "pids_stats": { "current": stats.pids },
        "blkio_stats": {
            "io_service_bytes_recursive": [
                { "major": 0, "minor": 0, "op": "read", "value": stats.io_bytes.0 },
                { "major": 0, "minor": 0, "op": "write", "value": stats.io_bytes.1 },
            ],
        },
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": cpu(now),
        "precpu_stats": cpu(before),
        "memory_stats": {
            "usage": stats.memory_usage,
            "max_usage": stats.memory_peak,
            "stats": { inactive: stats.memory_inactive_file },
            "limit": limit,
        },
        "name": format!("/{}", record.name),
        "id": record.id,
    });
    if let Some(max) = stats.pids_limit {
        value["pids_stats"]["limit"] = json!(max);
    }
    if !networks.is_empty() {
        value["networks"] = Value::Object(networks);
    }
    value
}

/// The response body of `GET /containers/ID/stats?stream=&one-shot=`.
pub async fn serve(
    engine: &Arc<Engine>,
    id: &str,
    stream: bool,
    one_shot: bool,
) -> Result<super::http::Body, Error> {
    let record = engine.record(id)?;
    let (mut sender, body) = super::http::channel_body();
    if !record.state.status.is_running() {
        // As dockerd: a container that does not run has only zeros.
        let zero = Sample {
            read: super::containers::ZERO_TIME.into(),
            ..Sample::default()
        };
        let line = to_json(&record, &zero, None).to_string() + "\n";
        sender
            .send_data(Bytes::from(line))
            .await
            .map_err(|e| Error::Internal(format!("stats: {e}")))?;
        return Ok(body);
    }
    let engine = engine.clone();
    let id = id.to_owned();
    tokio::spawn(async move {
        let read = |engine: Arc<Engine>, id: String| async move {
            let record = engine.record(&id).ok()?;
            if !record.state.status.is_running() {
                return None;
            }
            let sample = blocking(move || sample(&record).map(|s| (record, s)))
                .await
                .ok()?
                .ok()?;
            Some(sample)
        };
        let mut before: Option<Sample> = None;
        loop {
            let Some((record, now)) = read(engine.clone(), id.clone()).await
            else {
                return;
            };
            let last = !stream && (one_shot || before.is_some());
            if stream || last {
                let line =
                    to_json(&record, &now, before.as_ref()).to_string() + "\n";
                if sender.send_data(Bytes::from(line)).await.is_err() || last {
                    return;
                }
            }
            before = Some(now);
            tokio::time::sleep(INTERVAL).await;
        }
    });
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_reads_every_interface_but_loopback() {
        let text = "Inter-|   Receive                            |  Transmit\n \
            face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
            lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0\n  \
            eth0:    1500      10    0    0    0     0          0         0      700       5    0    0    0     0       0          0\n";
        assert_eq!(
            parse_net_dev(text),
            vec![("eth0".to_owned(), [1500, 10, 700, 5])]
        );
    }

    #[test]
    fn the_memory_limit_is_the_hosts_without_one() {
        let record = Record::default();
        let mut sample = Sample {
            host_memory: 8 << 30,
            ..Sample::default()
        };
        assert_eq!(
            to_json(&record, &sample, None)["memory_stats"]["limit"],
            8u64 << 30
        );
        sample.cgroup.memory_limit = Some(64 << 20);
        assert_eq!(
            to_json(&record, &sample, None)["memory_stats"]["limit"],
            64u64 << 20
        );
        sample.v1 = true;
        sample.cgroup.memory_inactive_file = 7;
        assert_eq!(
            to_json(&record, &sample, None)["memory_stats"]["stats"]["total_inactive_file"],
            7
        );
    }
}
