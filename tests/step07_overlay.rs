//! Step 7: image layers on overlayfs. Layers stack with whiteouts and
//! opaque directories; containers share layers but not writes; changes
//! export as a layer and run again; hostile layers cannot write outside
//! their directory; a corrupt layer is a clear error that leaves nothing.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_tests::fixture::rootfs;
use berth_tests::{
    ThrowawayUser, host, privileged, run, snapshot_settings, step_binary,
    test_command, world_executable,
};
use step08_oci::overlay::unpack::{self, Summary};

/// A scratch directory under `target/`, emptied first; paths in
/// transcripts are relative to the workspace, like every other.
fn scratch(name: &str) -> String {
    let dir = format!("target/test-step07/{name}");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The fixture rootfs as a gzip'd layer.
fn base_layer(dir: &str) -> String {
    let path = format!("{dir}/base.tar.gz");
    let status = Command::new("tar")
        .args(["-C", rootfs().to_str().unwrap(), "-czf", &path, "."])
        .status()
        .unwrap();
    assert!(status.success());
    path
}

/// A layer tar built entry by entry; `raw_name` lets a test write names the
/// `tar` crate would refuse (`../x`), as a hostile layer would.
struct LayerBuilder {
    builder: tar::Builder<Vec<u8>>,
}

impl LayerBuilder {
    fn new() -> Self {
        LayerBuilder {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, name: &str, mode: u32) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        let bytes = name.as_bytes();
        header.as_gnu_mut().unwrap().name[..bytes.len()].copy_from_slice(bytes);
        header.set_mode(mode);
        header.set_mtime(1_234_567_890);
        header.set_size(0);
        header
    }

    fn file(mut self, name: &str, content: &str) -> Self {
        let mut header = Self::header(tar::EntryType::Regular, name, 0o644);
        header.set_size(content.len() as u64);
        header.set_cksum();
        self.builder.append(&header, content.as_bytes()).unwrap();
        self
    }

    fn dir(mut self, name: &str) -> Self {
        let mut header = Self::header(tar::EntryType::Directory, name, 0o755);
        header.set_cksum();
        self.builder.append(&header, std::io::empty()).unwrap();
        self
    }

    fn link(mut self, kind: tar::EntryType, name: &str, target: &str) -> Self {
        let mut header = Self::header(kind, name, 0o777);
        let bytes = target.as_bytes();
        header.as_gnu_mut().unwrap().linkname[..bytes.len()]
            .copy_from_slice(bytes);
        header.set_cksum();
        self.builder.append(&header, std::io::empty()).unwrap();
        self
    }

    fn device(mut self, name: &str, major: u32, minor: u32) -> Self {
        let mut header = Self::header(tar::EntryType::Char, name, 0o666);
        header.set_device_major(major).unwrap();
        header.set_device_minor(minor).unwrap();
        header.set_cksum();
        self.builder.append(&header, std::io::empty()).unwrap();
        self
    }

    fn bytes(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }

    fn write(self, path: &str) -> String {
        fs::write(path, self.bytes()).unwrap();
        path.to_owned()
    }
}

/// The second layer of the stacking test: a new file, a whiteout, an
/// opaque directory.
fn second_layer(dir: &str) -> String {
    LayerBuilder::new()
        .file("etc/motd", "hello from layer 2\n")
        .file(".wh.root", "")
        .dir("tmp/opaque")
        .file("tmp/opaque/.wh..wh..opq", "")
        .file("tmp/opaque/only-this", "layer 2\n")
        .write(&format!("{dir}/layer2.tar"))
}

#[test]
fn layers_stack_with_whiteouts_and_opaque_directories() {
    if !privileged(
        "step07_overlay::layers_stack_with_whiteouts_and_opaque_directories",
    ) {
        return;
    }
    let step = step_binary("step07-overlay");
    let dir = scratch("stack");
    let (base, second) = (base_layer(&dir), second_layer(&dir));
    // The base layer has a /tmp/opaque with a file the opaque dir hides.
    let store = format!("{dir}/store");
    let prepare = LayerBuilder::new()
        .dir("tmp/opaque")
        .file("tmp/opaque/hidden", "base\n")
        .write(&format!("{dir}/base2.tar"));
    let script = "cat /etc/motd; ls /; ls /tmp/opaque; probe mounts | head -2";
    let shown = run(
        &step,
        &[
            "--store", &store, "--image", &base, "--image", &prepare,
            "--image", &second, "--", "sh", "-c", script,
        ],
    );
    assert_eq!(shown.code, 0, "{}", shown.render());
    assert!(!shown.stdout.contains("root\n"), "the whiteout hides /root");
    assert!(
        !shown.stdout.contains("hidden"),
        "the opaque directory hides the base's file"
    );
    let layers = fs::read_dir(format!("{store}/layers/sha256"))
        .unwrap()
        .count();
    assert_eq!(layers, 3);
    let containers =
        fs::read_dir(format!("{store}/containers")).unwrap().count();
    assert_eq!(containers, 0, "the container's upper directory is removed");
    let mut settings = snapshot_settings();
    settings.add_filter(r"(?m)^  / overlay .*$", "  / overlay [OPTIONS]");
    settings.bind(|| insta::assert_snapshot!("step07_stack", shown.render()));
}

#[test]
fn two_containers_share_layers_but_not_writes() {
    if !privileged("step07_overlay::two_containers_share_layers_but_not_writes")
    {
        return;
    }
    let step = step_binary("step07-overlay");
    let dir = scratch("share");
    let base = base_layer(&dir);
    let store = format!("{dir}/store");
    let args = |script: &'static str| {
        [
            "--store", &store, "--image", &base, "--", "sh", "-c", script,
        ]
        .map(str::to_owned)
    };
    let a_args = args("echo A > /tmp/from-a; sleep 1; ls /tmp");
    let a = test_command(&step, &a_args.each_ref().map(String::as_str))
        .output_later();
    let b_args = args("sleep 0.3; echo B > /tmp/from-b; ls /tmp");
    let b = run(&step, &b_args.each_ref().map(String::as_str));
    let a = a.wait_with_output().unwrap();
    assert!(a.status.success() && b.code == 0, "{}", b.render());
    assert_eq!(String::from_utf8_lossy(&a.stdout), "from-a\n");
    assert_eq!(b.stdout, "from-b\n");
    // One layer directory, shared; the fixture's own /tmp is untouched.
    assert_eq!(
        fs::read_dir(format!("{store}/layers/sha256"))
            .unwrap()
            .count(),
        1
    );
    assert!(!rootfs().join("tmp/from-a").exists());
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("step07_share", b.render()));
}

/// An ordinary user stacks layers too: unpacked without privileges into a
/// store of theirs, mounted in the container's user namespace with
/// `userxattr`; what they commit belongs to the container's root.
#[test]
fn an_ordinary_user_runs_on_layers_and_commits() {
    if !privileged(
        "step07_overlay::an_ordinary_user_runs_on_layers_and_commits",
    ) {
        return;
    }
    let step = world_executable("step07-overlay");
    // Outside the checkout, which the user may not be able to enter.
    let dir = "/tmp/berth-test-step07-rootless";
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(format!("{dir}/store")).unwrap();
    fs::set_permissions(
        format!("{dir}/store"),
        fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o777)).unwrap();
    let (base, second) = (base_layer(dir), second_layer(dir));
    let user = ThrowawayUser::create("berth-rootless7");
    let changes = format!("{dir}/changes.tar");
    let mut args = user.setpriv();
    args.extend(
        [
            &step,
            "--store",
            &format!("{dir}/store"),
            "--image",
            &base,
            "--image",
            &second,
            "--commit",
            &changes,
            "--",
            "sh",
            "-c",
            "id; cat /etc/motd; ls /; echo new > /new-file; rm /etc/hostname",
        ]
        .map(|a| a.to_string()),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let shown = run("setpriv", &args);
    assert_eq!(shown.code, 0, "{}", shown.render());
    assert!(
        shown
            .stdout
            .starts_with("uid=0(root) gid=0(root)\nhello from layer 2\n")
    );
    assert!(!shown.stdout.contains("root\n"), "the whiteout hides /root");
    let mut archive = tar::Archive::new(fs::File::open(&changes).unwrap());
    let mut listing = String::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let header = entry.header();
        listing.push_str(&format!(
            "{} {}:{}\n",
            entry.path().unwrap().display(),
            header.uid().unwrap(),
            header.gid().unwrap()
        ));
    }
    assert_eq!(listing, "etc 0:0\netc/.wh.hostname 0:0\nnew-file 0:0\n");
    // The container's upper and work directories are gone, work/work
    // (mode 000, made by overlayfs) included.
    let left = fs::read_dir(format!("{dir}/store/containers"))
        .unwrap()
        .count();
    assert_eq!(
        left, 0,
        "the rootless container's directories were left behind"
    );
    let text = format!("{}\nlayer {changes}:\n{listing}", shown.render());
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("step07_rootless", text));
}

/// `Command::spawn` with piped output, for a container running beside
/// another.
trait OutputLater {
    fn output_later(&mut self) -> std::process::Child;
}

impl OutputLater for Command {
    fn output_later(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}

#[test]
fn changes_export_as_a_layer_and_run_again() {
    if !privileged("step07_overlay::changes_export_as_a_layer_and_run_again") {
        return;
    }
    let step = step_binary("step07-overlay");
    let dir = scratch("commit");
    let base = base_layer(&dir);
    let store = format!("{dir}/store");
    let changes = format!("{dir}/changes.tar.gz");
    let script = "echo new > /new-file; rm /etc/hostname; mkdir -p /data; echo 1 > /data/one; \
                  ln /data/one /data/also-one";
    let first = run(
        &step,
        &[
            "--store", &store, "--image", &base, "--commit", &changes, "--",
            "sh", "-c", script,
        ],
    );
    assert_eq!(first.code, 0, "{}", first.render());
    // What the exported layer holds, entry by entry.
    let file = fs::File::open(&changes).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut listing = String::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let kind = entry.header().entry_type();
        let link = entry
            .link_name()
            .unwrap()
            .map(|l| format!(" -> {}", l.display()));
        listing.push_str(&format!(
            "{kind:?} {}{}\n",
            entry.path().unwrap().display(),
            link.unwrap_or_default()
        ));
    }
    assert!(listing.contains("Regular etc/.wh.hostname"), "{listing}");
    assert!(
        listing.contains("Link data/one -> data/also-one")
            || listing.contains("Link data/also-one -> data/one"),
        "{listing}"
    );
    let second = run(
        &step,
        &[
            "--store",
            &store,
            "--image",
            &base,
            "--image",
            &changes,
            "--",
            "sh",
            "-c",
            "cat /new-file /data/one; ls /etc/hostname 2>&1; stat -c %h /data/one",
        ],
    );
    assert_eq!(second.code, 0, "{}", second.render());
    // The new files, the deletion, and the hard link (2 links) came back.
    assert_eq!(
        second.stdout,
        "new\n1\nls: /etc/hostname: No such file or directory\n2\n"
    );
    let text = format!(
        "{}\nlayer {changes}:\n{listing}\n{}",
        first.render(),
        second.render()
    );
    snapshot_settings().bind(|| insta::assert_snapshot!("step07_commit", text));
}

/// Unpack `tar` (unprivileged, as the library allows) into a fresh `root`.
fn unpack_into(root: &Path, tar: &[u8]) -> Result<Summary, unpack::Error> {
    fs::create_dir_all(root).unwrap();
    let fd = unpack::open_root(root).unwrap();
    unpack::unpack(tar, std::os::fd::AsFd::as_fd(&fd), false)
}

/// Every file below `dir`, relative, sorted, with `-> target` for links.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in fs::read_dir(dir.join(&rel)).unwrap() {
            let entry = entry.unwrap();
            let rel = rel.join(entry.file_name());
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                out.push(format!("{}/", rel.display()));
                stack.push(rel);
            } else if kind.is_symlink() {
                let target = fs::read_link(entry.path()).unwrap();
                out.push(format!("{} -> {}", rel.display(), target.display()));
            } else {
                out.push(rel.display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn hostile_layers_cannot_write_outside_their_directory() {
    let dir = PathBuf::from(scratch("hostile"));
    // A directory outside the layer, as a target for escapes.
    let outside = dir.join("outside");
    fs::create_dir_all(&outside).unwrap();
    let outside_abs = fs::canonicalize(&outside).unwrap();
    let outside_text = outside_abs.display().to_string();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "absolute path",
            LayerBuilder::new()
                .file("/berth-absolute-test/abs", "x")
                .bytes(),
        ),
        (
            "dot-dot path",
            LayerBuilder::new().file("../outside/dotdot", "x").bytes(),
        ),
        (
            "symlink out, then write through it",
            LayerBuilder::new()
                .link(tar::EntryType::Symlink, "escape", &outside_text)
                .file("escape/through", "x")
                .bytes(),
        ),
        (
            "relative symlink out, then write through it",
            LayerBuilder::new()
                .link(tar::EntryType::Symlink, "up", "../../../../../..")
                .file("up/through-relative", "x")
                .bytes(),
        ),
        (
            "hard link to a host file",
            LayerBuilder::new()
                .link(tar::EntryType::Link, "passwd", "/etc/passwd")
                .bytes(),
        ),
        (
            "hard link with dot-dot",
            LayerBuilder::new()
                .link(tar::EntryType::Link, "shadow", "../../../../etc/shadow")
                .bytes(),
        ),
        (
            "device node, not root",
            LayerBuilder::new().device("dev/mem", 1, 1).bytes(),
        ),
    ];
    let mut report = String::new();
    for (i, (name, tar)) in cases.iter().enumerate() {
        let root = dir.join(format!("layer{i}"));
        let outcome = match unpack_into(&root, tar) {
            Ok(summary) => format!(
                "unpacked ({} entries, {} devices skipped)",
                summary.entries, summary.skipped_devices
            ),
            Err(error) => format!("refused: {error}"),
        };
        let outcome = outcome.replace(&outside_text, "OUTSIDE");
        let files: Vec<String> = tree(&root)
            .into_iter()
            .map(|f| f.replace(&outside_text, "OUTSIDE"))
            .collect();
        report.push_str(&format!("{name}:\n  {outcome}\n  layer: {files:?}\n"));
        assert_eq!(
            tree(&outside),
            Vec::<String>::new(),
            "{name} wrote outside"
        );
    }
    assert!(
        !Path::new("/berth-absolute-test").exists(),
        "an absolute path escaped"
    );
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("step07_hostile", report));
}

#[test]
fn metadata_is_preserved() {
    if !privileged("step07_overlay::metadata_is_preserved") {
        return;
    }
    let dir = PathBuf::from(scratch("metadata"));
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_path("bin/tool").unwrap();
    header.set_mode(0o4755);
    header.set_uid(1000);
    header.set_gid(1001);
    header.set_mtime(1_234_567_890);
    header.set_size(4);
    header.set_cksum();
    builder
        .append_pax_extensions([(
            "SCHILY.xattr.user.origin",
            b"layer".as_slice(),
        )])
        .unwrap();
    builder.append(&header, b"tool".as_slice()).unwrap();
    let mut link = tar::Header::new_ustar();
    link.set_entry_type(tar::EntryType::Link);
    link.set_size(0);
    link.set_mode(0o4755);
    builder
        .append_link(&mut link, "bin/tool-again", "bin/tool")
        .unwrap();
    let tar = builder.into_inner().unwrap();
    let root = dir.join("layer");
    fs::create_dir_all(&root).unwrap();
    let fd = unpack::open_root(&root).unwrap();
    unpack::unpack(tar.as_slice(), std::os::fd::AsFd::as_fd(&fd), true)
        .unwrap();
    let meta = fs::metadata(root.join("bin/tool")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o4755);
    assert_eq!((meta.uid(), meta.gid()), (1000, 1001));
    assert_eq!(meta.mtime(), 1_234_567_890);
    assert_eq!(meta.nlink(), 2, "the hard link is a hard link");
    let again = fs::metadata(root.join("bin/tool-again")).unwrap();
    assert_eq!(again.ino(), meta.ino());
    assert_eq!(xattr(&root.join("bin/tool"), "user.origin"), b"layer");
}

/// The value of xattr `name` of `path`.
fn xattr(path: &Path, name: &str) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    let mut value = vec![0u8; 256];
    // SAFETY: NUL-terminated strings, and a buffer valid for its length.
    let len = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    assert!(
        len >= 0,
        "no xattr {name:?}: {}",
        std::io::Error::last_os_error()
    );
    value.truncate(len as usize);
    value
}

#[test]
fn a_corrupt_layer_is_a_clear_error_and_leaves_nothing() {
    if !privileged(
        "step07_overlay::a_corrupt_layer_is_a_clear_error_and_leaves_nothing",
    ) {
        return;
    }
    let step = step_binary("step07-overlay");
    let dir = scratch("corrupt");
    let base = base_layer(&dir);
    // The first half of a good gzip'd layer.
    let bytes = fs::read(&base).unwrap();
    let truncated = format!("{dir}/truncated.tar.gz");
    fs::File::create(&truncated)
        .unwrap()
        .write_all(&bytes[..bytes.len() / 2])
        .unwrap();
    let store = format!("{dir}/store");
    let runs = [
        run(
            &step,
            &["--store", &store, "--image", &truncated, "--", "true"],
        ),
        run(
            &step,
            &[
                "--store",
                &store,
                "--image",
                "no/such/layer.tar",
                "--",
                "true",
            ],
        ),
        run(&step, &["--store", &store, "--", "true"]),
        run(
            &step,
            &["--rootfs", "target/rootfs", "--image", &base, "--", "true"],
        ),
    ];
    let codes: Vec<i32> = runs.iter().map(|r| r.code).collect();
    assert_eq!(codes, [125, 125, 125, 2]);
    for sub in ["layers/sha256", "layers/tmp", "containers"] {
        let left = fs::read_dir(format!("{store}/{sub}")).unwrap().count();
        assert_eq!(left, 0, "{sub} is not empty");
    }
    let text: String = runs.iter().map(|r| r.render() + "\n").collect();
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("step07_corrupt", text));
}

/// A layer keeps its set-user-ID files: a store other users could walk
/// into would hand them a setuid-root binary of any image. `layers/` and
/// `containers/` are mode 0700, and `nobody` cannot reach a layer's files.
#[test]
fn the_store_is_not_reachable_by_other_users() {
    if !privileged("step07_overlay::the_store_is_not_reachable_by_other_users")
    {
        return;
    }
    let step = step_binary("step07-overlay");
    // Outside the checkout, in a directory every user may enter.
    let dir = "/tmp/berth-test-step07-private";
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    let layer = LayerBuilder::new()
        .dir("bin")
        .write(&format!("{dir}/suid.tar"));
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_path("bin/rootshell").unwrap();
    header.set_mode(0o4755);
    header.set_size(0);
    header.set_cksum();
    tar.append(&header, std::io::empty()).unwrap();
    let suid = format!("{dir}/rootshell.tar");
    fs::write(&suid, tar.into_inner().unwrap()).unwrap();
    let store = format!("{dir}/store");
    let base = base_layer(dir);
    let shown = run(
        &step,
        &[
            "--store", &store, "--image", &base, "--image", &layer, "--image",
            &suid, "--", "true",
        ],
    );
    assert_eq!(shown.code, 0, "{}", shown.render());
    for sub in ["layers", "containers"] {
        let mode =
            fs::metadata(format!("{store}/{sub}")).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o700, "{store}/{sub} is {mode:o}");
    }
    let listing = format!("ls {store}/layers/sha256/*/bin/rootshell");
    let nobody = run(
        "setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            &listing,
        ],
    );
    assert_ne!(nobody.code, 0, "{}", nobody.render());
    snapshot_settings().bind(|| {
        insta::assert_snapshot!("step07_private_store", nobody.render())
    });
}

/// A layer read from a pipe is read once: hashed as it is unpacked. (With a
/// second read for the hash, the pipe would give nothing the second time:
/// an empty layer under the real digest.) An endless input ends in an
/// error, not a hang.
#[test]
fn a_layer_is_hashed_and_unpacked_in_one_pass() {
    if !privileged("step07_overlay::a_layer_is_hashed_and_unpacked_in_one_pass")
    {
        return;
    }
    let step = step_binary("step07-overlay");
    let dir = scratch("one-pass");
    let base = base_layer(&dir);
    let store = format!("{dir}/store");
    let line = format!(
        "{step} --store {store} --image /dev/stdin -- cat /etc/hostname < {base}"
    );
    let piped = run("sh", &["-c", &line]);
    assert_eq!(piped.code, 0, "{}", piped.render());
    let digest = Command::new("sha256sum").arg(&base).output().unwrap();
    let hex = String::from_utf8_lossy(&digest.stdout)[..64].to_owned();
    let layer = format!("{store}/layers/sha256/{hex}");
    assert!(
        Path::new(&format!("{layer}/bin/busybox")).exists(),
        "{layer} is not the unpacked layer"
    );
    let endless = run(
        "timeout",
        &[
            "20",
            &step,
            "--store",
            &store,
            "--image",
            "/dev/zero",
            "--",
            "true",
        ],
    );
    assert_eq!(endless.code, 125, "{}", endless.render());
    let left = fs::read_dir(format!("{store}/layers/tmp")).unwrap().count();
    assert_eq!(left, 0, "layers/tmp is not empty");
    let text = format!("{}\n{}", piped.render(), endless.render());
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("step07_one_pass", text));
}

/// A layer whose digest is not the expected one is not stored.
#[test]
fn a_layer_with_another_digest_is_not_stored() {
    let dir = scratch("digest");
    let layer = LayerBuilder::new()
        .file("etc/motd", "hi\n")
        .write(&format!("{dir}/layer.tar"));
    let store =
        step08_oci::overlay::Store::open(Path::new(&format!("{dir}/store")))
            .unwrap();
    let expected = format!("sha256:{}", "0".repeat(64));
    let error = store.layer(Path::new(&layer), Some(&expected)).unwrap_err();
    assert!(
        matches!(error, step08_oci::overlay::Error::Digest { .. }),
        "{error}"
    );
    for sub in ["layers/sha256", "layers/tmp"] {
        let left = fs::read_dir(format!("{dir}/store/{sub}")).unwrap().count();
        assert_eq!(left, 0, "{sub} is not empty");
    }
    let stored = store.layer(Path::new(&layer), None).unwrap();
    let again = store
        .layer(Path::new(&layer), Some(&stored.digest))
        .unwrap();
    assert_eq!(stored, again);
}

/// A full disk is a full disk, not a "corrupt layer": the store on a
/// 256 KiB tmpfs (mounted in a private mount namespace by unshare(1)).
#[test]
fn a_full_disk_is_named_as_such() {
    if !privileged("step07_overlay::a_full_disk_is_named_as_such") {
        return;
    }
    let step = step_binary("step07-overlay");
    let dir = scratch("enospc");
    let base = base_layer(&dir);
    fs::create_dir_all(format!("{dir}/small")).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=256k tmpfs {dir}/small && \
         exec {step} --store {dir}/small --image {base} -- true"
    );
    let before = host::State::now();
    let shown = run(
        "unshare",
        &["--mount", "--propagation", "private", "sh", "-c", &script],
    );
    before.assert_unchanged();
    assert_eq!(shown.code, 125, "{}", shown.render());
    assert!(
        shown.stderr.contains("No space left on device")
            && !shown.stderr.contains("corrupt"),
        "{}",
        shown.render()
    );
    let mut settings = snapshot_settings();
    // Which file fills the disk first depends on the tar's order.
    settings.add_filter(r#"cannot write "[^"]+""#, "cannot write \"[FILE]\"");
    settings.bind(|| insta::assert_snapshot!("step07_enospc", shown.render()));
}

/// `kill -9` of the step, while it unpacks a layer and while its container
/// runs, leaves directories that the next run removes (the locks of the
/// killed runs died with them).
#[test]
fn kill_9_leaves_nothing_the_next_run_does_not_remove() {
    if !privileged(
        "step07_overlay::kill_9_leaves_nothing_the_next_run_does_not_remove",
    ) {
        return;
    }
    let step = step_binary("step07-overlay");
    let dir = scratch("kill");
    let base = base_layer(&dir);
    let store = format!("{dir}/store");
    let count = |sub: &str| {
        fs::read_dir(format!("{store}/{sub}"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    // 1. Killed while unpacking: half a layer, fed through a pipe that
    //    then stalls.
    let bytes = fs::read(&base).unwrap();
    let mut unpacking = test_command(
        &step,
        &["--store", &store, "--image", "/dev/stdin", "--", "true"],
    )
    .stdin(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdin = unpacking.stdin.take().unwrap();
    stdin.write_all(&bytes[..bytes.len() / 2]).unwrap();
    assert!(berth_tests::host::wait_for(60, || count("layers/tmp") == 1));
    unpacking.kill().unwrap();
    unpacking.wait().unwrap();
    drop(stdin);
    assert_eq!(count("layers/tmp"), 1, "the half-unpacked layer is left");
    // 2. Killed while its container runs.
    let mut running = test_command(
        &step,
        &["--store", &store, "--image", &base, "--", "sleep", "31344"],
    )
    .spawn()
    .unwrap();
    let sleeping =
        || !berth_tests::host::processes(&["sleep", "31344"]).is_empty();
    assert!(berth_tests::host::wait_for(60, sleeping), "never ran");
    running.kill().unwrap();
    running.wait().unwrap();
    assert!(
        berth_tests::host::wait_for(60, || !sleeping()),
        "the container outlived the step"
    );
    // That run's start removed the half layer; its own directories are left.
    assert_eq!((count("layers/tmp"), count("containers")), (0, 1));
    // The next run removes them.
    let next = run(&step, &["--store", &store, "--image", &base, "--", "true"]);
    assert_eq!(next.code, 0, "{}", next.render());
    assert_eq!((count("layers/tmp"), count("containers")), (0, 0));
}
