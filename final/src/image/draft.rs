//! An image being made: its manifest and config as JSON documents, to
//! which layers are added and whose config is edited, then written to
//! the store. `docker commit` makes its image with one, and so will the
//! builder, one instruction at a time.
//!
//! The documents stay JSON (not oci-spec's types) so that a field berth
//! does not know, in a pulled image's config, is kept as it was.

use std::io::Read;

use serde_json::{Map, Value, json};

use super::digest::Digest;
use super::store::{self, Store, oci_digest, our_digest};

/// A manifest and a config, not yet in the store.
#[derive(Debug, Clone)]
pub struct Draft {
    manifest: Value,
    config: Value,
}

impl Draft {
    /// An image of no layers for `architecture` (Go's name) on linux:
    /// `FROM scratch`.
    pub fn scratch(architecture: &str) -> Draft {
        Draft {
            manifest: json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                },
                "layers": [],
            }),
            config: json!({
                "architecture": architecture,
                "os": "linux",
                "config": {},
                "rootfs": { "type": "layers", "diff_ids": [] },
            }),
        }
    }

    /// Image `manifest` of `store`, to build on.
    pub fn open(
        store: &Store,
        manifest: &Digest,
    ) -> Result<Draft, store::Error> {
        let manifest_doc: Value = store.read_json(manifest)?;
        let config_digest: Digest = manifest_doc["config"]["digest"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| store::Error::Index {
                path: store.blob_path(manifest),
                message: "the manifest names no sha256 config".into(),
            })?;
        Ok(Draft {
            manifest: manifest_doc,
            config: store.read_json(&config_digest)?,
        })
    }

    /// The image config's `config` object (`Env`, `Cmd`, `WorkingDir`,
    /// …), created if absent.
    pub fn settings(&mut self) -> &mut Map<String, Value> {
        if !self.config["config"].is_object() {
            self.config["config"] = json!({});
        }
        self.config["config"]
            .as_object_mut()
            .unwrap_or_else(|| unreachable!("made an object above"))
    }

    /// The whole image config (`author`, `created`, …).
    pub fn config(&mut self) -> &mut Value {
        &mut self.config
    }

    /// Add the uncompressed layer tar `tar` (at most
    /// [`super::archive::MAX_BLOB`] bytes) as a blob of `store` and the
    /// top layer of the image, with a history entry: the layer's digest
    /// (its diff ID too). The caller holds the store's lock until the
    /// image is named, or a garbage collection could take the blob.
    pub fn add_layer(
        &mut self,
        store: &Store,
        tar: impl Read,
        created: &str,
        created_by: &str,
        comment: &str,
    ) -> Result<Digest, store::Error> {
        let (layer, size, _) =
            store.put(tar, None, super::archive::MAX_BLOB)?;
        match self.config["rootfs"]["diff_ids"].as_array_mut() {
            Some(ids) => ids.push(json!(layer.to_string())),
            None => {
                self.config["rootfs"] = json!({ "type": "layers", "diff_ids": [layer.to_string()] });
            }
        }
        let descriptor = json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": oci_digest(&layer).to_string(),
            "size": size,
        });
        match self.manifest["layers"].as_array_mut() {
            Some(layers) => layers.push(descriptor),
            None => self.manifest["layers"] = json!([descriptor]),
        }
        self.history(created, created_by, comment, false);
        Ok(layer)
    }

    /// Add a history entry (`empty_layer`: a change of the config only).
    pub fn history(
        &mut self,
        created: &str,
        created_by: &str,
        comment: &str,
        empty_layer: bool,
    ) {
        let mut entry = json!({ "created": created, "created_by": created_by });
        if !comment.is_empty() {
            entry["comment"] = json!(comment);
        }
        if empty_layer {
            entry["empty_layer"] = json!(true);
        }
        let mut history = self.config["history"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        history.push(entry);
        self.config["history"] = Value::Array(history);
        self.config["created"] = json!(created);
    }

    /// Write the config, then the manifest, as blobs of `store`: the
    /// manifest's digest and size, and the config's digest (the image
    /// ID). The manifest is parsed back with the spec's types first.
    pub fn write(
        &mut self,
        store: &Store,
    ) -> Result<(Digest, u64, Digest), store::Error> {
        let config = serde_json::to_vec(&self.config).unwrap_or_default();
        let (config_digest, _) = store.put_bytes(&config)?;
        self.manifest["config"]["digest"] = json!(config_digest.to_string());
        self.manifest["config"]["size"] = json!(config.len());
        let manifest = serde_json::to_vec(&self.manifest).unwrap_or_default();
        let bad = |message: String| store::Error::Index {
            path: store.dir().to_owned(),
            message,
        };
        let parsed: oci_spec::image::ImageManifest =
            serde_json::from_slice(&manifest).map_err(|e| {
                bad(format!("a made manifest does not parse: {e}"))
            })?;
        if parsed
            .layers()
            .iter()
            .any(|l| our_digest(l.digest()).is_none())
        {
            return Err(bad(
                "a made manifest names a layer that is not sha256".into(),
            ));
        }
        let (digest, _) = store.put_bytes(&manifest)?;
        Ok((digest, manifest.len() as u64, config_digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draft_adds_layers_and_history_and_reads_back() {
        let dir = std::env::temp_dir()
            .join(format!("berth-draft-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        let mut draft = Draft::scratch("amd64");
        draft.settings().insert("Cmd".into(), json!(["sh"]));
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(3);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "etc/x", &b"hi\n"[..]).unwrap();
        let tar = tar.into_inner().unwrap();
        let now = "2026-01-01T00:00:00Z";
        let layer = draft
            .add_layer(&store, &tar[..], now, "COPY x /etc/x", "")
            .unwrap();
        assert_eq!(layer, Digest::of(&tar));
        draft.history(now, "CMD [\"sh\"]", "", true);
        let (manifest, _, id) = draft.write(&store).unwrap();
        let again = Draft::open(&store, &manifest).unwrap();
        assert_eq!(again.config["rootfs"]["diff_ids"][0], layer.to_string());
        assert_eq!(again.config["history"][1]["empty_layer"], true);
        assert_eq!(again.manifest["config"]["digest"], id.to_string());
        let layers = super::super::snapshot::layers(&store, &manifest).unwrap();
        assert_eq!(layers.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
