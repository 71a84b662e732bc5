//! The OCI spec berth daemon writes, against the one dockerd (Debian's
//! docker.io) writes for the same `docker run` flags, field by field.
//! The snapshot is the list of differences; each is explained in
//! `final/src/daemon/spec.rs`'s documentation.

use berth_tests::daemons::{Berth, Dockerd};
use berth_tests::fixture::rootfs;
use berth_tests::{privileged, snapshot_settings, step_binary, workspace_root};
use std::collections::BTreeMap;
use std::str::FromStr;

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
        "linux.seccomp.defaultAction": linux["seccomp"].get("defaultAction").cloned().unwrap_or(Value::Null),
        "linux.seccomp.defaultErrnoRet": linux["seccomp"].get("defaultErrnoRet").cloned().unwrap_or(Value::Null),
        "hooks": spec["hooks"].as_object().map(|h| h.keys().cloned().collect::<Vec<_>>()),
    })
}

/// What a seccomp profile does with each x86_64 system call it names:
/// its rules for that call in order, up to the first without argument
/// conditions (the first rule that matches decides).
fn seccomp_verdicts(seccomp: &Value) -> BTreeMap<String, String> {
    let mut verdicts: BTreeMap<String, (String, bool)> = BTreeMap::new();
    for rule in seccomp["syscalls"].as_array().into_iter().flatten() {
        let mut verdict = rule["action"]
            .as_str()
            .unwrap_or("?")
            .trim_start_matches("SCMP_ACT_")
            .to_ascii_lowercase();
        if let Some(errno) = rule["errnoRet"].as_u64() {
            verdict.push_str(&format!("({errno})"));
        }
        let args = rule["args"].as_array().filter(|a| !a.is_empty());
        if let Some(args) = args {
            let conditions: Vec<String> = args
                .iter()
                .map(|a| {
                    format!(
                        "arg{} {} {:#x}{}",
                        a["index"],
                        a["op"]
                            .as_str()
                            .unwrap_or("?")
                            .trim_start_matches("SCMP_CMP_"),
                        a["value"].as_u64().unwrap_or(0),
                        a["valueTwo"]
                            .as_u64()
                            .filter(|v| *v != 0)
                            .map(|v| format!("/{v:#x}"))
                            .unwrap_or_default(),
                    )
                })
                .collect();
            verdict.push_str(&format!(" if {}", conditions.join(" and ")));
        }
        for name in rule["names"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap_or("").to_owned();
            if syscalls::Sysno::from_str(&name).is_err() {
                continue;
            }
            let entry = verdicts.entry(name).or_default();
            if entry.1 {
                continue;
            }
            if !entry.0.is_empty() {
                entry.0.push_str("; ");
            }
            entry.0.push_str(&verdict);
            entry.1 = args.is_none();
        }
    }
    verdicts.into_iter().map(|(k, (v, _))| (k, v)).collect()
}

/// The system calls two profiles treat differently, one line each.
fn seccomp_differences(dockerd: &Value, berth: &Value) -> String {
    let (theirs, ours) = (seccomp_verdicts(dockerd), seccomp_verdicts(berth));
    let mut names: Vec<&String> = theirs.keys().chain(ours.keys()).collect();
    names.sort();
    names.dedup();
    let default = |v: &Value| {
        format!(
            "{}(default)",
            v["defaultAction"]
                .as_str()
                .unwrap_or("none")
                .trim_start_matches("SCMP_ACT_")
                .to_ascii_lowercase()
        )
    };
    let mut out = String::new();
    for name in names {
        let t = theirs
            .get(name)
            .cloned()
            .unwrap_or_else(|| default(dockerd));
        let o = ours.get(name).cloned().unwrap_or_else(|| default(berth));
        if t != o {
            out.push_str(&format!("  {name}: dockerd {t}; berth {o}\n"));
        }
    }
    out
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
    let mut first_seccomp: Option<String> = None;
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
        let ours = berth.bundle_config(id.trim());
        let dockerd_spec = dockerd.bundle_config(&name);
        let seccomp = seccomp_differences(
            &dockerd_spec["linux"]["seccomp"],
            &ours["linux"]["seccomp"],
        );
        let (ours, theirs) = (summary(&ours), summary(&dockerd_spec));
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
            "({differ} of {} fields differ)\n",
            theirs.as_object().unwrap().len()
        ));
        if n > 0 && first_seccomp.as_deref() == Some(seccomp.as_str()) {
            report.push_str(
                "system calls the seccomp profiles treat differently: as above\n\n",
            );
        } else {
            report.push_str(&format!(
                "system calls the seccomp profiles treat differently:\n{seccomp}\n"
            ));
        }
        first_seccomp.get_or_insert(seccomp);
        let _ = dockerd.docker(&["rm", "-f", &name]).output();
        berth.run(&["rm", "-f", &name]);
    }
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("engine_spec_vs_dockerd", report));
}
