//! Builds: a multi-stage Dockerfile using every instruction, built by
//! `berth build` and by the docker CLI's classic builder against `berth
//! daemon`, rebuilt from the cache, and its result run, pushed and
//! pulled back; errors that name their line; a context that tries to
//! reach the host.

use std::fs;
use std::path::PathBuf;

use berth_tests::daemons::Berth;
use berth_tests::registry::Registry;
use berth_tests::{fixture::rootfs, privileged};

/// The test Dockerfile: two stages, every instruction the builder knows.
const DOCKERFILE: &str = include_str!("build/context/Dockerfile");

/// A copy of `tests/build/context` (the Dockerfile, three sources and a
/// `.dockerignore` that hides one of them; `scripts/bench build` builds
/// the same) and the archive ADD unpacks.
fn context(name: &str) -> PathBuf {
    let dir = berth_tests::workspace_root()
        .join("target/test-build")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.parent().unwrap()).unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(berth_tests::workspace_root().join("tests/build/context"))
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        fs::read_to_string(dir.join("Dockerfile")).unwrap(),
        DOCKERFILE
    );
    let pack = berth_tests::daemons::layer(&[("packed/file.txt", "packed\n")]);
    fs::write(
        dir.join("src/pack.tar.gz"),
        berth_tests::daemons::gzip(&pack),
    )
    .unwrap();
    dir
}

/// A daemon of its own with the base image, and a context, for test
/// `test` (`None`: SKIPPED without root).
fn start(test: &str, name: &str) -> Option<(Berth, PathBuf)> {
    if !privileged(&format!("engine_build::{test}")) {
        return None;
    }
    let short = if name == "errors" { "err" } else { name };
    let berth = Berth::start(&format!("build-{short}"), &[]);
    base(&berth);
    Some((berth, context(name)))
}

fn base(berth: &Berth) {
    berth.load_rootfs(rootfs(), "base:v1");
}

/// What the built image prints when run.
const EXPECTED: &str = "A\nB\nhi\nexec form\nworld\n1000\n";

fn check_image(berth: &Berth, name: &str) {
    let (code, out, err) = berth.run(&["run", "--rm", name]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(EXPECTED), "{out}");
    // The final stage has what it copied, not the first stage's files.
    let listing: Vec<&str> = out[EXPECTED.len()..].lines().collect();
    for present in ["app", "owned.txt", "added.txt", "exec", "unpacked"] {
        assert!(listing.contains(&present), "{present}: {listing:?}");
    }
    for absent in ["work", "globbed", "out"] {
        assert!(!listing.contains(&absent), "{absent}: {listing:?}");
    }
    let (_, meta, _) = berth.run(&[
        "image", "inspect", "--format",
        "{{.Config.User}}|{{json .Config.ExposedPorts}}|{{json .Config.Volumes}}|{{.Config.StopSignal}}|{{json .Config.Labels}}|{{json .Config.Entrypoint}}",
        name,
    ]);
    assert_eq!(
        meta,
        "1000|{\"53/udp\":{},\"8080/tcp\":{}}|{\"/data\":{}}|SIGINT|{\"org.example.test\":\"yes\",\"stage\":\"final\"}|[\"sh\",\"-c\"]\n"
    );
    let (code, owned, err) = berth.run(&[
        "run",
        "--rm",
        "--entrypoint",
        "stat",
        name,
        "-c",
        "%u:%g",
        "/owned.txt",
    ]);
    assert_eq!((code, owned.as_str()), (0, "1000:1000\n"), "{err}");
    // ADD unpacked the local archive.
    let (code, packed, err) = berth.run(&[
        "run",
        "--rm",
        "--entrypoint",
        "cat",
        name,
        "/unpacked/packed/file.txt",
    ]);
    assert_eq!((code, packed.as_str()), (0, "packed\n"), "{err}");
}

#[test]
fn a_multi_stage_dockerfile_builds_caches_runs_and_pushes() {
    let Some((berth, dir)) = start("multi_stage", "all") else {
        return;
    };
    let registry = Registry::start("build");
    let path = dir.to_str().unwrap();
    let (code, out, err) = berth.cli(&[
        "build",
        "-t",
        "built:v1",
        "--build-arg",
        "GREETING=hi",
        path,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Step 8/23 : RUN mkdir -p $OUT"), "{out}");
    assert!(out.contains(" ---> Running in "), "{out}");
    assert!(out.ends_with("Successfully tagged built:v1\n"), "{out}");
    assert!(!out.contains("Using cache"), "{out}");
    check_image(&berth, "built:v1");

    // Again: every step from the cache, the same image.
    let (code, again, err) = berth.cli(&[
        "build",
        "-t",
        "built:v1",
        "--build-arg",
        "GREETING=hi",
        path,
    ]);
    assert_eq!(code, 0, "{err}");
    let steps = again.matches("Step ").count();
    let froms = again.matches(" : FROM ").count();
    // Every step but the global ARG (no image) and the FROMs.
    assert_eq!(
        again.matches(" ---> Using cache\n").count(),
        steps - froms - 1,
        "{again}"
    );
    let id = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("Successfully built "))
            .map(str::to_owned)
    };
    assert_eq!(id(&again), id(&out));
    // A source changed: the cache holds up to the COPY that reads it.
    fs::write(dir.join("src/b.txt"), "b2\n").unwrap();
    let (code, changed, err) = berth.cli(&[
        "build",
        "-t",
        "built:v2",
        "--build-arg",
        "GREETING=hi",
        path,
    ]);
    assert_eq!(code, 0, "{err}");
    let cached: Vec<&str> = changed
        .split("Step ")
        .filter(|s| s.contains("Using cache"))
        .map(|s| s.split(" : ").next().unwrap_or_default())
        .collect();
    assert_eq!(cached, ["3/23", "4/23", "5/23", "10/23"], "{changed}");
    // What the book shows: the first build, and the one after the
    // change (IDs differ from run to run: named by their role).
    let ids = regex::Regex::new(r"[0-9a-f]{12}").unwrap();
    let report = format!(
        "$ berth build -t built:v1 --build-arg GREETING=hi .\n{out}\n\
         $ echo b2 > src/b.txt\n$ berth build -t built:v2 --build-arg GREETING=hi .\n{changed}"
    );
    let report = ids.replace_all(&report, "<id>");
    berth_tests::snapshot_settings().bind(|| {
        insta::assert_snapshot!("engine_build_output", report);
    });
    // --no-cache: nothing from it.
    let (code, fresh, err) = berth.cli(&[
        "build",
        "--no-cache",
        "-t",
        "built:v3",
        "--build-arg",
        "GREETING=hi",
        path,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(!fresh.contains("Using cache"), "{fresh}");
    fs::write(dir.join("src/b.txt"), "B\n").unwrap();

    // The docker CLI's classic builder against berth: the same result.
    let mut docker = berth.docker(&[
        "build",
        "-t",
        "dbuilt:v1",
        "--build-arg",
        "GREETING=hi",
        path,
    ]);
    docker.env("DOCKER_BUILDKIT", "0");
    let output = docker.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    check_image(&berth, "dbuilt:v1");
    // Built images are images: push, remove, pull, run.
    let name = format!("{}/built/app:v1", registry.host);
    assert_eq!(berth.run(&["tag", "built:v1", &name]).0, 0);
    let (code, out, err) = berth.cli(&["push", &name]);
    assert_eq!(code, 0, "{out}{err}");
    let pushed = out
        .lines()
        .find_map(|l| l.split(": digest: ").nth(1))
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(berth.run(&["rmi", &name, "built:v1"]).0, 0);
    let (code, out, err) = berth.cli(&["pull", &name]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("Digest: {pushed}")), "{out}");
    check_image(&berth, &name);
    // Intermediate images are not listed.
    let (_, listed, _) =
        berth.run(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(!listed.contains("<none>"), "{listed}");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn build_errors_name_their_line_and_leave_no_container() {
    let Some((berth, dir)) = start("errors", "errors") else {
        return;
    };
    let path = dir.to_str().unwrap();
    let write = |text: &str| fs::write(dir.join("Dockerfile"), text).unwrap();

    write("FROM base:v1\n\nFROB x\n");
    let (code, _, err) = berth.cli(&["build", "-t", "bad:v1", path]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "berth: Error response from daemon: dockerfile parse error on line 3: unknown instruction: FROB\n"
    );

    write("FROM base:v1\nRUN echo before\nRUN exit 3\nRUN echo never\n");
    let (code, out, err) = berth.cli(&["build", "-t", "bad:v1", path]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("before\n"), "{out}");
    assert!(!out.contains("never"), "{out}");
    assert_eq!(
        err,
        "berth: Dockerfile:3: The command '/bin/sh -c exit 3' returned a non-zero code: 3\n"
    );

    // A build of `dockerfile` that fails (exit 1); what it said.
    let failed = |dockerfile: &str| {
        write(dockerfile);
        let (code, _, err) = berth.cli(&["build", path]);
        assert_eq!(code, 1, "{err}");
        err
    };
    let err = failed("FROM base:v1\nCOPY missing.txt /\n");
    assert!(err.contains("Dockerfile:2: COPY failed: file not found in build context or excluded by .dockerignore: stat missing.txt"), "{err}");
    // --chown by a name the image does not have.
    let err = failed("FROM base:v1\nCOPY --chown=ghost src/a.txt /\n");
    assert!(
        err.contains("Dockerfile:2: unable to convert uid/gid chown string to host mapping: ghost"),
        "{err}"
    );
    // The ignored file is as missing as a missing one.
    let err = failed("FROM base:v1\nCOPY src/secret.txt /\n");
    assert!(err.contains("COPY failed: file not found"), "{err}");

    let (_, tagged, _) = berth.run(&["images", "--format", "{{.Repository}}"]);
    assert_eq!(tagged, "base\n");
    let (_, containers, _) = berth.run(&["ps", "-aq"]);
    assert_eq!(containers, "");
    assert!(
        fs::read_dir(berth.data_root().join("builds"))
            .map_or(true, |mut d| d.next().is_none())
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_context_symlink_never_reaches_the_host() {
    let Some((berth, dir)) = start("symlinks", "links") else {
        return;
    };
    let path = dir.to_str().unwrap();
    // A symlink to the host's /etc, and one to a host file.
    std::os::unix::fs::symlink("/etc", dir.join("hostetc")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", dir.join("hostname")).unwrap();
    fs::write(
        dir.join("Dockerfile"),
        "FROM base:v1\nCOPY hostetc/hostname /via-dir\n",
    )
    .unwrap();
    let (code, _, err) = berth.cli(&["build", "-t", "links:v1", path]);
    assert_eq!(code, 1, "the host's /etc/hostname was reached: {err}");
    assert!(err.contains("COPY"), "{err}");
    // The symlink itself is copied, as a symlink.
    fs::write(
        dir.join("Dockerfile"),
        "FROM base:v1\nCOPY hostname /link\n",
    )
    .unwrap();
    let (code, out, err) = berth.cli(&["build", "-t", "links:v1", path]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) =
        berth.run(&["run", "--rm", "links:v1", "readlink", "/link"]);
    assert_eq!((code, out.as_str()), (0, "/etc/hostname\n"), "{err}");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn copies_keep_the_image_s_directories_and_entrypoints_their_own_args() {
    let Some((berth, dir)) = start("copy_semantics", "copy") else {
        return;
    };
    let path = dir.to_str().unwrap();
    fs::write(
        dir.join("Dockerfile"),
        "FROM base:v1 AS first\n\
         COPY src/a.txt /tmp/a.txt\n\
         COPY src/b.txt /etc\n\
         COPY --chown=nobody:tty src/a.txt /named.txt\n\
         ENTRYPOINT [\"sh\", \"-c\", \"stat -c %a /tmp; cat /etc/b.txt /tmp/a.txt; stat -c %u:%g /named.txt; echo args:$1\", \"zero\"]\n\
         FROM base:v1\n\
         RUN echo second stage\n",
    )
    .unwrap();
    // --target: the first stage only (the docker CLI sends it).
    let mut docker =
        berth.docker(&["build", "--target", "first", "-t", "first:v1", path]);
    docker.env("DOCKER_BUILDKIT", "0");
    let output = docker.output().unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!out.contains("second stage"), "{out}");
    // /tmp keeps its 1777 under the copied file; a file copied onto an
    // existing directory goes into it; the base image's CMD (sh) is no
    // argument to the new ENTRYPOINT.
    let (code, out, err) = berth.run(&["run", "--rm", "first:v1"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "1777\nB\nA\n65534:5\nargs:\n"),
        "{err}"
    );
    let _ = fs::remove_dir_all(&dir);
}

/// A 512-byte ustar header block for `path`, of `kind` and `size`.
fn block(path: &str, kind: tar::EntryType, size: u64) -> Vec<u8> {
    let mut header = tar::Header::new_ustar();
    header.set_path(path).unwrap();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    header.as_bytes().to_vec()
}

/// `bytes` padded to a whole number of 512-byte blocks.
fn padded(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.resize(bytes.len().div_ceil(512) * 512, 0);
    bytes
}

#[test]
fn a_hostile_add_archive_cannot_write_outside_its_destination() {
    let Some((berth, dir)) = start("hostile_add", "add") else {
        return;
    };
    let path = dir.to_str().unwrap();
    // A PAX record says entry `a` has no data while its ustar header
    // says 512 bytes. A reader that honours PAX (tar-rs, step 7) then
    // sees `x` next, whose data holds a whole header for /etc/evil. A
    // copy that kept a's header (512) but wrote what was read (nothing)
    // would shift every block after it: the layer's reader would take
    // x's header for a's data, and x's data for the header of
    // /etc/evil, outside the destination.
    let mut evil = Vec::new();
    evil.extend(block("PaxHeaders/a", tar::EntryType::XHeader, 9));
    evil.extend(padded(b"9 size=0\n".to_vec()));
    evil.extend(block("a", tar::EntryType::Regular, 512));
    let mut inner = block("etc/evil", tar::EntryType::Regular, 6);
    inner.extend(padded(b"pwned\n".to_vec()));
    evil.extend(block("x", tar::EntryType::Regular, inner.len() as u64));
    evil.extend(inner);
    evil.extend(vec![0u8; 1024]);
    fs::write(dir.join("src/evil.tar"), evil).unwrap();
    fs::write(
        dir.join("Dockerfile"),
        "FROM base:v1\nADD src/evil.tar /unpacked/\n",
    )
    .unwrap();
    let (code, out, err) = berth.cli(&["build", "-t", "added:v1", path]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = berth.run(&[
        "run",
        "--rm",
        "added:v1",
        "sh",
        "-c",
        "ls /unpacked; test -e /etc/evil && echo ESCAPED; true",
    ]);
    assert_eq!((code, out.as_str()), (0, "a\nx\n"), "{err}");
    let _ = fs::remove_dir_all(&dir);
}
