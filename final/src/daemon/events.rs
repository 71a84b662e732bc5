//! `GET /events`: what happened to containers and images, as Docker
//! reports it: one JSON object per event, streamed as they happen,
//! after those already recorded since `since`, until `until`.
//!
//! The engine [`Events::emit`]s at each change it makes (create, start,
//! die, destroy, kill, stop, pause, …; load, tag, untag, delete, import,
//! …). Every subscriber gets every event through a broadcast channel; a
//! ring of the last [`KEEP`] events serves `since`.
//!
//! Simplification: dockerd keeps its last 256 events too, and, like it,
//! berth keeps them in memory only: a restarted daemon starts a new
//! history.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::containers::Error;

/// How many past events are kept for `since`.
pub const KEEP: usize = 256;

/// One event.
#[derive(Debug, Clone)]
pub struct Event {
    /// `container` or `image`.
    pub kind: &'static str,
    /// `create`, `start`, `die`, `untag`, …
    pub action: String,
    /// The container's id, or the image's (or its name, as Docker
    /// reports tag events).
    pub id: String,
    /// What Docker attaches: the image and name of a container (and its
    /// labels), its exit code, a signal, an image's name.
    pub attributes: BTreeMap<String, String>,
    /// When, in nanoseconds since the epoch.
    pub time_nano: i64,
}

impl Event {
    /// The event as Docker's API writes it.
    pub fn to_json(&self) -> Value {
        let mut value = json!({
            "Type": self.kind,
            "Action": self.action,
            "Actor": { "ID": self.id, "Attributes": self.attributes },
            "scope": "local",
            "time": self.time_nano / 1_000_000_000,
            "timeNano": self.time_nano,
        });
        // The fields of API versions before 1.22, which Docker still
        // writes for containers (and clients still read).
        if self.kind == "container" {
            value["status"] = json!(self.action);
            value["id"] = json!(self.id);
            if let Some(image) = self.attributes.get("image") {
                value["from"] = json!(image);
            }
        }
        value
    }
}

/// The engine's events: the recent past and the live stream.
#[derive(Debug)]
pub struct Events {
    past: Mutex<VecDeque<Event>>,
    live: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Events {
        Events {
            past: Mutex::new(VecDeque::with_capacity(KEEP)),
            live: broadcast::channel(KEEP).0,
        }
    }
}

impl Events {
    /// Record and broadcast an event that happens now.
    pub fn emit(
        &self,
        kind: &'static str,
        action: &str,
        id: &str,
        attributes: BTreeMap<String, String>,
    ) {
        let time_nano = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let event = Event {
            kind,
            action: action.to_owned(),
            id: id.to_owned(),
            attributes,
            time_nano,
        };
        // Recorded and sent under one lock: a subscriber that takes the
        // past and the live stream under it sees every event once.
        let mut past = self.past.lock().unwrap_or_else(|e| e.into_inner());
        if past.len() == KEEP {
            past.pop_front();
        }
        past.push_back(event.clone());
        let _ = self.live.send(event);
    }

    /// The events since `since_nano` kept so far, and the stream of
    /// those to come (no event in both, none missed between).
    pub fn subscribe(
        &self,
        since_nano: Option<i64>,
    ) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let past = self.past.lock().unwrap_or_else(|e| e.into_inner());
        let replay = match since_nano {
            Some(since) => past
                .iter()
                .filter(|e| e.time_nano >= since)
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        (replay, self.live.subscribe())
    }
}

/// A time as the docker CLI sends it (`1700000000.123456789`, or whole
/// seconds), in nanoseconds.
pub fn parse_time(text: &str) -> Result<i64, Error> {
    let bad = || Error::BadRequest(format!("invalid timestamp: {text:?}"));
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
    let seconds: i64 = seconds.parse().map_err(|_| bad())?;
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let nanos: i64 = format!("{fraction:0<9}").parse().map_err(|_| bad())?;
    seconds
        .checked_mul(1_000_000_000)
        .and_then(|s| s.checked_add(nanos))
        .ok_or_else(bad)
}

/// The `filters` of `GET /events`: each key's values are alternatives,
/// every key must match.
#[derive(Debug, Default)]
pub struct Filter {
    keys: HashMap<String, Vec<String>>,
}

impl Filter {
    /// Parse Docker's filter JSON (`{"type":["container"]}` or the older
    /// `{"type":{"container":true}}`).
    pub fn parse(text: &str) -> Result<Filter, Error> {
        if text.is_empty() {
            return Ok(Filter::default());
        }
        let value: HashMap<String, Value> = serde_json::from_str(text)
            .map_err(|e| Error::BadRequest(format!("invalid filter: {e}")))?;
        let mut keys = HashMap::new();
        for (key, values) in value {
            let list = match values {
                Value::Object(map) => map.keys().cloned().collect(),
                Value::Array(list) => list
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                _ => {
                    return Err(Error::BadRequest(format!(
                        "invalid filter {key:?}: expected a list"
                    )));
                }
            };
            match key.as_str() {
                "type" | "event" | "container" | "image" | "label" => {}
                other => {
                    return Err(Error::BadRequest(format!(
                        "invalid filter '{other}'"
                    )));
                }
            }
            keys.insert(key, list);
        }
        Ok(Filter { keys })
    }

    /// Whether `event` passes.
    pub fn matches(&self, event: &Event) -> bool {
        self.keys.iter().all(|(key, values)| {
            values.is_empty()
                || values.iter().any(|v| match key.as_str() {
                    "type" => event.kind == v,
                    // `die` matches `die`; Docker also lets `exec_start`
                    // match `exec_start: sh -c …`.
                    "event" => {
                        event.action == *v
                            || event.action.starts_with(&format!("{v}:"))
                    }
                    // As Docker: a prefix of its id or of its name.
                    "container" => {
                        event.kind == "container"
                            && (event.id.starts_with(v.as_str())
                                || event
                                    .attributes
                                    .get("name")
                                    .is_some_and(|n| n.starts_with(v.as_str())))
                    }
                    "image" => {
                        event.attributes.get("image") == Some(v)
                            || (event.kind == "image"
                                && (event.id == *v
                                    || event.attributes.get("name") == Some(v)))
                    }
                    "label" => match v.split_once('=') {
                        Some((k, value)) => {
                            event.attributes.get(k).map(String::as_str)
                                == Some(value)
                        }
                        None => event.attributes.contains_key(v),
                    },
                    _ => false,
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: &str) -> Event {
        Event {
            kind: "container",
            action: action.into(),
            id: "abcdef".into(),
            attributes: [
                ("name".to_owned(), "web".to_owned()),
                ("image".to_owned(), "busybox".to_owned()),
                ("tier".to_owned(), "front".to_owned()),
            ]
            .into(),
            time_nano: 1_700_000_000_123_456_789,
        }
    }

    #[test]
    fn times_read_as_the_cli_sends_them() {
        assert_eq!(parse_time("17").unwrap(), 17_000_000_000);
        assert_eq!(parse_time("17.5").unwrap(), 17_500_000_000);
        assert_eq!(parse_time("17.000000001").unwrap(), 17_000_000_001);
        assert!(parse_time("17.0000000001").is_err());
        assert!(parse_time("x").is_err());
        assert!(parse_time("99999999999999999").is_err());
    }

    #[test]
    fn filters_match_each_key_and_any_value() {
        let filter = |text: &str| Filter::parse(text).unwrap();
        assert!(filter("").matches(&event("start")));
        assert!(
            filter(r#"{"event":["die","start"]}"#).matches(&event("start"))
        );
        assert!(!filter(r#"{"event":["die"]}"#).matches(&event("start")));
        assert!(filter(r#"{"container":{"web":true}}"#).matches(&event("x")));
        assert!(filter(r#"{"container":["abc"]}"#).matches(&event("x")));
        assert!(filter(r#"{"container":["we"]}"#).matches(&event("x")));
        assert!(!filter(r#"{"container":["db"]}"#).matches(&event("x")));
        assert!(filter(r#"{"label":["tier=front"]}"#).matches(&event("x")));
        assert!(!filter(r#"{"label":["tier=back"]}"#).matches(&event("x")));
        assert!(
            !filter(r#"{"type":["image"],"event":["start"]}"#)
                .matches(&event("start"))
        );
        assert!(
            filter(r#"{"event":["exec_start"]}"#)
                .matches(&event("exec_start: sh -c true"))
        );
        assert!(Filter::parse(r#"{"colour":["red"]}"#).is_err());
        assert!(Filter::parse("[").is_err());
    }

    #[test]
    fn the_past_is_replayed_from_since_and_bounded() {
        let events = Events::default();
        for i in 0..KEEP + 10 {
            events.emit("container", &format!("e{i}"), "x", BTreeMap::new());
        }
        let (all, _) = events.subscribe(Some(0));
        assert_eq!(all.len(), KEEP);
        assert_eq!(all[0].action, "e10");
        let (none, _) = events.subscribe(None);
        assert!(none.is_empty());
    }
}
