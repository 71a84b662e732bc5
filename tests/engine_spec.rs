//! The OCI spec berth daemon writes, against the one dockerd (Debian's
//! docker.io) writes for the same `docker run` flags, field by field.
//! The snapshot is the list of differences; each is explained in
//! `final/src/daemon/spec.rs`'s documentation.

use berth_tests::daemons::{Berth, Dockerd};
use berth_tests::fixture::rootfs;
use berth_tests::{privileged, snapshot_settings, step_binary, workspace_root};
use serde_json::{Value, json};

/// A value with what means "not set" made one: absent, `false`, `0`,
/// empty, and the zero defaults dockerd writes out (`"shares": 0`,
/// `"disableOOMKiller": false`).
fn unset(value: &Value) -> Value {
    match value {
        Value::Bool(false) => Value::Null,
        Value::Number(n) if n.as_f64() == Some(0.0) => Value::Null,
        Value::Array(a) if a.is_empty() => Value::Null,
        Value::Object(o) => {
            let kept: serde_json::Map<String, Value> = o
                .iter()
                .map(|(k, v)| (k.clone(), unset(v)))
                .filter(|(_, v)| !v.is_null())
                .collect();
            if kept.is_empty() {
                Value::Null
            } else {
                Value::Object(kept)
            }
        }
        other => other.clone(),
    }
}

/// What is compared of a spec: everything but host paths and ids.
fn summary(spec: &Value) -> Value {
    let sorted = |v: &Value| -> Value {
        let mut items: Vec<String> = v
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| {
                        x.as_str().map_or_else(|| x.to_string(), str::to_owned)
                    })
                    .collect()
            })
            .unwrap_or_default();
        items.sort();
        json!(items)
    };
    let process = &spec["process"];
    let caps = &process["capabilities"];
    let mounts: Vec<Value> = spec["mounts"]
        .as_array()
        .map(|m| {
            let mut m: Vec<Value> = m
                .iter()
                .map(|m| {
                    json!({
                        "destination": m["destination"],
                        "type": m["type"],
                        "options": sorted(&m["options"]),
                    })
                })
                .collect();
            m.sort_by_key(|m| {
                m["destination"].as_str().unwrap_or("").to_owned()
            });
            m
        })
        .unwrap_or_default();
    let linux = &spec["linux"];
    let mut namespaces: Vec<String> = linux["namespaces"]
        .as_array()
        .map(|n| {
            n.iter()
                .map(|n| n["type"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default();
    namespaces.sort();
    let env = process["env"].as_array().map(|e| {
        let mut e: Vec<String> = e
            .iter()
            .filter_map(|v| v.as_str())
            // The container's id differs between the two daemons.
            .map(|v| {
                if v.starts_with("HOSTNAME=") {
                    "HOSTNAME=[ID]".to_owned()
                } else {
                    v.to_owned()
                }
            })
            .collect();
        e.sort();
        e
    });
    json!({
        "process.terminal": process["terminal"],
        "process.user": process["user"],
        "process.args": process["args"],
        "process.env": env,
        "process.cwd": process["cwd"],
        "process.capabilities.bounding": sorted(&caps["bounding"]),
        "process.capabilities.effective": sorted(&caps["effective"]),
        "process.capabilities.permitted": sorted(&caps["permitted"]),
        "process.capabilities.ambient": sorted(&caps["ambient"]),
        "process.noNewPrivileges": process["noNewPrivileges"],
        "process.rlimits": process["rlimits"],
        "process.oomScoreAdj": process["oomScoreAdj"],
        "process.apparmorProfile": process["apparmorProfile"],
        "root.readonly": spec["root"]["readonly"],
        "hostname": if spec["hostname"].as_str().is_some_and(|h| h.len() == 12) { json!("[ID]") } else { spec["hostname"].clone() },
        "mounts": mounts,
        "linux.namespaces": namespaces,
        "linux.maskedPaths": sorted(&linux["maskedPaths"]),
        "linux.readonlyPaths": sorted(&linux["readonlyPaths"]),
        "linux.resources.memory": linux["resources"]["memory"],
        "linux.resources.cpu": linux["resources"]["cpu"],
        "linux.resources.pids": linux["resources"]["pids"],
        "linux.resources.devices": linux["resources"]["devices"],
        "linux.sysctl": linux["sysctl"],
        "linux.seccomp": linux["seccomp"].get("defaultAction").cloned().unwrap_or(Value::Null),
        "hooks": spec["hooks"].as_object().map(|h| h.keys().cloned().collect::<Vec<_>>()),
    })
}

#[test]
fn the_spec_is_dockers_for_the_same_flags() {
    if !privileged("engine_spec::dockerd_comparison") {
        return;
    }
    let runtime = workspace_root().join(step_binary("berth-runtime"));
    let dockerd = Dockerd::start("spec", &runtime);
    let image = dockerd.load_rootfs(rootfs());
    let berth = Berth::start("spec", &[]);
    berth.load_rootfs(rootfs(), image);
    // Not --privileged: no runtime can grant every capability on a
    // machine whose bounding set lacks one (this one lacks
    // CAP_SYS_RESOURCE), so dockerd's spec for it cannot be captured here.
    let cases: [(&str, &[&str]); 3] = [
        ("defaults", &[]),
        (
            "flags",
            &[
                "--cap-add",
                "NET_ADMIN",
                "--cap-drop",
                "CHOWN",
                "--read-only",
                "--memory",
                "64m",
                "--cpus",
                "1.5",
                "--pids-limit",
                "100",
                "--ulimit",
                "nofile=1024:1024",
                "-u",
                "nobody",
                "-w",
                "/tmp",
                "-e",
                "A=1",
                "--tmpfs",
                "/run:size=1m",
                "--hostname",
                "box",
                "--security-opt",
                "no-new-privileges",
            ],
        ),
        ("host network", &["--network", "host"]),
    ];
    let mut report = String::new();
    for (n, (case, flags)) in cases.iter().enumerate() {
        let name = format!("spec{n}");
        let mut args = vec!["run", "-d", "--name", &name];
        args.extend_from_slice(flags);
        args.extend([image, "sleep", "1000"]);
        // dockerd runs it with berth-runtime: runc refuses --privileged on
        // a machine whose bounding set lacks a capability. The spec is
        // dockerd's either way.
        let mut dockerd_args = args.clone();
        dockerd_args.splice(2..2, ["--runtime", "berth"]);
        let theirs = dockerd.docker(&dockerd_args).output().unwrap();
        assert!(
            theirs.status.success(),
            "dockerd: {}",
            String::from_utf8_lossy(&theirs.stderr)
        );
        let (code, id, err) = berth.run(&args);
        assert_eq!(code, 0, "berth: {err}");
        let ours: Value = serde_json::from_slice(
            &std::fs::read(
                berth
                    .data_root()
                    .join("containers")
                    .join(id.trim())
                    .join("config.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let (ours, theirs) =
            (summary(&ours), summary(&dockerd.bundle_config(&name)));
        report.push_str(&format!("## {case}: {}\n", flags.join(" ")));
        let mut differ = 0;
        for (field, dockerd_value) in theirs.as_object().unwrap() {
            let berth_value = &ours[field];
            if unset(berth_value) != unset(dockerd_value) {
                differ += 1;
                report.push_str(&format!("{field}\n  dockerd: {dockerd_value}\n  berth:   {berth_value}\n"));
            }
        }
        report.push_str(&format!(
            "({differ} of {} fields differ)\n\n",
            theirs.as_object().unwrap().len()
        ));
        let _ = dockerd.docker(&["rm", "-f", &name]).output();
        berth.run(&["rm", "-f", &name]);
    }
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("engine_spec_vs_dockerd", report));
}
