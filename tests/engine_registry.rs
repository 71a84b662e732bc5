//! Registries: `push`, `pull`, `login` through `berth` and through the
//! docker CLI against `berth daemon`, with Debian's `docker-registry` on
//! 127.0.0.1 (open, then behind a token server written for the test),
//! skopeo as the peer that must see the same digests, and a fake
//! registry that lies.

use std::fs;
use std::io::Write;
use std::time::Duration;

use berth_tests::daemons::{
    Berth, digest, docker_archive_of, gzip, layer, rootfs_layer, stacked_layers,
};
use berth_tests::registry::{
    Answer, Blobs, FakeRegistry, INDEX, Registry, TokenServer, remote_digest,
    skopeo,
};
use berth_tests::{fixture::rootfs, privileged};

/// Load an image of `layers` into `berth` as `tag`.
fn load(berth: &Berth, tag: &str, layers: &[(Vec<u8>, String)]) {
    let path = berth.data_root().with_extension("load.tar");
    fs::write(&path, docker_archive_of(tag, layers)).unwrap();
    let (code, out, err) = berth.run(&["load", "-i", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}

/// The `Digest: …` line of a pull's or push's output.
fn digest_line(out: &str) -> String {
    out.lines()
        .find_map(|l| {
            l.strip_prefix("Digest: ")
                .or_else(|| l.split(": digest: ").nth(1))
        })
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_owned())
        .unwrap_or_else(|| panic!("no digest in: {out}"))
}

/// What a pull may leave behind when it fails: nothing in the store's
/// and the snapshots' `tmp/`, no blob, no snapshot, no image.
fn assert_nothing_left(berth: &Berth) {
    let root = berth.data_root();
    for dir in [
        "image/tmp",
        "image/blobs/sha256",
        "snapshots/tmp",
        "snapshots/sha256",
    ] {
        let left: Vec<_> = fs::read_dir(root.join(dir))
            .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{dir}: {left:?}");
    }
    let (_, images, _) = berth.run(&["images", "-q"]);
    assert_eq!(images, "");
}

#[test]
fn push_and_pull_round_trip_to_identical_digests() {
    if !privileged("engine_registry::round_trip") {
        return;
    }
    let registry = Registry::start("roundtrip");
    let host = registry.host.clone();
    let berth = Berth::start("reg-rt", &["--debug"]);
    load(&berth, "app:v1", &[rootfs_layer(rootfs())]);
    let name = format!("{host}/team/app:v1");
    assert_eq!(berth.run(&["tag", "app:v1", &name]).0, 0);

    // berth pushes (the layer in one PUT); skopeo reads the same digest.
    let (code, out, err) = berth.cli(&["push", &name]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with(&format!(
            "The push refers to repository [{host}/team/app]\n"
        )),
        "{out}"
    );
    assert!(out.contains(": Pushed\n"), "{out}");
    let pushed = digest_line(&out);
    assert_eq!(remote_digest(&name), pushed);
    // Again: nothing to upload.
    let (code, out, err) = berth.cli(&["push", &name]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(": Layer already exists\n"), "{out}");
    // To another repository of the registry: mounted, not uploaded.
    let other = format!("{host}/mirror/app:v1");
    berth.run(&["tag", "app:v1", &other]);
    let (code, out, err) = berth.run(&["push", &other]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(": Mounted from team/app\n"), "{out}");
    assert_eq!(digest_line(&out), pushed);

    // skopeo pushes a copy (its own manifest); the docker CLI pulls it
    // back through berth with the digest skopeo reads.
    let copy = format!("{host}/copy/app:v2");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{name}"),
        &format!("docker://{copy}"),
    ]);
    let copied = remote_digest(&copy);
    let (code, _, err) = berth.run(&["rmi", "-f", "app:v1", &name, &other]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = berth.run(&["pull", &copy]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("v2: Pulling from copy/app\n"), "{out}");
    assert!(out.contains(": Pull complete\n"), "{out}");
    assert!(
        out.ends_with(&format!(
            "Status: Downloaded newer image for {copy}\n{copy}\n"
        )),
        "{out}"
    );
    assert_eq!(digest_line(&out), copied);
    let (_, repo_digests, _) = berth.run(&[
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        &copy,
    ]);
    assert_eq!(
        repo_digests.trim(),
        format!("[\"{host}/copy/app@{copied}\"]")
    );
    let (code, out, err) = berth.cli(&["pull", &name]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(": Pull complete\n"), "{out}");
    assert_eq!(digest_line(&out), pushed);
    // By digest: the same image, its layer there already.
    let pinned = format!("{host}/team/app@{pushed}");
    let (code, out, err) = berth.cli(&["pull", &pinned]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(": Already exists\n"), "{out}");
    let (code, out, _) = berth.cli(&["pull", &name]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("Status: Image is up to date for {name}\n")),
        "{out}"
    );

    let (code, out, err) = berth.run(&["run", "--rm", &copy, "echo", "pulled"]);
    assert_eq!((code, out.as_str()), (0, "pulled\n"), "{err}");

    // The daemon traced every registry request (`--debug`).
    let log = berth.daemon_log();
    assert!(
        log.contains(&format!(
            "debug: registry: GET http://{host}/v2/copy/app/manifests/v2 → 200"
        )),
        "{log}"
    );
    // A committed image goes up and comes back the same, its new layer
    // with it.
    let made = format!("{host}/made/app:v1");
    let (code, _, err) = berth.run(&[
        "run",
        "--name",
        "maker",
        &copy,
        "sh",
        "-c",
        "echo made > /made",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(berth.run(&["commit", "maker", &made]).0, 0);
    assert_eq!(berth.run(&["rm", "maker"]).0, 0);
    let (code, out, err) = berth.cli(&["push", &made]);
    assert_eq!(code, 0, "{out}{err}");
    let committed = digest_line(&out);
    assert_eq!(remote_digest(&made), committed);
    assert_eq!(berth.run(&["rmi", &made]).0, 0);
    let (code, out, err) = berth.cli(&["pull", &made]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(digest_line(&out), committed);
    let (code, out, err) = berth.run(&["run", "--rm", &made, "cat", "/made"]);
    assert_eq!((code, out.as_str()), (0, "made\n"), "{err}");

    let (code, _, err) = berth.run(&["rmi", &copy, &name, &made]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_large_layer_goes_up_in_chunks_and_comes_back_the_same() {
    if !privileged("engine_registry::chunks") {
        return;
    }
    let registry = Registry::start("chunks");
    let berth = Berth::start("reg-chunks", &["--debug"]);
    // Random bytes do not compress: 40 MiB is two PATCHes of 32 MiB.
    let mut random = vec![0u8; 40 << 20];
    std::io::Read::read_exact(
        &mut fs::File::open("/dev/urandom").unwrap(),
        &mut random,
    )
    .unwrap();
    let big = layer_bytes("big.bin", &random);
    let big_digest = digest(&big);
    let name = format!("{}/big/app:v1", registry.host);
    load(&berth, &name, &[rootfs_layer(rootfs()), (big, big_digest)]);
    let (code, out, err) = berth.cli(&["push", &name]);
    assert_eq!(code, 0, "{out}{err}");
    let pushed = digest_line(&out);
    let log = berth.daemon_log();
    assert_eq!(log.matches("debug: registry: PATCH ").count(), 2, "{log}");
    assert_eq!(remote_digest(&name), pushed);
    // skopeo pulls it whole into an OCI layout: the same manifest.
    let dir = berth.data_root().with_extension("oci");
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{name}"),
        &format!("oci:{}:v1", dir.display()),
    ]);
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap())
            .unwrap();
    let _ = fs::remove_dir_all(&dir);
    assert_eq!(index["manifests"][0]["digest"], pushed.as_str());
    assert_eq!(berth.run(&["rmi", &name]).0, 0);
    let (code, out, err) = berth.run(&["pull", &name]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(digest_line(&out), pushed);
    let (code, out, err) =
        berth.run(&["run", "--rm", &name, "sh", "-c", "wc -c < /big.bin"]);
    assert_eq!((code, out.trim()), (0, "41943040"), "{err}");
}

/// A tar of one file.
fn layer_bytes(name: &str, content: &[u8]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, name, content).unwrap();
    tar.into_inner().unwrap()
}

#[test]
fn an_index_a_zstd_layer_and_whiteouts_pull_for_the_right_platform() {
    if !privileged("engine_registry::index") {
        return;
    }
    let registry = Registry::start("index");
    let berth = Berth::start("reg-index", &[]);
    let (base, base_id) = rootfs_layer(rootfs());
    let [(zstd, zstd_id), (gzip, gzip_id)] = stacked_layers();
    let mut blobs = Blobs::default();
    let amd64 = blobs.image(
        "amd64",
        &[
            (
                base.clone(),
                "application/vnd.oci.image.layer.v1.tar",
                base_id.clone(),
            ),
            (zstd, "application/vnd.oci.image.layer.v1.tar+zstd", zstd_id),
            (gzip, "application/vnd.oci.image.layer.v1.tar+gzip", gzip_id),
        ],
    );
    let arm64 = blobs.image(
        "arm64",
        &[(base, "application/vnd.oci.image.layer.v1.tar", base_id)],
    );
    let (index, index_size) =
        blobs.index(&[(arm64, "arm64", Some("v8")), (amd64, "amd64", None)]);
    let dir = berth.data_root().with_extension("layout");
    blobs.layout(&dir, (&index, index_size, INDEX), "v1");
    let name = format!("{}/multi/app:v1", registry.host);
    skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", dir.display()),
        &format!("docker://{name}"),
    ]);
    let _ = fs::remove_dir_all(&dir);
    let served = remote_digest(&name);
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{name}"),
    ]);
    assert!(raw.contains("\"manifests\""), "not an index: {raw}");

    // This machine's platform by default: three layers, stacked.
    let (code, out, err) = berth.cli(&["pull", &name]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(digest_line(&out), served);
    let (_, arch, _) = berth.run(&[
        "image",
        "inspect",
        "--format",
        "{{.Architecture}} {{len .RootFS.Layers}}",
        &name,
    ]);
    assert_eq!(arch, "amd64 3\n");
    let (code, out, err) = berth.run(&[
        "run", "--rm", &name, "sh", "-c",
        "cat /etc/from-zstd /etc/from-gzip; test -e /etc/hidden-later || echo whited-out",
    ]);
    assert_eq!((code, out.as_str()), (0, "z\ng\nwhited-out\n"), "{err}");
    // Another platform on request; one the index lacks is refused.
    let (code, out, err) =
        berth.cli(&["pull", "--platform", "linux/arm64", &name]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Downloaded newer image"), "{out}");
    let (_, arch, _) = berth.run(&[
        "image",
        "inspect",
        "--format",
        "{{.Architecture}}",
        &name,
    ]);
    assert_eq!(arch, "arm64\n");
    let (code, out, err) =
        berth.run(&["pull", "--platform", "linux/s390x", &name]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        err,
        format!(
            "Error response from daemon: {name}: no matching manifest for linux/s390x in the manifest list entries (it has: linux/arm64/v8, linux/amd64)\n"
        )
    );
}

#[test]
fn token_auth_logins_private_pulls_and_refused_scopes() {
    if !privileged("engine_registry::token") {
        return;
    }
    static GRANTS: &[berth_tests::registry::Grant] = &[
        ("alice", "private/", &["pull", "push"]),
        ("alice", "public/", &["pull"]),
        ("", "public/", &["pull"]),
    ];
    let token = TokenServer::start("token", &[("alice", "s3cret")], GRANTS);
    let tokens = token.requests.clone();
    let registry = Registry::start_with("token", Some(token));
    let host = registry.host.clone();
    let berth = Berth::start("reg-token", &[]);
    load(&berth, "app:v1", &[rootfs_layer(rootfs())]);
    let private = format!("{host}/private/app:v1");
    berth.run(&["tag", "app:v1", &private]);

    // Anonymous: no push.
    let (code, out, err) = berth.cli(&["push", &private]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.ends_with("unauthorized: authentication required\n"),
        "{err}"
    );
    // A wrong password is the token server's refusal.
    let (code, _, err) =
        berth.cli(&["login", "-u", "alice", "-p", "wrong", &host]);
    assert_eq!(code, 1);
    assert!(
        err.contains("unauthorized: incorrect username or password"),
        "{err}"
    );
    assert!(!berth.docker_config().join("config.json").exists());
    // The right one is kept in Docker's config.json, for the user only.
    let (code, out, err) =
        berth.cli(&["login", "-u", "alice", "-p", "s3cret", &host]);
    assert_eq!((code, out.as_str()), (0, "Login Succeeded\n"), "{err}");
    let config = berth.docker_config().join("config.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let saved: serde_json::Value =
        serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    assert_eq!(saved["auths"][&host]["auth"], "YWxpY2U6czNjcmV0");
    // The token server saw the user and the scope asked for.
    assert!(
        tokens
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.contains("account=alice")),
        "{:?}",
        tokens.lock().unwrap()
    );

    let (code, out, err) = berth.cli(&["push", &private]);
    assert_eq!(code, 0, "{out}{err}");
    let pushed = digest_line(&out);
    // alice may only pull from public/: the registry's refusal, Docker's way.
    let public = format!("{host}/public/app:v1");
    berth.run(&["tag", "app:v1", &public]);
    let (code, _, err) = berth.cli(&["push", &public]);
    assert_eq!(code, 1);
    assert!(
        err.ends_with("unauthorized: authentication required\n"),
        "{err}"
    );

    // The docker CLI logs in through the daemon (POST /auth) and pulls.
    assert_eq!(berth.run(&["rmi", "app:v1", &private, &public]).0, 0);
    let (code, out, err) =
        berth.run(&["login", "-u", "alice", "-p", "s3cret", &host]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Login Succeeded"), "{out}");
    let (code, out, err) = berth.run(&["pull", &private]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(digest_line(&out), pushed);
    let (code, out, err) =
        berth.run(&["run", "--rm", &private, "echo", "private"]);
    assert_eq!((code, out.as_str()), (0, "private\n"), "{err}");

    // Logged out: a private pull is refused as Docker refuses it.
    let (code, out, _) = berth.cli(&["logout", &host]);
    assert_eq!(
        (code, out),
        (0, format!("Removing login credentials for {host}\n"))
    );
    assert_eq!(berth.run(&["rmi", &private]).0, 0);
    let (code, _, err) = berth.cli(&["pull", &private]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with(&format!(
            "berth: Error response from daemon: pull access denied for {host}/private/app, repository does not exist or may require 'docker login': "
        )),
        "{err}"
    );
    assert_nothing_left(&berth);
}

/// A fake registry serving one image of one layer under `repo`, `lie`
/// changing what it answers.
fn liar(
    lie: impl Fn(&str, Answer, &[u8]) -> Answer + Send + Sync + 'static,
) -> FakeRegistry {
    let content = layer(&[("etc/lied", "yes\n")]);
    let blob = gzip(&content);
    let mut blobs = Blobs::default();
    let (manifest, _) = blobs.image(
        "amd64",
        &[(
            blob.clone(),
            "application/vnd.oci.image.layer.v1.tar+gzip",
            digest(&content),
        )],
    );
    let served = blob.clone();
    FakeRegistry::start(move |request| {
        let path = request.path.clone();
        let answer = if path == "/v2/" {
            Answer::new(200, "{}")
        } else if path.ends_with("/manifests/v1") {
            let bytes = blobs.blobs[&manifest].clone();
            Answer::new(200, bytes).header(
                "Content-Type",
                "application/vnd.oci.image.manifest.v1+json",
            )
        } else if let Some(digest) = path.split("/blobs/").nth(1) {
            match blobs.blobs.get(digest) {
                Some(bytes) => Answer::new(200, bytes.clone()),
                None => Answer::new(
                    404,
                    r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#,
                ),
            }
        } else {
            Answer::new(404, "{}")
        };
        lie(&path, answer, &served)
    })
}

#[test]
fn a_lying_registry_gets_a_clear_error_and_leaves_nothing() {
    if !privileged("engine_registry::liars") {
        return;
    }
    let berth = Berth::start("reg-liars", &[]);
    let is_layer =
        |path: &str, blob: &[u8]| path.ends_with(digest(blob).as_str());
    // Each lie, and the end of the one line berth prints.
    type Lie = Box<dyn Fn(&str, Answer, &[u8]) -> Answer + Send + Sync>;
    let lies: Vec<(&str, Lie, &str)> = vec![
        (
            "wrong digest",
            Box::new(move |path, mut answer, blob| {
                if is_layer(path, blob) {
                    let mut other = gzip(&layer(&[("etc/lied", "no!\n")]));
                    other.resize(answer.body.len(), 0);
                    answer.body = other;
                }
                answer
            }),
            "the registry sent content of digest",
        ),
        (
            "truncated",
            Box::new(move |path, mut answer, blob| {
                if is_layer(path, blob) {
                    answer.length = Some(answer.body.len());
                    answer.body.truncate(answer.body.len() / 2);
                }
                answer
            }),
            "error reading a body from connection",
        ),
        (
            "short",
            Box::new(move |path, mut answer, blob| {
                if is_layer(path, blob) {
                    answer.body.truncate(answer.body.len() / 2);
                }
                answer
            }),
            "where the manifest says",
        ),
        (
            "long",
            Box::new(move |path, mut answer, blob| {
                if is_layer(path, blob) {
                    answer.body.extend(vec![0u8; 1 << 20]);
                }
                answer
            }),
            "where the manifest says",
        ),
        (
            "huge manifest",
            Box::new(|path, mut answer, _| {
                if path.ends_with("/manifests/v1") {
                    answer.body.extend(vec![b' '; 5 << 20]);
                }
                answer
            }),
            "the answer is larger than 4194304 bytes",
        ),
        (
            "redirect loop",
            Box::new(|path, answer, _| {
                if path.ends_with("/manifests/v1") {
                    Answer::new(302, "").header("Location", path)
                } else {
                    answer
                }
            }),
            "stopped after 10 redirects",
        ),
    ];
    for (what, lie, expected) in lies {
        let registry = liar(lie);
        let name = format!("{}/liar/app:v1", registry.host);
        let (code, out, err) = berth.cli(&["pull", &name]);
        assert_eq!(code, 1, "{what}: {out}{err}");
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
        assert!(err.contains(expected), "{what}: {err}");
        assert_nothing_left(&berth);
    }

    // A 401 whatever the token: one token asked for, then the error.
    let tokens = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = tokens.clone();
    let registry = FakeRegistry::start(move |request| {
        if request.path.starts_with("/token") {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return Answer::new(200, r#"{"token":"t"}"#);
        }
        let host = request.headers.get("host").cloned().unwrap_or_default();
        Answer::new(401, r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#)
            .header("WWW-Authenticate", &format!("Bearer realm=\"http://{host}/token\",service=\"fake\""))
    });
    let (code, _, err) =
        berth.cli(&["pull", &format!("{}/loop/app:v1", registry.host)]);
    assert_eq!(code, 1);
    assert!(
        err.ends_with("unauthorized: authentication required\n"),
        "{err}"
    );
    assert_eq!(tokens.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_nothing_left(&berth);
}

#[test]
fn a_decompression_bomb_is_refused_and_leaves_nothing() {
    if !privileged("engine_registry::bomb") {
        return;
    }
    let berth = Berth::start("reg-bomb", &[]);
    // A tar header for a file of 1.1 GiB, then gzip members of a MiB of
    // zeros each (a gzip stream may be many members): 1.1 MiB that
    // decompresses to 1.1 GiB, past the bound of max(1 GiB, 100 × size).
    let size: u64 = 1100 << 20;
    let mut header = tar::Header::new_gnu();
    header.set_path("zeros").unwrap();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    let mut bomb = gzip(header.as_bytes());
    let mut best =
        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    best.write_all(&vec![0u8; 1 << 20]).unwrap();
    let member = best.finish().unwrap();
    for _ in 0..1100 {
        bomb.extend_from_slice(&member);
    }
    let bogus = digest(b"never computed");
    let mut blobs = Blobs::default();
    let (manifest, _) = blobs.image(
        "amd64",
        &[(bomb, "application/vnd.oci.image.layer.v1.tar+gzip", bogus)],
    );
    let registry = serving(blobs, vec![("bomb/app", manifest)], |a| a);
    let (code, _, err) =
        berth.cli(&["pull", &format!("{}/bomb/app:v1", registry.host)]);
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "decompresses to more than 1073741824 bytes (a decompression bomb?)"
        ),
        "{err}"
    );
    assert_nothing_left(&berth);
}

#[test]
fn a_pull_killed_midway_leaves_no_image_and_the_next_one_completes() {
    if !privileged("engine_registry::killed") {
        return;
    }
    let mut berth = Berth::start("reg-killed", &[]);
    let slow = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let throttle = slow.clone();
    let (base, base_id) = rootfs_layer(rootfs());
    let mut blobs = Blobs::default();
    let (manifest, _) = blobs.image(
        "amd64",
        &[(base, "application/vnd.oci.image.layer.v1.tar", base_id)],
    );
    let registry =
        serving(blobs, vec![("slow/app", manifest)], move |mut answer| {
            if throttle.load(std::sync::atomic::Ordering::SeqCst)
                && answer.body.len() > 4096
            {
                answer.trickle = Some((16 << 10, Duration::from_millis(20)));
            }
            answer
        });
    let name = format!("{}/slow/app:v1", registry.host);
    let mut pulling = berth
        .berth(&["pull", &name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill the daemon once the layer is half in.
    let tmp = berth.data_root().join("image/tmp");
    assert!(
        berth_tests::host::wait_for(20, || {
            fs::read_dir(&tmp)
                .map(|d| {
                    d.flatten().any(|e| {
                        e.metadata()
                            .map(|m| m.len() > (256 << 10))
                            .unwrap_or(false)
                    })
                })
                .unwrap_or(false)
        }),
        "the pull never started writing"
    );
    berth.kill_9();
    let _ = pulling.wait();
    berth.restart(&[]);
    assert_nothing_left(&berth);
    slow.store(false, std::sync::atomic::Ordering::SeqCst);
    let (code, out, err) = berth.cli(&["pull", &name]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = berth.run(&["run", "--rm", &name, "echo", "whole"]);
    assert_eq!((code, out.as_str()), (0, "whole\n"), "{err}");
}

/// Each distinct `sha256:…` of `text` (and its 12-digit short form) as
/// `<digest N>`, N in order of first appearance: the registry chapter's
/// trace reads the same on any machine (the rootfs layer, and so every
/// digest above it, depends on the host's busybox).
fn label_digests(text: &str) -> String {
    let regex = regex::Regex::new(r"sha256:[0-9a-f]{64}").unwrap();
    let mut seen: Vec<String> = Vec::new();
    for found in regex.find_iter(text) {
        if !seen.iter().any(|s| s == found.as_str()) {
            seen.push(found.as_str().to_owned());
        }
    }
    let mut out = text.to_owned();
    for (n, digest) in seen.iter().enumerate() {
        let label = format!("<digest {}>", n + 1);
        out = out.replace(digest.as_str(), &label);
        let hex = &digest["sha256:".len()..];
        out = out.replace(&hex[..12], &label);
    }
    out
}

#[test]
fn a_pull_traced_request_by_request() {
    if !privileged("engine_registry::trace") {
        return;
    }
    static GRANTS: &[berth_tests::registry::Grant] =
        &[("alice", "private/", &["pull", "push"])];
    let token = TokenServer::start("trace", &[("alice", "s3cret")], GRANTS);
    let token_host = token.host();
    let registry = Registry::start_with("trace", Some(token));
    let host = registry.host.clone();
    let mut berth = Berth::start("reg-trace", &["--debug"]);
    // An index of two platforms over one layer, pushed by skopeo.
    let (base, base_id) = rootfs_layer(rootfs());
    let mut blobs = Blobs::default();
    let mut manifests = Vec::new();
    for (arch, variant) in [("amd64", None), ("arm64", Some("v8"))] {
        let layer = (
            base.clone(),
            "application/vnd.oci.image.layer.v1.tar",
            base_id.clone(),
        );
        manifests.push((blobs.image(arch, &[layer]), arch, variant));
    }
    let (index, index_size) = blobs.index(&manifests);
    let dir = berth.data_root().with_extension("layout");
    blobs.layout(&dir, (&index, index_size, INDEX), "v1");
    let name = format!("{host}/private/app:v1");
    skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        "--dest-creds",
        "alice:s3cret",
        &format!("oci:{}:v1", dir.display()),
        &format!("docker://{name}"),
    ]);
    let _ = fs::remove_dir_all(&dir);
    let (code, _, err) =
        berth.cli(&["login", "-u", "alice", "-p", "s3cret", &host]);
    assert_eq!(code, 0, "{err}");
    // Only the pull's requests: a daemon started afresh.
    berth.stop();
    berth.restart(&["--debug"]);
    let (code, out, err) = berth.cli(&["pull", &name]);
    assert_eq!(code, 0, "{out}{err}");
    let trace: String = berth
        .daemon_log()
        .lines()
        .filter_map(|l| l.strip_prefix("debug: registry: "))
        .map(|l| format!("{l}\n"))
        .collect();
    let report = format!(
        "$ berth login -u alice -p s3cret {host}\n$ berth pull {name}\n{out}\n\
         # what berth daemon asked, in order (berth daemon --debug)\n{trace}"
    );
    let report = label_digests(&report)
        .replace(&host, "127.0.0.1:REGISTRY")
        .replace(&token_host, "127.0.0.1:TOKEN");
    let report = regex::Regex::new(r"\(\d+ bytes\)")
        .unwrap()
        .replace_all(&report, "(N bytes)");
    berth_tests::snapshot_settings().bind(|| {
        insta::assert_snapshot!("engine_registry_pull_trace", report);
    });
}

/// A fake registry serving `blobs`, and each `(repository, manifest)` as
/// `REPOSITORY:v1`; `shape` may change each blob's answer.
fn serving(
    blobs: Blobs,
    tags: Vec<(&'static str, String)>,
    shape: impl Fn(Answer) -> Answer + Send + Sync + 'static,
) -> FakeRegistry {
    FakeRegistry::start(move |request| {
        for (repo, manifest) in &tags {
            if request.path == format!("/v2/{repo}/manifests/v1") {
                return Answer::new(200, blobs.blobs[manifest].clone()).header(
                    "Content-Type",
                    "application/vnd.oci.image.manifest.v1+json",
                );
            }
        }
        match request
            .path
            .split("/blobs/")
            .nth(1)
            .and_then(|d| blobs.blobs.get(d))
        {
            Some(bytes) => shape(Answer::new(200, bytes.clone())),
            None => Answer::new(404, "{}"),
        }
    })
}

#[test]
fn hostile_images_are_refused_before_they_are_stored() {
    if !privileged("engine_registry::hostile_images") {
        return;
    }
    let berth = Berth::start("reg-hostile", &[]);
    let mut blobs = Blobs::default();
    // 126 layers: more than any image may stack.
    let many: Vec<(Vec<u8>, &str, String)> = (0..126)
        .map(|n| {
            let tar = layer(&[(&format!("etc/f{n}"), "x\n")]);
            let id = digest(&tar);
            (tar, "application/vnd.oci.image.layer.v1.tar", id)
        })
        .collect();
    let (tall, _) = blobs.image("amd64", &many);
    // A layer berth has, then another blob claiming its diff ID: its
    // snapshot would be reused for content it does not hold.
    let real = layer(&[("etc/real", "real\n")]);
    let (honest, _) = blobs.image(
        "amd64",
        &[(
            real.clone(),
            "application/vnd.oci.image.layer.v1.tar",
            digest(&real),
        )],
    );
    let fake = gzip(&layer(&[("etc/real", "fake\n")]));
    let (claims, _) = blobs.image(
        "amd64",
        &[(
            fake,
            "application/vnd.oci.image.layer.v1.tar+gzip",
            digest(&real),
        )],
    );
    let registry = serving(
        blobs,
        vec![
            ("tall/app", tall),
            ("honest/app", honest),
            ("claims/app", claims),
        ],
        |a| a,
    );
    let host = &registry.host;

    let (code, _, err) = berth.cli(&["pull", &format!("{host}/tall/app:v1")]);
    assert_eq!(code, 1);
    assert!(
        err.contains("126 layers: more than the 125 an image may have"),
        "{err}"
    );
    assert_nothing_left(&berth);

    let (code, out, err) =
        berth.cli(&["pull", &format!("{host}/honest/app:v1")]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = berth.cli(&["pull", &format!("{host}/claims/app:v1")]);
    assert_eq!(code, 1);
    assert!(err.contains("its content has diff_id"), "{err}");
    let (_, images, _) = berth.run(&["images", "--format", "{{.Repository}}"]);
    assert_eq!(images, format!("{host}/honest/app\n"));
}
