//! The runtime spec's MUSTs (`runtime.md`), one test per section, each
//! quoting what it checks. Where berth-runtime follows runc instead of the
//! spec, the test says so and checks what it does.
//!
//! <https://github.com/opencontainers/runtime-spec/blob/main/runtime.md>

mod oci;

use std::fs;
use std::path::Path;

use berth_tests::privileged;
use oci::{bundle, fresh_root, runtime, state, wait_for};
use serde_json::{Value, json};

/// A fresh root, named for this file.
fn root(name: &str) -> String {
    fresh_root(&format!("conformance-{name}"))
}

/// A bundle whose process runs `script`.
fn sh(name: &str, script: &str) -> String {
    bundle(name, |c| c["process"]["args"] = json!(["sh", "-c", script]))
}

#[test]
fn state_has_the_required_fields() {
    if !privileged("runtime_conformance::state") {
        return;
    }
    // "ociVersion (string, REQUIRED) ... id (string, REQUIRED) ... status
    // (string, REQUIRED) ... pid (int, REQUIRED when status is created or
    // running on Linux) ... bundle (string, REQUIRED) ... annotations (map,
    // OPTIONAL)"
    let root = root("state");
    let dir = bundle("conformance-state", |c| {
        c["process"]["args"] = json!(["sleep", "1000"]);
        c["annotations"] = json!({"org.example.key": "value"});
    });
    let (code, _, err) = runtime(&root, &["create", "--bundle", &dir, "s1"]);
    assert_eq!(code, 0, "{err}");
    for status in ["created", "running"] {
        let shown = state(&root, "s1");
        assert!(shown["ociVersion"].is_string());
        assert_eq!(shown["id"], "s1");
        assert_eq!(shown["status"], status);
        assert!(shown["pid"].as_i64().unwrap() > 0, "pid when {status}");
        let bundle = fs::canonicalize(&dir).unwrap();
        assert_eq!(shown["bundle"], json!(bundle));
        assert_eq!(shown["annotations"]["org.example.key"], "value");
        if status == "created" {
            let (code, _, err) = runtime(&root, &["start", "s1"]);
            assert_eq!(code, 0, "{err}");
        }
    }
    // "Attempting to query a container that does not exist MUST generate
    // an error."
    let (code, _, err) = runtime(&root, &["state", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("does not exist"), "{err}");
    let (code, _, _) = runtime(&root, &["delete", "--force", "s1"]);
    assert_eq!(code, 0);
}

#[test]
fn create_refuses_a_taken_or_invalid_id_and_ignores_later_changes() {
    if !privileged("runtime_conformance::create") {
        return;
    }
    let root = root("create");
    let dir = sh("conformance-create", "echo original");
    // Its own stdout file: the container writes there after create.
    let out_dir = std::path::PathBuf::from(format!("{root}.create"));
    let program = berth_tests::step_binary("berth-runtime");
    let args = ["--root", &root, "create", "--bundle", &dir, "c1"];
    let created = berth_tests::run_to_files(&program, &args, &out_dir, |_| {});
    assert_eq!(created.code, 0, "{}", created.render());
    // "If the ID provided is not unique across all containers within the
    // scope of the runtime, or is not valid in any other way, the
    // implementation MUST generate an error and a new container MUST NOT
    // be created."
    let (code, _, err) = runtime(&root, &["create", "--bundle", &dir, "c1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already exists"), "{err}");
    let (code, _, _) = runtime(&root, &["create", "--bundle", &dir, "a/b"]);
    assert_eq!(code, 1);
    assert!(!Path::new(&root).join("a").exists());
    // An id is a file name: 255 bytes is the most, and is accepted.
    let longest = "l".repeat(255);
    let other = sh("conformance-create-longest", "true");
    let (code, _, err) =
        runtime(&root, &["create", "--bundle", &other, &longest]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = runtime(&root, &["delete", &longest]);
    assert_eq!(code, 0, "{err}");
    let (code, _, _) =
        runtime(&root, &["create", "--bundle", &other, &"l".repeat(256)]);
    assert_eq!(code, 1);
    // "Any changes made to the config.json file after this operation will
    // not have an effect on the container."
    let path = format!("{dir}/config.json");
    let mut config: Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    config["process"]["args"] = json!(["sh", "-c", "echo changed"]);
    fs::write(&path, config.to_string()).unwrap();
    let (code, _, err) = runtime(&root, &["start", "c1"]);
    assert_eq!(code, 0, "{err}");
    wait_for(&root, "c1", "stopped");
    // The container's stdout is the file create had as stdout.
    let shown = fs::read_to_string(out_dir.join("stdout")).unwrap();
    assert_eq!(shown, "original\n", "the process changed after create");
    let (code, _, _) = runtime(&root, &["delete", "c1"]);
    assert_eq!(code, 0);
}

#[test]
fn start_kill_and_delete_refuse_what_the_status_does_not_allow() {
    if !privileged("runtime_conformance::start_kill_delete") {
        return;
    }
    let root = root("operations");
    let dir = bundle("conformance-operations", |c| {
        c["process"]["args"] = json!(["sleep", "1000"]);
    });
    let (code, _, err) = runtime(&root, &["run", "-d", "--bundle", &dir, "o1"]);
    assert_eq!(code, 0, "{err}");
    let pid = state(&root, "o1")["pid"].clone();
    // start: "Attempting to start a container that is not created MUST
    // have no effect on the container and MUST generate an error."
    let (code, _, _) = runtime(&root, &["start", "o1"]);
    assert_eq!(code, 1);
    // delete: "Attempting to delete a container that is not stopped MUST
    // have no effect on the container and MUST generate an error."
    let (code, _, _) = runtime(&root, &["delete", "o1"]);
    assert_eq!(code, 1);
    let after = state(&root, "o1");
    assert_eq!(
        (after["status"].as_str(), &after["pid"]),
        (Some("running"), &pid)
    );
    let (code, _, err) = runtime(&root, &["kill", "o1", "KILL"]);
    assert_eq!(code, 0, "{err}");
    wait_for(&root, "o1", "stopped");
    // kill: "Attempting to send a signal to a container that is neither
    // created nor running MUST have no effect on the container and MUST
    // generate an error."
    let (code, _, _) = runtime(&root, &["kill", "o1", "KILL"]);
    assert_eq!(code, 1);
    assert_eq!(state(&root, "o1")["status"], "stopped");
    // delete: "Deleting a container MUST delete the resources that were
    // created during the create step."
    let (code, _, err) = runtime(&root, &["delete", "o1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::read_dir(&root).unwrap().count(), 0);
    oci::assert_cgroup_removed("conformance-operations");
    // Deviation, as runc (containerd's created-state delete relies on
    // it; `features` says so): delete of a *created* container kills it
    // and deletes it instead of failing.
    let (code, _, err) = runtime(&root, &["create", "--bundle", &dir, "o2"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = runtime(&root, &["delete", "o2"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_failing_hook_stops_the_container_and_the_poststop_hooks_run() {
    if !privileged("runtime_conformance::failing_hooks") {
        return;
    }
    // "If any prestart hook fails, the runtime MUST generate an error,
    // stop the container, and continue the lifecycle at step 12" (the
    // poststop hooks); the same is said of createRuntime,
    // createContainer and startContainer.
    let log = fs::canonicalize("target")
        .unwrap()
        .join("test-runtime/conformance-hooks.log");
    for stage in [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
    ] {
        let _ = fs::remove_file(&log);
        let root = root(&format!("hook-{stage}"));
        let name = format!("conformance-hook-{}", stage.to_lowercase());
        let record = format!("echo poststop >> {}", log.display());
        let dir = bundle(&name, |c| {
            c["process"]["args"] = json!(["true"]);
            c["hooks"] = json!({
                stage: [{"path": "/bin/false"}],
                "poststop": [{"path": "/bin/sh", "args": ["sh", "-c", record]}],
            });
        });
        let (code, _, err) = runtime(&root, &["run", "--bundle", &dir, "h1"]);
        assert_ne!(code, 0, "{stage}: the container ran: {err}");
        assert!(err.contains(stage), "{stage}: {err}");
        assert_eq!(
            fs::read_to_string(&log).unwrap_or_default(),
            "poststop\n",
            "{stage}: the poststop hooks did not run"
        );
        assert_eq!(fs::read_dir(&root).unwrap().count(), 0, "{stage}");
        oci::assert_cgroup_removed(&name);
    }
}
