//! Docker's JSON progress messages (the Engine API's `JSONMessage`), one
//! object per line, which `docker pull` and `docker push` render:
//!
//! ```text
//! {"status":"Pulling from library/busybox","id":"latest"}
//! {"status":"Pulling fs layer","progressDetail":{},"id":"5d2b0f7e4c1a"}
//! {"status":"Downloading","progressDetail":{"current":524288,"total":2226400},
//!  "progress":"[===========>      ]  524.3kB/2.226MB","id":"5d2b0f7e4c1a"}
//! {"status":"Pull complete","progressDetail":{},"id":"5d2b0f7e4c1a"}
//! {"status":"Digest: sha256:…"}
//! {"errorDetail":{"message":"…"},"error":"…"}
//! ```

use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;

use crate::image::digest::Digest;

/// Where a pull or push reports: the JSON messages, in order.
#[derive(Clone)]
pub struct Progress {
    tx: Option<UnboundedSender<Value>>,
}

impl Progress {
    /// Messages into `tx` (a receiver gone is not an error: the work
    /// goes on, as Docker's does when its client leaves).
    pub fn new(tx: UnboundedSender<Value>) -> Progress {
        Progress { tx: Some(tx) }
    }

    /// Messages into nothing.
    pub fn none() -> Progress {
        Progress { tx: None }
    }

    /// Whether no one reads the messages any more (the API client went
    /// away): the work may stop.
    pub fn abandoned(&self) -> bool {
        self.tx.as_ref().is_some_and(UnboundedSender::is_closed)
    }

    fn send(&self, value: Value) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(value);
        }
    }

    /// `{"status": S}`.
    pub fn status(&self, status: impl Into<String>) {
        self.send(json!({ "status": status.into() }));
    }

    /// `{"status": S, "id": ID}`: the first line of a pull (`ID` its tag).
    pub fn headline(&self, id: &str, status: &str) {
        self.send(json!({ "status": status, "id": id }));
    }

    /// `{"status": S, "id": ID}` with an empty `progressDetail`: a step
    /// of one layer (or, for the first line, of the tag).
    pub fn step(&self, id: &str, status: &str) {
        self.send(json!({ "status": status, "progressDetail": {}, "id": id }));
    }

    /// How far a layer's transfer is: `status` (`Downloading`,
    /// `Pushing`), `current` of `total` bytes, and the bar.
    pub fn bytes(&self, id: &str, status: &str, current: u64, total: u64) {
        self.send(json!({
            "status": status,
            "progressDetail": { "current": current, "total": total },
            "progress": bar(current, total),
            "id": id,
        }));
    }

    /// `{"stream": TEXT}`: a build's output.
    pub fn stream(&self, text: String) {
        self.send(json!({ "stream": text }));
    }

    /// The `aux` message that ends a push.
    pub fn aux(&self, aux: Value) {
        self.send(json!({ "progressDetail": {}, "aux": aux }));
    }

    /// The error that ends the stream.
    pub fn error(&self, message: &str) {
        self.send(
            json!({ "errorDetail": { "message": message }, "error": message }),
        );
    }
}

/// A layer's id in the messages: its digest's first 12 hex digits.
pub fn short(digest: &Digest) -> String {
    digest.hex()[..12].to_owned()
}

/// Docker's bar, 50 wide: `[=====>     ]  1.2MB/3.4MB`.
pub fn bar(current: u64, total: u64) -> String {
    let width = 50u64;
    let filled = current
        .min(total)
        .saturating_mul(width)
        .checked_div(total)
        .unwrap_or(0)
        .min(width);
    let mut bar = "=".repeat(filled as usize);
    if filled < width {
        bar.push('>');
        bar.push_str(&" ".repeat((width - filled - 1) as usize));
    }
    format!("[{bar}] {:>8}/{}", human(current), human(total))
}

/// A size as Docker's progress writes it (`units.HumanSize`: decimal
/// units, four significant digits): `2.226MB`, `524.3kB`, `87B`.
pub fn human(bytes: u64) -> String {
    crate::cli::format::significant(
        bytes as f64,
        4,
        1000.0,
        &["B", "kB", "MB", "GB", "TB", "PB"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_bars_read_as_dockers() {
        assert_eq!(human(87), "87B");
        assert_eq!(human(524_288), "524.3kB");
        assert_eq!(human(2_226_400), "2.226MB");
        assert_eq!(human(2_000_000), "2MB");
        assert_eq!(bar(0, 10), format!("[>{}]       0B/10B", " ".repeat(49)));
        assert_eq!(bar(10, 10), format!("[{}]      10B/10B", "=".repeat(50)));
    }
}
