//! The engine's image store: `load` of both archive formats, snapshots
//! by chain ID, and what a bad archive leaves behind (nothing).

use std::fs;
use std::path::{Path, PathBuf};

use berth::image::{archive, snapshot::Snapshots, store::Store};
use berth_tests::{daemons, fixture};

/// A fresh directory under `target/test-images/NAME`.
fn fresh(name: &str) -> PathBuf {
    let dir = PathBuf::from("target/test-images").join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The blobs in the store at `dir`.
fn blobs(dir: &Path) -> usize {
    fs::read_dir(dir.join("blobs/sha256")).unwrap().count()
}

#[test]
fn a_docker_archive_loads_under_its_tags_and_unpacks() {
    let dir = fresh("docker");
    let store = Store::open(&dir.join("image")).unwrap();
    let tar = daemons::docker_archive(fixture::rootfs(), "busybox:test");
    let loaded = archive::load(&store, &tar[..]).unwrap();
    assert_eq!(loaded.len(), 1);
    let names: Vec<String> = store
        .names()
        .unwrap()
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(names, ["docker.io/library/busybox:test"]);
    // The layer, the config and the manifest made from them.
    assert_eq!(blobs(&dir.join("image")), 3);
    let snapshots = Snapshots::open(&dir.join("snapshots")).unwrap();
    let manifest = loaded[0].manifest.digest().to_string().parse().unwrap();
    let layers = snapshots.prepare(&store, &manifest).unwrap();
    assert_eq!(layers.len(), 1);
    assert!(layers[0].join("bin/busybox").is_file());
    // A second load adds nothing, a second prepare unpacks nothing.
    archive::load(&store, &tar[..]).unwrap();
    assert_eq!(blobs(&dir.join("image")), 3);
    assert_eq!(snapshots.prepare(&store, &manifest).unwrap(), layers);
}

#[test]
fn an_oci_archive_loads_and_its_image_id_is_its_config() {
    let dir = fresh("oci");
    let store = Store::open(&dir.join("image")).unwrap();
    let tar = daemons::oci_archive(fixture::rootfs());
    let loaded = archive::load(&store, &tar[..]).unwrap();
    assert_eq!(loaded.len(), 1);
    // "latest" alone names no repository: the image is loaded by ID.
    assert!(loaded[0].names.is_empty());
    let digest = loaded[0].manifest.digest().to_string().parse().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&store.read(&digest, 1 << 20).unwrap()).unwrap();
    assert_eq!(manifest["config"]["digest"], loaded[0].id.to_string());
}

#[test]
fn a_layer_that_is_not_its_diff_id_leaves_nothing() {
    let dir = fresh("bad-layer");
    let store = Store::open(&dir.join("image")).unwrap();
    let mut tar = daemons::docker_archive(fixture::rootfs(), "busybox:bad");
    // A byte in the middle of the archive: inside the layer, which is
    // nearly all of it.
    let middle = tar.len() / 2;
    tar[middle] ^= 0xff;
    let err = archive::load(&store, &tar[..]).unwrap_err();
    assert!(err.to_string().contains("diff_id"), "{err}");
    assert_eq!(blobs(&dir.join("image")), 0);
    assert!(store.names().unwrap().is_empty());
}

#[test]
fn a_blob_not_named_after_its_digest_is_refused() {
    let dir = fresh("bad-blob");
    let store = Store::open(&dir.join("image")).unwrap();
    let good = daemons::oci_archive(fixture::rootfs());
    // Rewrite the archive with one blob's content changed, its name kept.
    let mut out = tar::Builder::new(Vec::new());
    let mut input = tar::Archive::new(&good[..]);
    let mut changed = false;
    for entry in input.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        let path = entry.path().unwrap().into_owned();
        if !changed && path.starts_with("blobs/sha256") && bytes.len() < 4096 {
            bytes.push(b' ');
            changed = true;
        }
        let mut header = entry.header().clone();
        header.set_size(bytes.len() as u64);
        header.set_cksum();
        out.append(&header, &bytes[..]).unwrap();
    }
    assert!(changed);
    let bad = out.into_inner().unwrap();
    let err = archive::load(&store, &bad[..]).unwrap_err();
    assert!(err.to_string().contains("the content has digest"), "{err}");
    assert_eq!(blobs(&dir.join("image")), 0);
}

#[test]
fn a_tar_that_is_no_image_is_one_clear_error() {
    let dir = fresh("no-image");
    let store = Store::open(&dir.join("image")).unwrap();
    let tar = daemons::tar_of(&[("hello.txt".to_owned(), b"hello")]);
    let err = archive::load(&store, &tar[..]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "not an image archive: no manifest.json and no index.json at its top"
    );
    assert_eq!(blobs(&dir.join("image")), 0);
}

#[test]
fn an_archive_naming_a_file_outside_itself_is_refused() {
    let dir = fresh("escape");
    let store = Store::open(&dir.join("image")).unwrap();
    // A manifest naming a host file, and a layer that is a symlink out:
    // a load reads nothing but the tar, and says so.
    for (layer, link) in [
        ("../../../../etc/passwd", None),
        ("x/layer.tar", Some("../../../../etc/passwd")),
    ] {
        let mut out = tar::Builder::new(Vec::new());
        if let Some(target) = link {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            out.append_link(&mut header, layer, target).unwrap();
        }
        let manifest = serde_json::json!([{
            "Config": "config.json", "RepoTags": ["evil:1"], "Layers": [layer],
        }])
        .to_string();
        let config = r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]}}"#;
        for (name, bytes) in
            [("config.json", config), ("manifest.json", &manifest)]
        {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            out.append_data(&mut header, name, bytes.as_bytes())
                .unwrap();
        }
        let tar = out.into_inner().unwrap();
        let err = archive::load(&store, &tar[..]).unwrap_err();
        assert!(err.to_string().contains("leaves the archive"), "{err}");
        assert_eq!(blobs(&dir.join("image")), 0, "{layer}");
        assert!(store.names().unwrap().is_empty());
    }
}

#[test]
fn an_archive_of_endless_json_is_cut_short() {
    let dir = fresh("json-flood");
    let store = Store::open(&dir.join("image")).unwrap();
    // 70 top-level JSON files of 1 MiB: more than a load keeps in memory.
    let filler = vec![b' '; 1 << 20];
    let files: Vec<(String, &[u8])> = (0..70)
        .map(|i| (format!("{i}.json"), &filler[..]))
        .collect();
    let tar = daemons::tar_of(&files);
    let err = archive::load(&store, &tar[..]).unwrap_err();
    assert!(err.to_string().contains("bytes of JSON documents"), "{err}");
    assert_eq!(blobs(&dir.join("image")), 0);
}

#[test]
fn a_blob_over_its_bound_is_not_kept() {
    let dir = fresh("too-big");
    let store = Store::open(&dir.join("image")).unwrap();
    let err = store.put(&b"four"[..], None, 3).unwrap_err();
    assert_eq!(err.to_string(), "blob being written: larger than 3 bytes");
    // An unbounded caller does not overflow the bound.
    store.put(&b"four"[..], None, u64::MAX).unwrap();
    assert_eq!(blobs(&dir.join("image")), 1);
    assert_eq!(fs::read_dir(dir.join("image/tmp")).unwrap().count(), 0);
}

#[test]
fn opening_the_store_sweeps_only_what_dead_writers_left() {
    use std::os::fd::AsRawFd;
    let dir = fresh("sweep");
    let image = dir.join("image");
    Store::open(&image).unwrap();
    // A writer that died (no lock) and one that is writing (locked).
    fs::write(image.join("tmp/dead"), "half a blob").unwrap();
    let live = fs::File::create(image.join("tmp/live")).unwrap();
    // SAFETY: flock(2) on an fd this test owns.
    let rc = unsafe { libc::flock(live.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0);
    Store::open(&image).unwrap();
    assert!(!image.join("tmp/dead").exists());
    assert!(
        image.join("tmp/live").exists(),
        "a live writer's file was swept"
    );
    // The store is private: configs may hold secrets.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &fs::metadata(&image).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o700);
}
