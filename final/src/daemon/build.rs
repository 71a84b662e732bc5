//! `POST /build`: Docker's classic builder. The request's body is the
//! build context (a tar); the answer streams `{"stream": …}` lines.
//!
//! ```text
//!   Step 3/9 : RUN make
//!    ---> Running in 4f2a…        a container of the engine, from the
//!                                  image so far; its upper directory
//!    ---> 9c1e…                    committed as a layer (image::draft)
//!   Step 4/9 : COPY app /app       a layer made from the context
//!    ---> Using cache              the same parent, instruction (and
//!    ---> 77ab…                    content) built before
//! ```
//!
//! Each step's image is kept in the store as an *intermediate* image,
//! unlisted, under its cache key: the sha256 of the parent image's ID,
//! the instruction after substitution, and for `COPY`/`ADD` the digest of
//! the layer made (that is, of every file's content and metadata), for
//! `RUN` the build arguments it sees. The next build with the same key
//! takes the image instead of running the step (`--no-cache`: never).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bollard::models::{ContainerConfig, HostConfig};
use serde_json::{Value, json};

use super::containers::{Engine, Error, blocking, random_id};
use crate::build::context;
use crate::build::dockerfile::{self, Command, Instruction, Step};
use crate::build::ignore::Ignore;
use crate::image::digest::Digest;
use crate::image::draft::Draft;
use crate::image::lookup;
use crate::image::reference::Reference;
use crate::image::store::manifest_descriptor;
use crate::registry::manifest::Platform;
use crate::registry::progress::Progress;

/// The biggest Dockerfile read.
const MAX_DOCKERFILE: u64 = 1 << 20;

/// What `POST /build` asks.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `t`: the names of the result.
    pub tags: Vec<Reference>,
    /// `dockerfile`: its path in the context.
    pub dockerfile: String,
    /// `buildargs`.
    pub build_args: BTreeMap<String, String>,
    /// `nocache`.
    pub no_cache: bool,
    /// `target`: the stage to stop after.
    pub target: Option<String>,
}

/// An image made by a step: its manifest and its ID.
type Made = (Digest, Digest);

/// A stage as later ones see it: its name, and the image it has made.
type Done = (Option<String>, Option<Made>);

/// One stage's state as the steps go.
struct Stage {
    name: Option<String>,
    draft: Draft,
    /// The image so far: its manifest and ID.
    image: Option<(Digest, Digest)>,
    args: BTreeMap<String, String>,
    /// The ARGs declared before the first FROM, for `ARG NAME` alone.
    globals: BTreeMap<String, String>,
    /// Whether this stage set `CMD` (an `ENTRYPOINT` clears one it
    /// inherited, as in Docker).
    cmd_here: bool,
}

impl Stage {
    /// Add `keys` to the config's set `name` (`ExposedPorts`, `Volumes`:
    /// objects of empty objects).
    fn add_keys(&mut self, name: &str, keys: &[String]) {
        let settings = self.draft.settings();
        let set = settings.entry(name).or_insert_with(|| json!({}));
        if !set.is_object() {
            *set = json!({});
        }
        for key in keys {
            set[key.as_str()] = json!({});
        }
    }

    /// `path` as it is meant in the image: itself if absolute, else
    /// under the config's `WorkingDir` (`/` if none).
    fn under_workdir(&mut self, path: &str) -> String {
        if path.starts_with('/') {
            return path.to_owned();
        }
        let workdir = self
            .draft
            .settings()
            .get("WorkingDir")
            .and_then(Value::as_str)
            .unwrap_or("/")
            .to_owned();
        format!("{}/{path}", workdir.trim_end_matches('/'))
    }

    /// The shell of the shell form: the config's `Shell` (SHELL, here or
    /// in the base image), else `/bin/sh -c`.
    fn shell(&mut self) -> Vec<String> {
        self.draft
            .settings()
            .get("Shell")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .filter(|s: &Vec<String>| !s.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    /// The argv of `command`: the exec form as it is, the shell form
    /// after the stage's shell.
    fn argv(&mut self, command: &Command) -> Vec<String> {
        match command {
            Command::Exec(words) => words.clone(),
            Command::Shell(line) => {
                let mut argv = self.shell();
                argv.push(line.clone());
                argv
            }
        }
    }

    /// `NAME=value` of the config's `Env`.
    fn env(&mut self) -> Vec<String> {
        self.draft
            .settings()
            .get("Env")
            .and_then(|e| serde_json::from_value(e.clone()).ok())
            .unwrap_or_default()
    }

    /// `text` with the config's `Env` (first) and the stage's arguments
    /// substituted.
    fn substitute(&mut self, text: &str) -> String {
        let env = self.env();
        let args = self.args.clone();
        let lookup = |name: &str| {
            env.iter()
                .rev()
                .find_map(|kv| {
                    kv.strip_prefix(&format!("{name}=")).map(str::to_owned)
                })
                .or_else(|| args.get(name).cloned())
        };
        dockerfile::substitute(text, &lookup)
    }
}

/// Unpack the context tar `reader` into a new directory of
/// `DATA_ROOT/builds/`.
pub async fn receive(
    engine: &Arc<Engine>,
    reader: crate::channel_io::ChannelReader,
) -> Result<Workspace, Error> {
    let workspace =
        Workspace(engine.config.data_root.join("builds").join(random_id()?));
    let made = workspace.path().join("context");
    blocking(move || {
        let mut reader = reader;
        std::fs::create_dir_all(&made)
            .map_err(crate::path_io::at("create", &made))?;
        let put =
            super::archive::put(&made, "/", "the build context", &mut reader);
        super::http::drain(&mut reader);
        put
    })
    .await??;
    Ok(workspace)
}

/// Read `name` of the context (resolved inside it), at most `limit`
/// bytes; `None` if it is not there.
fn read_in(
    root: &Path,
    name: &str,
    limit: u64,
) -> Result<Option<Vec<u8>>, Error> {
    // A regular file of a bounded size, before a byte is read (Go's
    // file mode bits of every other kind: directory, symlink, device,
    // pipe, socket, character device).
    let stat = match super::archive::stat(root, name, "the build context") {
        Ok(stat) => stat,
        Err(Error::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let kinds: u64 =
        (1 << 31) | (1 << 27) | (1 << 26) | (1 << 25) | (1 << 24) | (1 << 21);
    if stat["mode"].as_u64().unwrap_or(kinds) & kinds != 0 {
        return Err(Error::BadRequest(format!("{name} is not a regular file")));
    }
    if stat["size"].as_u64().unwrap_or(u64::MAX) > limit {
        return Err(Error::BadRequest(format!(
            "{name} is larger than {limit} bytes"
        )));
    }
    let mut bytes = Vec::new();
    match super::archive::get(root, name, "the build context", &mut bytes) {
        Ok(()) => {}
        Err(Error::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut tar = tar::Archive::new(&bytes[..]);
    let mut entries =
        tar.entries().map_err(|e| Error::Internal(e.to_string()))?;
    let Some(Ok(entry)) = entries.next() else {
        return Ok(None);
    };
    if !entry.header().entry_type().is_file() {
        return Err(Error::BadRequest(format!("{name} is not a file")));
    }
    let mut out = Vec::new();
    entry
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::Internal(e.to_string()))?;
    if out.len() as u64 > limit {
        return Err(Error::BadRequest(format!(
            "{name} is larger than {limit} bytes"
        )));
    }
    Ok(Some(out))
}

/// Parse the request's Dockerfile; the steps and the `.dockerignore`.
pub fn plan(
    dir: &Path,
    options: &Options,
) -> Result<(Vec<Step>, Ignore), Error> {
    let root = dir.join("context");
    let name = if options.dockerfile.is_empty() {
        "Dockerfile"
    } else {
        &options.dockerfile
    };
    let source = read_in(&root, name, MAX_DOCKERFILE)?.ok_or_else(|| {
        Error::BadRequest(format!("Cannot locate specified Dockerfile: {name}"))
    })?;
    let steps = dockerfile::parse(&String::from_utf8_lossy(&source))
        .map_err(|e| Error::BadRequest(e.to_string()))?;
    let ignore = read_in(&root, ".dockerignore", MAX_DOCKERFILE)?
        .map(|b| Ignore::parse(&String::from_utf8_lossy(&b)))
        .unwrap_or_default();
    Ok((steps, ignore))
}

/// The short ID Docker prints.
fn short(id: &Digest) -> String {
    id.hex()[..12].to_owned()
}

/// Run the build: every step, then the names. The final image's ID.
pub async fn run(
    engine: &Arc<Engine>,
    dir: &Path,
    steps: Vec<Step>,
    ignore: Ignore,
    options: &Options,
    progress: &Progress,
) -> Result<Digest, Error> {
    let total = steps.len();
    let mut global: BTreeMap<String, String> = BTreeMap::new();
    let mut stages: Vec<Stage> = Vec::new();
    let context = dir.join("context");
    for (n, step) in steps.iter().enumerate() {
        if progress.abandoned() {
            return Err(Error::Internal("the client went away".into()));
        }
        // `--target`: the stage named is done when the next begins.
        let next_stage = matches!(step.instruction, Instruction::From { .. });
        if next_stage
            && options.target.is_some()
            && stages.last().is_some_and(|s| s.name == options.target)
        {
            break;
        }
        progress.stream(format!("Step {}/{total} : {}\n", n + 1, step.text));
        if let Instruction::From { image, alias, .. } = &step.instruction {
            let lookup = |name: &str| global.get(name).cloned();
            let image = dockerfile::substitute(image, &lookup);
            let stage =
                from(engine, &stages, &image, alias.clone(), &global, progress)
                    .await?;
            if let Some((_, id)) = &stage.image {
                progress.stream(format!(" ---> {}\n", short(id)));
            }
            stages.push(stage);
            continue;
        }
        let done_stages = stages_done(&stages);
        let Some(stage) = stages.last_mut() else {
            // ARG before the first FROM: for FROM lines only.
            if let Instruction::Arg { name, default } = &step.instruction {
                let value =
                    options.build_args.get(name).cloned().or(default.clone());
                global.insert(name.clone(), value.unwrap_or_default());
            }
            continue;
        };
        let at_line = |e: Error| match e {
            Error::BadRequest(m) => {
                Error::BadRequest(format!("Dockerfile:{}: {m}", step.line))
            }
            other => other,
        };
        let done = execute(
            engine,
            stage,
            &done_stages,
            step,
            &context,
            &ignore,
            options,
            progress,
        )
        .await
        .map_err(at_line)?;
        progress.stream(format!(" ---> {}\n", short(&done.1)));
        stage.image = Some(done);
    }
    if let Some(target) = &options.target
        && !stages.iter().any(|s| s.name.as_ref() == Some(target))
    {
        return Err(Error::BadRequest(format!(
            "failed to reach build target {target} in Dockerfile"
        )));
    }
    let last = stages.last().ok_or_else(|| {
        Error::BadRequest("the Dockerfile has no FROM".into())
    })?;
    let (manifest, id) = last.image.clone().ok_or_else(|| {
        Error::BadRequest("the last stage made no image".into())
    })?;
    let store = engine.store.clone();
    let tags = options.tags.clone();
    blocking(move || -> Result<(), Error> {
        let _lock = store.lock()?;
        let size = store.size(&manifest)?;
        for tag in &tags {
            store.tag(Some(tag), &manifest_descriptor(&manifest, size))?;
        }
        // Unnamed, it is listed as <none> all the same, not hidden as
        // a step of the cache.
        if tags.is_empty() {
            store.tag(None, &manifest_descriptor(&manifest, size))?;
        }
        Ok(())
    })
    .await??;
    progress.aux(json!({ "ID": id.to_string() }));
    progress.stream(format!("Successfully built {}\n", short(&id)));
    for tag in &options.tags {
        progress.stream(format!("Successfully tagged {}\n", tag.familiar()));
    }
    Ok(id)
}

/// The names and images of the stages so far, for `FROM` and
/// `COPY --from`.
fn stages_done(stages: &[Stage]) -> Vec<Done> {
    stages
        .iter()
        .map(|s| (s.name.clone(), s.image.clone()))
        .collect()
}

/// `FROM`: an earlier stage, `scratch`, an image of the store, or one
/// pulled.
async fn from(
    engine: &Arc<Engine>,
    stages: &[Stage],
    image: &str,
    alias: Option<String>,
    global: &BTreeMap<String, String>,
    progress: &Progress,
) -> Result<Stage, Error> {
    let stage = |draft: Draft, image: Option<(Digest, Digest)>| Stage {
        name: alias.clone(),
        draft,
        image,
        args: BTreeMap::new(),
        globals: global.clone(),
        cmd_here: false,
    };
    if let Some(earlier) = stages
        .iter()
        .find(|s| s.name.as_deref() == Some(&image.to_ascii_lowercase()))
    {
        return Ok(stage(earlier.draft.clone(), earlier.image.clone()));
    }
    if image == "scratch" {
        return Ok(stage(Draft::scratch(&Platform::host().architecture), None));
    }
    let found = {
        let store = engine.store.clone();
        let name = image.to_owned();
        blocking(move || lookup::find(&store, &name)).await??
    };
    let found = match found {
        Some(found) => found,
        None => {
            let reference: Reference = image.parse().map_err(
                |e: crate::image::reference::BadReference| {
                    Error::BadRequest(e.to_string())
                },
            )?;
            let pulled = crate::registry::pull::pull(
                &engine.registry,
                &engine.store,
                &engine.snapshots,
                &reference,
                &Platform::host(),
                Default::default(),
                progress,
            )
            .await
            .map_err(|e| Error::NotFound(crate::child::error_chain(&e)))?;
            let store = engine.store.clone();
            let id = pulled.id.to_string();
            blocking(move || lookup::find(&store, &id))
                .await??
                .ok_or_else(|| {
                    Error::NotFound(format!("No such image: {image}"))
                })?
        }
    };
    let store = engine.store.clone();
    let manifest = found.manifest.clone();
    let draft = blocking(move || Draft::open(&store, &manifest)).await??;
    Ok(stage(draft, Some((found.manifest, found.id))))
}

// ANCHOR: cache_key
/// The cache key of a step on `parent`.
fn cache_key(parent: Option<&Digest>, text: &str, extra: &str) -> String {
    let parent = parent.map(ToString::to_string).unwrap_or_default();
    // JSON, not a join: no text can pass for another's parts.
    let parts = serde_json::json!([parent, text, extra]).to_string();
    Digest::of(parts.as_bytes()).to_string()
}
// ANCHOR_END: cache_key

/// Run one step of `stage` (not `FROM`): its image's manifest and ID.
#[allow(clippy::too_many_arguments)]
async fn execute(
    engine: &Arc<Engine>,
    stage: &mut Stage,
    stages: &[Done],
    step: &Step,
    context: &Path,
    ignore: &Ignore,
    options: &Options,
    progress: &Progress,
) -> Result<(Digest, Digest), Error> {
    let now = crate::time::rfc3339(SystemTime::now());
    let parent = stage.image.as_ref().map(|(_, id)| id.clone());
    if matches!(step.instruction, Instruction::Cmd(_)) {
        stage.cmd_here = true;
    }
    let text = stage.substitute(&step.text);
    let mut layer: Option<PathBuf> = None;
    let mut copying: Option<(CopyPlan, PathBuf)> = None;
    let mut extra = String::new();
    // What each instruction does to the draft; RUN and COPY make a
    // layer file first (a cache hit throws it away).
    match &step.instruction {
        Instruction::Arg { name, default } => {
            let value = options
                .build_args
                .get(name)
                .cloned()
                .or_else(|| default.as_ref().map(|d| stage.substitute(d)))
                .or_else(|| stage.globals.get(name).cloned())
                .unwrap_or_default();
            extra = format!("{name}={value}");
            stage.args.insert(name.clone(), value);
        }
        Instruction::Run(_) => {
            extra = stage
                .args
                .iter()
                .map(|(k, v)| format!("{k}={v}\n"))
                .collect();
        }
        Instruction::Copy {
            add,
            sources,
            dest,
            from,
            chown,
        } => {
            // An earlier stage's files are all there is to see; the
            // context's, less what .dockerignore excludes.
            let (root, ignore) = match from {
                Some(from) => {
                    let root =
                        stage_root(engine, stages, from, context).await?;
                    (root, Ignore::default())
                }
                None => (context.to_owned(), ignore.clone()),
            };
            let mut expanded = Vec::new();
            for source in sources {
                let source = stage.substitute(source);
                if *add
                    && (source.starts_with("http://")
                        || source.starts_with("https://"))
                {
                    return Err(Error::BadRequest(
                        "ADD of a URL is not supported".into(),
                    ));
                }
                expanded.extend(context::expand(&root, &source, &ignore)?);
            }
            let dest = stage.substitute(dest);
            let dest = stage.under_workdir(&dest);
            // Root's unless --chown says otherwise, as in Docker.
            // Root's unless --chown says otherwise; names are looked up
            // in the image's files once its container is there.
            let chown = chown.as_ref().map(|c| stage.substitute(c));
            let (owner, names) = match &chown {
                None => ((0, 0), None),
                Some(spec) if context::numeric(spec) => {
                    (context::chown(spec, None, None)?, None)
                }
                Some(spec) => ((0, 0), Some(spec.clone())),
            };
            let into = dest.ends_with('/') || expanded.len() > 1;
            let plan = CopyPlan {
                root,
                sources: expanded,
                dest,
                into,
                owner,
                names,
                ignore,
                extract: *add,
            };
            let file = sources_tar(&plan, context).await?;
            extra = digest_of(&file).await?;
            copying = Some((plan, file));
        }
        _ => {}
    }
    let key = cache_key(parent.as_ref(), &text, &extra);
    if !options.no_cache
        && let Some(hit) = cached(engine, &key).await?
    {
        if let Some((_, file)) = copying {
            let _ = std::fs::remove_file(file);
        }
        progress.stream(" ---> Using cache\n".to_owned());
        let store = engine.store.clone();
        let manifest = hit.0.clone();
        stage.draft =
            blocking(move || Draft::open(&store, &manifest)).await??;
        return Ok(hit);
    }
    let settings = |stage: &mut Stage, key: &str, value: Value| {
        stage.draft.settings().insert(key.to_owned(), value);
    };
    let mut empty_layer = true;
    match &step.instruction {
        Instruction::From { .. } => {
            unreachable!("FROM is not a step of a stage")
        }
        Instruction::Arg { .. } => {}
        Instruction::Run(command) => {
            let argv = stage.argv(command);
            let upper =
                run_step(engine, stage, argv, progress, context).await?;
            layer = Some(upper);
            empty_layer = false;
        }
        Instruction::Copy { .. } => {
            let (plan, file) = copying.take().ok_or_else(|| {
                Error::Internal("COPY without its plan".into())
            })?;
            layer = Some(copy_in(engine, stage, plan, file, context).await?);
            empty_layer = false;
        }
        Instruction::Cmd(command) | Instruction::Entrypoint(command) => {
            let argv = stage.argv(command);
            let key = if matches!(step.instruction, Instruction::Cmd(_)) {
                "Cmd"
            } else {
                // A CMD the base image had is no argument for a new
                // ENTRYPOINT.
                if !stage.cmd_here {
                    stage.draft.settings().remove("Cmd");
                }
                "Entrypoint"
            };
            settings(stage, key, json!(argv));
        }
        Instruction::Env(pairs) => {
            let mut env = stage.env();
            for (k, v) in pairs {
                let v = stage.substitute(v);
                env.retain(|kv| !kv.starts_with(&format!("{k}=")));
                env.push(format!("{k}={v}"));
            }
            settings(stage, "Env", json!(env));
        }
        Instruction::Label(pairs) => {
            let mut labels: BTreeMap<String, String> = stage
                .draft
                .settings()
                .get("Labels")
                .and_then(|l| serde_json::from_value(l.clone()).ok())
                .unwrap_or_default();
            for (k, v) in pairs {
                let (k, v) = (stage.substitute(k), stage.substitute(v));
                labels.insert(k, v);
            }
            settings(stage, "Labels", json!(labels));
        }
        Instruction::Workdir(path) => {
            let path = stage.substitute(path);
            let path = stage.under_workdir(&path);
            settings(stage, "WorkingDir", json!(path));
        }
        Instruction::User(user) => {
            let user = stage.substitute(user);
            settings(stage, "User", json!(user));
        }
        Instruction::Expose(ports) => {
            let ports: Vec<String> = ports
                .iter()
                .map(|port| stage.substitute(port))
                .map(|p| {
                    if p.contains('/') {
                        p
                    } else {
                        format!("{p}/tcp")
                    }
                })
                .collect();
            stage.add_keys("ExposedPorts", &ports);
        }
        Instruction::Volume(paths) => {
            let paths: Vec<String> =
                paths.iter().map(|path| stage.substitute(path)).collect();
            stage.add_keys("Volumes", &paths);
        }
        Instruction::Stopsignal(signal) => {
            let signal = stage.substitute(signal);
            settings(stage, "StopSignal", json!(signal));
        }
        Instruction::Shell(words) => {
            settings(stage, "Shell", json!(words));
        }
    }
    let store = engine.store.clone();
    let mut draft = stage.draft.clone();
    let created_by = text.clone();
    let written =
        blocking(move || -> Result<(Draft, Digest, Digest), Error> {
            let _lock = store.lock()?;
            match &layer {
                Some(file) => {
                    let tar = std::fs::File::open(file)
                        .map_err(crate::path_io::at("open", file))?;
                    draft.add_layer(
                        &store,
                        std::io::BufReader::new(tar),
                        &now,
                        &created_by,
                        "",
                    )?;
                    let _ = std::fs::remove_file(file);
                }
                None => draft.history(&now, &created_by, "", empty_layer),
            }
            let (manifest, size, id) = draft.write(&store)?;
            store.keep(&key, &manifest_descriptor(&manifest, size))?;
            Ok((draft, manifest, id))
        })
        .await??;
    let (draft, manifest, id) = written;
    stage.draft = draft;
    Ok((manifest, id))
}

/// What a `COPY` or `ADD` copies, from where, to where.
struct CopyPlan {
    root: PathBuf,
    sources: Vec<String>,
    dest: String,
    into: bool,
    owner: (u32, u32),
    /// `--chown` by name: resolved in the image, then the tar made again.
    names: Option<String>,
    ignore: Ignore,
    extract: bool,
}

/// The tar of a copy's sources (names from `/`), in a file of the
/// build's directory.
async fn sources_tar(
    plan: &CopyPlan,
    context: &Path,
) -> Result<PathBuf, Error> {
    let name = random_id()?;
    let file = context.with_file_name(format!("copy-{name}.tar"));
    let scratch = context.with_file_name(format!("add-{name}"));
    let (made, root, sources, dest) = (
        file.clone(),
        plan.root.clone(),
        plan.sources.clone(),
        plan.dest.clone(),
    );
    let (into, owner, ignore, extract) =
        (plan.into, plan.owner, plan.ignore.clone(), plan.extract);
    blocking(move || -> Result<(), Error> {
        let out = std::fs::File::create(&made)
            .map_err(crate::path_io::at("create", &made))?;
        context::sources_tar(
            &root,
            &sources,
            &dest,
            into,
            owner,
            &ignore,
            extract,
            &scratch,
            std::io::BufWriter::new(out),
        )
    })
    .await??;
    Ok(file)
}

/// The digest of `file`, read as it streams.
async fn digest_of(file: &Path) -> Result<String, Error> {
    let file = file.to_owned();
    blocking(move || -> Result<String, Error> {
        let opened = std::fs::File::open(&file)
            .map_err(crate::path_io::at("open", &file))?;
        let mut hashing = crate::image::digest::Hashing::new(opened);
        std::io::copy(&mut hashing, &mut std::io::sink())
            .map_err(crate::path_io::at("read", &file))?;
        Ok(Digest::of_read(hashing).to_string())
    })
    .await?
}

/// Apply a copy: on scratch, its tar is the layer; on an image, it is
/// unpacked into the root of a container of that image (not started),
/// so that the directories it lands in keep their owners and modes, and
/// the container's upper directory is the layer.
async fn copy_in(
    engine: &Arc<Engine>,
    stage: &mut Stage,
    mut plan: CopyPlan,
    file: PathBuf,
    context: &Path,
) -> Result<PathBuf, Error> {
    let Some((_, id)) = stage.image.clone() else {
        if let Some(spec) = &plan.names {
            return Err(Error::BadRequest(format!(
                "unable to convert uid/gid chown string to host mapping: {spec}: FROM scratch has no users"
            )));
        }
        return Ok(file);
    };
    let record = create(engine, idle(id.to_string(), "copy")).await?;
    let cid = record.id.clone();
    let applied = async {
        let rootfs = {
            let engine = engine.clone();
            blocking(move || engine.mount_rootfs(&record)).await??
        };
        // One file onto a directory of the image goes into it; names
        // of --chown are the image's.
        let mut file = file.clone();
        let mut again = false;
        if !plan.into
            && super::archive::stat(&rootfs, &plan.dest, "the image")
                .ok()
                .and_then(|s| s["mode"].as_u64())
                .is_some_and(|m| m & (1 << 31) != 0)
        {
            plan.into = true;
            again = true;
        }
        if let Some(spec) = plan.names.take() {
            let text = |name: &str| -> Result<Option<String>, Error> {
                Ok(read_in(&rootfs, name, MAX_DOCKERFILE)?
                    .map(|b| String::from_utf8_lossy(&b).into_owned()))
            };
            let (passwd, groups) = (text("etc/passwd")?, text("etc/group")?);
            plan.owner =
                context::chown(&spec, passwd.as_deref(), groups.as_deref())?;
            again = true;
        }
        if again {
            let _ = std::fs::remove_file(&file);
            file = sources_tar(&plan, context).await?;
        }
        let unpacked = file.clone();
        let root = rootfs.clone();
        blocking(move || -> Result<(), Error> {
            let tar = std::fs::File::open(&unpacked)
                .map_err(crate::path_io::at("open", &unpacked))?;
            super::archive::put(
                &root,
                "/",
                "the image",
                std::io::BufReader::new(tar),
            )
        })
        .await??;
        let _ = std::fs::remove_file(&file);
        commit_upper(engine, &cid, context).await
    }
    .await;
    let _ = engine.remove(&cid, true).await;
    applied
}

/// The upper directory of container `cid` as a layer tar, in a file of
/// the build's directory.
async fn commit_upper(
    engine: &Arc<Engine>,
    cid: &str,
    context: &Path,
) -> Result<PathBuf, Error> {
    let upper = engine.container_dir(cid).join("upper");
    let file = context.with_file_name(format!("layer-{}.tar", random_id()?));
    let made = file.clone();
    blocking(move || -> Result<(), Error> {
        let out = std::fs::File::create(&made)
            .map_err(crate::path_io::at("create", &made))?;
        crate::overlay::commit::commit(
            &upper,
            std::io::BufWriter::new(out),
            None,
        )
        .map_err(|e| Error::Internal(crate::child::error_chain(&e)))?;
        Ok(())
    })
    .await??;
    Ok(file)
}

/// A container a step uses without running it (to copy into, or to
/// read from): image `image`, labelled `label`.
fn idle(image: String, label: &str) -> ContainerConfig {
    ContainerConfig {
        image: Some(image),
        cmd: Some(vec!["true".into()]),
        entrypoint: Some(vec![]),
        labels: Some([(BUILD_LABEL.to_owned(), label.to_owned())].into()),
        ..Default::default()
    }
}

/// Create a build's container (Docker's defaults for the rest).
async fn create(
    engine: &Arc<Engine>,
    config: ContainerConfig,
) -> Result<super::containers::Record, Error> {
    let engine = engine.clone();
    blocking(move || engine.create(None, config, HostConfig::default())).await?
}

/// The label of the containers a build makes (`RUN`, `COPY`, a stage's
/// root): a daemon that starts removes those a crash left.
pub const BUILD_LABEL: &str = "io.berth.build";

/// The image kept for cache key `key`, if all of it is still there.
async fn cached(
    engine: &Arc<Engine>,
    key: &str,
) -> Result<Option<(Digest, Digest)>, Error> {
    let store = engine.store.clone();
    let key = key.to_owned();
    blocking(move || -> Result<Option<(Digest, Digest)>, Error> {
        let Some(manifest) = store.cached(&key)? else {
            return Ok(None);
        };
        let layers = crate::image::snapshot::layers(&store, &manifest);
        let whole = layers.is_ok_and(|l| l.iter().all(|l| store.has(&l.blob)));
        if !whole {
            return Ok(None);
        }
        let parsed: oci_spec::image::ImageManifest =
            store.read_json(&manifest)?;
        let id = crate::image::store::our_digest(parsed.config().digest())
            .ok_or_else(|| {
                Error::Internal(
                    "a cached manifest names no sha256 config".into(),
                )
            })?;
        Ok(Some((manifest, id)))
    })
    .await?
}

/// The root of an earlier stage (or an image) named `from`, mounted by
/// a container made for it (removed when the build's directory goes…
/// simplified: the rootfs of a stopped container is mounted while read).
async fn stage_root(
    engine: &Arc<Engine>,
    stages: &[Done],
    from: &str,
    context: &Path,
) -> Result<PathBuf, Error> {
    let image = stages
        .iter()
        .enumerate()
        .find(|(i, (name, _))| {
            name.as_deref() == Some(&from.to_ascii_lowercase())
                || i.to_string() == from
        })
        .and_then(|(_, (_, image))| image.clone())
        .map(|(_, id)| id.to_string())
        .unwrap_or_else(|| from.to_owned());
    // The container stays until the build ends (its files are read
    // then): labelled with the build's name, which [`cleanup`] removes.
    let record = create(engine, idle(image, &source_label(context))).await?;
    let cid = record.id.clone();
    let mounted = {
        let engine = engine.clone();
        blocking(move || engine.mount_rootfs(&record)).await?
    };
    if mounted.is_err() {
        let _ = engine.remove(&cid, true).await;
    }
    mounted
}

/// The label value of the containers that hold a stage's root for the
/// build whose context is `context`.
fn source_label(context: &Path) -> String {
    let build = context
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("source-{build}")
}

/// Run `argv` in a container of `stage`'s image: its output streamed,
/// its exit code checked; the path of its upper directory as a layer tar.
async fn run_step(
    engine: &Arc<Engine>,
    stage: &mut Stage,
    argv: Vec<String>,
    progress: &Progress,
    context: &Path,
) -> Result<PathBuf, Error> {
    let Some((_, id)) = stage.image.clone() else {
        return Err(Error::BadRequest(
            "RUN on scratch: there is no shell".into(),
        ));
    };
    let settings = stage.draft.settings().clone();
    let mut env: Vec<String> = stage.env();
    for (k, v) in &stage.args {
        if !env.iter().any(|kv| kv.starts_with(&format!("{k}="))) {
            env.push(format!("{k}={v}"));
        }
    }
    let config = ContainerConfig {
        image: Some(id.to_string()),
        cmd: Some(argv.clone()),
        entrypoint: Some(vec![]),
        env: Some(env),
        working_dir: settings
            .get("WorkingDir")
            .and_then(Value::as_str)
            .map(str::to_owned),
        user: settings
            .get("User")
            .and_then(Value::as_str)
            .map(str::to_owned),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        labels: Some([(BUILD_LABEL.to_owned(), "run".to_owned())].into()),
        ..Default::default()
    };
    let record = create(engine, config).await?;
    let cid = record.id.clone();
    progress.stream(format!(" ---> Running in {}\n", &cid[..12]));
    let result = run_and_commit(engine, &cid, &argv, progress, context).await;
    let _ = engine.remove(&cid, true).await;
    result
}

async fn run_and_commit(
    engine: &Arc<Engine>,
    cid: &str,
    argv: &[String],
    progress: &Progress,
    context: &Path,
) -> Result<PathBuf, Error> {
    let stream = engine.attach(cid, false, true, true).await?;
    let mut changes = engine.watch(cid)?;
    let forward = progress.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let mut stream = stream;
        let mut header = [0u8; 8];
        while std::io::Read::read_exact(&mut stream, &mut header).is_ok() {
            let len = u32::from_be_bytes([
                header[4], header[5], header[6], header[7],
            ]) as usize;
            let mut payload = vec![0u8; len];
            if std::io::Read::read_exact(&mut stream, &mut payload).is_err() {
                break;
            }
            forward.stream(String::from_utf8_lossy(&payload).into_owned());
        }
    });
    engine.start(cid).await?;
    let done = changes
        .wait_for(|c| !c.running && c.exits > 0)
        .await
        .map(|c| *c)
        .map_err(|_| Error::Internal("the build container went away".into()))?;
    let _ = reader.await;
    if done.code != 0 {
        return Err(Error::BadRequest(format!(
            "The command '{}' returned a non-zero code: {}",
            argv.join(" "),
            done.code
        )));
    }
    commit_upper(engine, cid, context).await
}

/// The `POST /build` query, read.
pub fn options(
    q: &HashMap<String, String>,
    tags: &[String],
) -> Result<Options, Error> {
    let mut parsed = Vec::new();
    for tag in tags.iter().filter(|t| !t.is_empty()) {
        parsed.push(
            tag.parse::<Reference>()
                .map_err(|e| Error::BadRequest(e.to_string()))?,
        );
    }
    let build_args: BTreeMap<String, Option<String>> =
        match q.get("buildargs").filter(|b| !b.is_empty()) {
            Some(text) => serde_json::from_str(text)
                .map_err(|e| Error::BadRequest(format!("buildargs: {e}")))?,
            None => BTreeMap::new(),
        };
    Ok(Options {
        tags: parsed,
        dockerfile: q.get("dockerfile").cloned().unwrap_or_default(),
        build_args: build_args
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect(),
        no_cache: matches!(
            q.get("nocache").map(String::as_str),
            Some("1" | "true")
        ),
        target: q
            .get("target")
            .filter(|t| !t.is_empty())
            .map(|t| t.to_ascii_lowercase()),
    })
}

/// Remove the containers the build in `dir` made to read earlier
/// stages; its directory goes when its [`Workspace`] is dropped.
pub async fn cleanup(engine: &Arc<Engine>, dir: &Path) {
    let label = source_label(&dir.join("context"));
    for record in engine.records() {
        let ours = record
            .config
            .labels
            .as_ref()
            .and_then(|l| l.get(BUILD_LABEL))
            .is_some_and(|v| *v == label);
        if ours {
            let _ = engine.remove(&record.id, true).await;
        }
    }
}

/// A build's directory (`DATA_ROOT/builds/ID`: the context, the layer
/// files), removed when dropped, whatever ended the build.
pub struct Workspace(PathBuf);

impl Workspace {
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// At the daemon's start: what a killed build left (its directories, its
/// containers).
pub async fn sweep(engine: &Arc<Engine>) {
    for record in engine.records() {
        let built = record
            .config
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(BUILD_LABEL));
        if built {
            let _ = engine.remove(&record.id, true).await;
        }
    }
    let _ = std::fs::remove_dir_all(engine.config.data_root.join("builds"));
}
