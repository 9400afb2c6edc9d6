//! Hostile images and archives: `berth image build` (run as root) and `berth image
//! load` never touch the host outside the image root. Each test crafts layers and
//! archives by hand (symlinks pointing at absolute host paths, `..` and absolute
//! member names, hard links, whiteouts and opaque markers through symlinked
//! directories), loads or builds from them, and checks that victim files in a
//! directory outside the root are byte-for-byte untouched and that nothing new
//! appears there. Where berth follows a hostile symlink, it does so inside the
//! image root (as in a chroot); a final `RUN` in the image checks where things went.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use berth_oci::{Algorithm, Digest};
use berth_tests::*;
use serde_json::json;

fn show(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(home: &Path, args: &[&str]) -> String {
    let out = berth(home, args, None);
    assert!(
        out.status.success(),
        "berth {args:?} failed:\n{}",
        show(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// --- tar archives written by hand (names the tar crate would refuse) -------------

/// A ustar archive under construction.
#[derive(Default)]
struct Tar(Vec<u8>);

const REGULAR: u8 = b'0';
const HARD_LINK: u8 = b'1';
const SYMLINK: u8 = b'2';
const DIRECTORY: u8 = b'5';

fn octal(field: &mut [u8], value: u64) {
    let text = format!("{value:0width$o}", width = field.len() - 1);
    assert!(text.len() < field.len(), "{value} does not fit");
    field[..text.len()].copy_from_slice(text.as_bytes());
    field[text.len()] = 0;
}

impl Tar {
    fn entry(&mut self, name: &str, kind: u8, data: &[u8], link: &str, mode: u32, uid: u32) {
        let mut h = [0u8; 512];
        let name = name.as_bytes();
        if name.len() <= 100 {
            h[..name.len()].copy_from_slice(name);
        } else {
            // ustar: prefix (155 bytes) '/' name (100 bytes).
            let split = (0..name.len())
                .rev()
                .find(|&i| name[i] == b'/' && i <= 155 && name.len() - i - 1 <= 100)
                .expect("name too long for ustar");
            h[345..345 + split].copy_from_slice(&name[..split]);
            h[..name.len() - split - 1].copy_from_slice(&name[split + 1..]);
        }
        octal(&mut h[100..108], mode as u64);
        octal(&mut h[108..116], uid as u64);
        octal(&mut h[116..124], uid as u64);
        octal(&mut h[124..136], data.len() as u64);
        octal(&mut h[136..148], 1_600_000_000);
        h[156] = kind;
        assert!(link.len() <= 100, "link name too long: {link}");
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].fill(b' ');
        let sum: u64 = h.iter().map(|&b| b as u64).sum();
        let text = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(text.as_bytes());
        self.0.extend_from_slice(&h);
        self.0.extend_from_slice(data);
        self.0
            .resize(self.0.len() + (512 - data.len() % 512) % 512, 0);
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(name, REGULAR, data, "", 0o644, 0);
        self
    }

    fn file_mode(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Self {
        self.entry(name, REGULAR, data, "", mode, 0);
        self
    }

    fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(name, DIRECTORY, b"", "", 0o755, 0);
        self
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name, SYMLINK, b"", target, 0o777, 0);
        self
    }

    /// A hard link owned by `uid` (applying it chowns what it links to).
    fn hard_link(&mut self, name: &str, target: &str, uid: u32) -> &mut Self {
        self.entry(name, HARD_LINK, b"", target, 0o600, uid);
        self
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.0);
        out.extend_from_slice(&[0u8; 1024]);
        out
    }
}

/// A base layer with busybox as /bin/sh, so `RUN` can check the image's files.
fn busybox_layer() -> Tar {
    let mut t = Tar::default();
    t.dir("./").dir("bin/").file_mode(
        "bin/busybox",
        &std::fs::read("/bin/busybox").expect("/bin/busybox (Debian: busybox-static)"),
        0o755,
    );
    t.symlink("bin/sh", "busybox");
    t
}

fn sha256_hex(data: &[u8]) -> String {
    Digest::of(Algorithm::Sha256, data).hex().to_owned()
}

fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// An OCI image layout archive holding one image `name` made of `layers`.
fn oci_archive(name: &str, layers: &[Vec<u8>]) -> Vec<u8> {
    let mut blobs: Vec<Vec<u8>> = Vec::new();
    let config = serde_json::to_vec(&json!({
        "architecture": architecture(), "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| sha256(l)).collect::<Vec<_>>()},
        "history": [],
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": layers.iter().map(|l| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(l), "size": l.len()})).collect::<Vec<_>>(),
    }))
    .unwrap();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(&manifest), "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": name},
        }],
    }))
    .unwrap();
    blobs.push(config);
    blobs.push(manifest);
    blobs.extend(layers.iter().cloned());
    let mut t = Tar::default();
    t.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
        .file("index.json", &index)
        .dir("blobs/")
        .dir("blobs/sha256/");
    for blob in blobs {
        t.file(&format!("blobs/sha256/{}", sha256_hex(&blob)), &blob);
    }
    t.finish()
}

/// Loads an image made of `layers` as `name`.
fn load_image(home: &Path, dir: &Path, name: &str, layers: &[Vec<u8>]) {
    let path = dir.join(format!("{}.tar", sha256_hex(name.as_bytes())));
    std::fs::write(&path, oci_archive(name, layers)).unwrap();
    ok(home, &["image", "load", "-i", path.to_str().unwrap()]);
}

/// Builds `dockerfile` in the context `ctx` as `tag`.
fn build(home: &Path, ctx: &Path, dockerfile: &str, tag: &str) -> Output {
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    berth(
        home,
        &["image", "build", "-t", tag, ctx.to_str().unwrap()],
        None,
    )
}

// --- victims -------------------------------------------------------------------

/// Everything about every path under `dir`: kind, content or link target, mode,
/// owner, link count, modification time.
type State = BTreeMap<PathBuf, String>;

fn state(dir: &Path) -> State {
    fn walk(dir: &Path, out: &mut State) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = path.symlink_metadata().unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("link {:?}", std::fs::read_link(&path).unwrap())
            } else if meta.is_dir() {
                "dir".to_owned()
            } else {
                format!("file {}", sha256_hex(&std::fs::read(&path).unwrap()))
            };
            out.insert(
                path.clone(),
                format!(
                    "{what} mode={:o} uid={} gid={} nlink={} mtime={}.{}",
                    meta.mode(),
                    meta.uid(),
                    meta.gid(),
                    meta.nlink(),
                    meta.mtime(),
                    meta.mtime_nsec()
                ),
            );
            if meta.is_dir() {
                walk(&path, out);
            }
        }
    }
    let mut out = State::new();
    walk(dir, &mut out);
    out
}

/// A directory of victim files outside any image root, at an absolute path.
struct Victims {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    before: State,
}

impl Victims {
    fn new(files: &[&str]) -> Victims {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap().join("victims");
        for f in files {
            let path = dir.join(f);
            if let Some(d) = f.strip_suffix('/') {
                std::fs::create_dir_all(dir.join(d)).unwrap();
                continue;
            }
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, format!("victim {f}\n")).unwrap();
        }
        let before = state(&dir);
        Victims {
            _tmp: tmp,
            dir,
            before,
        }
    }

    /// The victims' absolute path joined with `rel`, as a string for tar entries.
    fn path(&self, rel: &str) -> String {
        let d = self.dir.to_str().unwrap();
        if rel.is_empty() {
            d.to_owned()
        } else {
            format!("{d}/{rel}")
        }
    }

    /// Fails (saying what changed) unless every victim is exactly as it was.
    fn assert_untouched(&self, what: &str) {
        let after = if self.dir.exists() {
            state(&self.dir)
        } else {
            State::new()
        };
        let mut diff = Vec::new();
        for (p, s) in &self.before {
            match after.get(p) {
                None => diff.push(format!("deleted: {}", p.display())),
                Some(a) if a != s => diff.push(format!("changed: {} ({s} -> {a})", p.display())),
                _ => {}
            }
        }
        for p in after.keys().filter(|p| !self.before.contains_key(*p)) {
            diff.push(format!("created: {}", p.display()));
        }
        assert!(
            diff.is_empty(),
            "{what} touched the host outside the image root:\n{}",
            diff.join("\n")
        );
    }
}

/// `../` enough times to climb out of any temporary build root.
const UP: &str = "../../../../../../../../../../";

/// A context directory with `file.txt` (and whatever else the test adds).
fn context(dir: &Path) -> PathBuf {
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("file.txt"), "from-context\n").unwrap();
    ctx
}

/// A shell condition: `file` holds `content` (a trailing newline aside).
fn has(file: &str, content: &str) -> String {
    format!("test \"$(/bin/busybox cat '{file}')\" = '{content}'")
}

/// A shell condition: nothing is at `path`.
fn absent(path: &str) -> String {
    format!("test ! -e '{path}' -a ! -L '{path}'")
}

/// A `RUN` step that fails the build unless every condition holds in the image.
fn run_checks(conditions: &[String]) -> String {
    let script: Vec<String> = conditions
        .iter()
        .map(|c| {
            format!(
                "{c} || {{ echo \"check failed: {}\"; exit 1; }}",
                c.replace(['"', '$'], "")
            )
        })
        .collect();
    let argv = ["/bin/busybox", "sh", "-c", &script.join("\n")];
    format!("RUN {}\n", serde_json::to_string(&argv).unwrap())
}

// --- the tests -----------------------------------------------------------------

/// A layer that symlinks directories to host paths and then writes, whites out and
/// marks opaque through them: everything lands in (or is removed from) the image's
/// own copy of those paths.
#[test]
fn layers_writing_through_symlinks_stay_in_the_root() {
    let v = Victims::new(&[
        "passwd",
        "wh-target",
        "wh-dir/deep/file",
        "opq-dir/child",
        "opq-dir/sub/deep",
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let mut base = busybox_layer();
    base.symlink("etc", &v.path(""))
        .file("etc/passwd", b"image passwd")
        .symlink("wh", &v.path(""))
        .file("wh/.wh.wh-target", b"")
        .file("wh/.wh.wh-dir", b"")
        .symlink("opq", &v.path("opq-dir"))
        .file("opq/.wh..wh..opq", b"")
        .file("opq/new-in-opq", b"image opq");
    // A second layer whites out and marks opaque through the symlinks of the first.
    let mut second = Tar::default();
    second
        .file("opq/.wh..wh..opq", b"")
        .file("opq/added-after-opq", b"second layer")
        .file("etc/.wh.passwd", b"")
        .file("wh/.wh.wh-target", b"");
    load_image(
        &home,
        tmp.path(),
        "hostile/symlinks:1",
        &[base.finish(), second.finish()],
    );
    v.assert_untouched("berth image load");
    let ctx = context(tmp.path());
    let out = build(
        &home,
        &ctx,
        &format!(
            "FROM hostile/symlinks:1\nCOPY file.txt /file.txt\n{}",
            run_checks(&[
                has("/file.txt", "from-context"),
                // Layer one wrote passwd into the image's own copy of the victims'
                // directory; layer two removed it there.
                absent(&v.path("passwd")),
                absent("/etc/passwd"),
                // The opaque marker of layer two emptied the image's directory.
                absent(&v.path("opq-dir/new-in-opq")),
                has("/opq/added-after-opq", "second layer"),
            ])
        ),
        "built/symlinks:1",
    );
    v.assert_untouched("a build from layers writing through symlinks");
    assert!(out.status.success(), "{}", show(&out));
}

/// Entry names with `..` and absolute names stay in the root (`..` at the root is
/// the root); whiteouts with such names remove nothing outside.
#[test]
fn dotdot_and_absolute_names_stay_in_the_root() {
    let v = Victims::new(&["dotdot", "abs-file", "wh-dotdot", "wh-abs", "wh-dir/x"]);
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let mut base = busybox_layer();
    base.file(&format!("{UP}{}", v.path("dotdot")), b"image dotdot")
        .file(&v.path("abs-file"), b"image abs")
        .file(&format!("{UP}{}", v.path(".wh.wh-dotdot")), b"")
        .file(&v.path(".wh.wh-abs"), b"")
        .file(&format!("{UP}{}", v.path("wh-dir/.wh..wh..opq")), b"")
        .file(&format!("{UP}top"), b"image top");
    load_image(&home, tmp.path(), "hostile/dotdot:1", &[base.finish()]);
    let ctx = context(tmp.path());
    let out = build(
        &home,
        &ctx,
        &format!(
            "FROM hostile/dotdot:1\nCOPY file.txt /file.txt\n{}",
            run_checks(&[
                has(&v.path("dotdot"), "image dotdot"),
                has(&v.path("abs-file"), "image abs"),
                has("/top", "image top"),
            ])
        ),
        "built/dotdot:1",
    );
    v.assert_untouched("a build from a layer with .. and absolute names");
    assert!(out.status.success(), "{}", show(&out));
}

/// Hard links resolve both ends in the root: a link to `../../<host file>`, to an
/// absolute host path or through a symlink to a host directory links the image's
/// file of that name (and chowns that one); one whose target only the host has is
/// refused, naming the entry.
#[test]
fn hard_links_resolve_in_the_root() {
    let v = Victims::new(&["hard-target", "only-on-host"]);
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let in_root = v.path("hard-target");
    let mut base = busybox_layer();
    base.file(in_root.trim_start_matches('/'), b"image hard target")
        .hard_link("hl-rel", &format!("{UP}{}", v.path("hard-target")), 4242)
        .hard_link("hl-abs", &v.path("hard-target"), 4243)
        .symlink("etc", &v.path(""))
        .hard_link("hl-via-symlink", "etc/hard-target", 4244);
    load_image(&home, tmp.path(), "hostile/hardlinks:1", &[base.finish()]);
    let ctx = context(tmp.path());
    let out = build(
        &home,
        &ctx,
        &format!(
            "FROM hostile/hardlinks:1\nCOPY file.txt /file.txt\n{}",
            run_checks(&[
                has("/hl-rel", "image hard target"),
                has("/hl-abs", "image hard target"),
                has("/hl-via-symlink", "image hard target"),
            ])
        ),
        "built/hardlinks:1",
    );
    v.assert_untouched("a build from a layer with hard links out of the root");
    assert!(out.status.success(), "{}", show(&out));

    // A link to a file the image does not have.
    let mut bad = busybox_layer();
    bad.hard_link("steal", &format!("{UP}{}", v.path("only-on-host")), 4245);
    load_image(
        &home,
        tmp.path(),
        "hostile/hardlink-missing:1",
        &[bad.finish()],
    );
    let out = build(
        &home,
        &ctx,
        "FROM hostile/hardlink-missing:1\nCOPY file.txt /file.txt\n",
        "built/hardlink-missing:1",
    );
    v.assert_untouched("a build from a layer with a hard link to a host-only file");
    assert!(
        !out.status.success(),
        "the link cannot be made in the image"
    );
    let err = show(&out);
    assert!(err.contains("steal"), "the error names the entry: {err}");
}

/// COPY, ADD (and the archive ADD unpacks), WORKDIR and `COPY --from` follow the
/// image's symlinks inside the root: `COPY x /etc/` where the image's /etc points at
/// a host directory lands in the image's copy of that directory.
#[test]
fn build_steps_follow_image_symlinks_inside_the_root() {
    let v = Victims::new(&[
        "passwd",
        "copy-dir/",
        "add-dir/existing",
        "wd/",
        "from-stage",
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let mut base = busybox_layer();
    base.symlink("etc", &v.path(""))
        .symlink("link", &v.path("copy-dir/new"))
        .symlink("existing-link", &v.path("copy-dir"))
        .symlink("addto", &v.path("add-dir"))
        .symlink("wd", &v.path("wd"))
        .symlink("loop", "loop2")
        .symlink("loop2", "loop")
        .symlink("stage-link", &v.path(""));
    load_image(&home, tmp.path(), "hostile/steps:1", &[base.finish()]);
    let ctx = context(tmp.path());
    // The archive ADD unpacks: symlinks out, `..` names, an absolute name, a whiteout.
    let mut payload = Tar::default();
    payload
        .symlink("esc", &v.path("add-dir"))
        .file("esc/existing", b"added through esc")
        .symlink("esc-rel", &format!("{UP}{}", v.path("add-dir")))
        .file("esc-rel/new-rel", b"added through esc-rel")
        .file(
            &format!("{UP}{}", v.path("add-dir/dotdot")),
            b"added dotdot",
        )
        .file(&v.path("add-dir/abs"), b"added abs")
        .file("esc/.wh.existing", b"");
    std::fs::write(ctx.join("payload.tar"), payload.finish()).unwrap();
    // ADD unpacks into its destination as into a root of its own (as docker does).
    let add_root = format!("{}{}", v.path("add-dir"), v.path("add-dir"));
    let dockerfile = format!(
        "FROM hostile/steps:1 AS first\n\
         COPY file.txt /etc/\n\
         COPY file.txt /etc/passwd\n\
         COPY file.txt /link/\n\
         COPY file.txt /existing-link/copied\n\
         COPY file.txt /stage-link/from-stage\n\
         ADD payload.tar /addto/\n\
         WORKDIR /wd/sub\n\
         RUN [\"/bin/busybox\", \"touch\", \"ran-here\"]\n\
         {}\
         FROM hostile/steps:1\n\
         COPY --from=first /etc/file.txt /copied-file\n\
         COPY --from=first /stage-link/from-stage /copied-from-stage\n\
         COPY --from=first /stage-link/copy-dir/ /copied-dir/\n\
         {}",
        run_checks(&[
            has("/etc/file.txt", "from-context"),
            has("/etc/passwd", "from-context"),
            has("/link/file.txt", "from-context"),
            has("/existing-link/copied", "from-context"),
            has(&v.path("file.txt"), "from-context"),
            has(&v.path("copy-dir/new/file.txt"), "from-context"),
            has(&v.path("from-stage"), "from-context"),
            has(&v.path("wd/sub/ran-here"), ""),
            has(&format!("{add_root}/new-rel"), "added through esc-rel"),
            has(&format!("{add_root}/dotdot"), "added dotdot"),
            has(&format!("{add_root}/abs"), "added abs"),
            absent(&format!("{add_root}/existing")),
        ]),
        run_checks(&[
            has("/copied-file", "from-context"),
            has("/copied-from-stage", "from-context"),
            has("/copied-dir/new/file.txt", "from-context"),
            has("/copied-dir/copied", "from-context"),
        ]),
    );
    let out = build(&home, &ctx, &dockerfile, "built/steps:1");
    v.assert_untouched("COPY, ADD, WORKDIR and RUN through the image's symlinks");
    assert!(out.status.success(), "{}", show(&out));

    // A COPY into a symlink loop fails cleanly.
    let out = build(
        &home,
        &ctx,
        "FROM hostile/steps:1\nCOPY file.txt /loop/x\n",
        "built/loop:1",
    );
    v.assert_untouched("COPY into a symlink loop");
    assert!(!out.status.success());
    let err = show(&out);
    assert!(err.contains("symbolic links"), "{err}");

    // RUN mounts /proc and /dev in the image: not where a symlink there points.
    let mut base = busybox_layer();
    base.symlink("proc", &v.path("wd"));
    load_image(&home, tmp.path(), "hostile/proc:1", &[base.finish()]);
    let out = build(
        &home,
        &ctx,
        "FROM hostile/proc:1\nRUN [\"/bin/busybox\", \"true\"]\n",
        "built/proc:1",
    );
    v.assert_untouched("RUN in an image whose /proc is a symlink");
    assert!(!out.status.success());
    let err = show(&out);
    assert!(err.contains("/proc is not a directory"), "{err}");
}

/// `berth image load` of hostile archives: member names with `..` or absolute
/// names, symlink members (written through, or standing for the blobs directory or
/// a file a docker manifest names), and docker manifests naming host paths. Nothing
/// outside is written or read into the store, and each is refused clearly.
#[test]
fn hostile_load_archives_are_refused() {
    let v = Victims::new(&["secret", "blobs/sha256/placeholder", "dir/"]);
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let secret = std::fs::read(v.dir.join("secret")).unwrap();
    // A host blob directory holding a "blob" that is the secret.
    let secret_hex = sha256_hex(&secret);
    let fake_blobs = tmp.path().join("fake-blobs");
    std::fs::create_dir_all(fake_blobs.join("sha256")).unwrap();
    std::fs::write(fake_blobs.join("sha256").join(&secret_hex), &secret).unwrap();
    let fake_before = state(&fake_blobs);
    let store_has_secret = || home.join("images/blobs/sha256").join(&secret_hex).exists();
    let good = oci_archive("some/image:1", &[busybox_layer().finish()]);
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();

    // Member names that climb out, or are absolute.
    let mut t = Tar::default();
    t.file(&format!("{UP}{}", v.path("secret")), b"overwritten")
        .file(&format!("{UP}{}", v.path("new-dotdot")), b"new");
    cases.push(("dotdot members", t.finish(), ".."));
    let mut t = Tar::default();
    t.file(&v.path("secret"), b"overwritten")
        .file(&v.path("new-abs"), b"new");
    cases.push(("absolute members", t.finish(), "absolute"));
    // A symlink member, then members written through it.
    let mut t = Tar::default();
    t.symlink("out", &v.path(""))
        .file("out/secret", b"overwritten")
        .file("out/new-through-link", b"new")
        .symlink("out-rel", &format!("{UP}{}", v.path("dir")))
        .file("out-rel/new-through-rel-link", b"new");
    cases.push(("members through a symlink", t.finish(), "index.json"));
    // The blobs directory is a symlink to a host directory holding a matching blob.
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{secret_hex}"), "size": secret.len(),
        "annotations": {"org.opencontainers.image.ref.name": "stolen/secret:1"},
    }]}))
    .unwrap();
    let mut t = Tar::default();
    t.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
        .file("index.json", &index)
        .symlink("blobs", fake_blobs.to_str().unwrap());
    cases.push(("a symlinked blobs directory", t.finish(), "blobs"));
    // index.json itself a symlink to a host file.
    let mut t = Tar::default();
    t.symlink("index.json", &v.path("secret"));
    cases.push(("a symlinked index.json", t.finish(), "index.json"));
    // docker archives whose manifest names host files, by absolute path, by `..`,
    // and through a symlink member.
    for (label, config, layer) in [
        (
            "docker Config by absolute path",
            v.path("secret"),
            "layer.tar".to_owned(),
        ),
        (
            "docker Layers by ..",
            "config.json".to_owned(),
            format!("{UP}{}", v.path("secret")),
        ),
        (
            "docker Layers through a symlink",
            "config.json".to_owned(),
            "link/secret".to_owned(),
        ),
    ] {
        let manifest = serde_json::to_vec(&json!([{
            "Config": config, "RepoTags": ["stolen/docker:1"], "Layers": [layer],
        }]))
        .unwrap();
        let mut t = Tar::default();
        t.file("manifest.json", &manifest)
            .file("config.json", br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#)
            .file("layer.tar", &busybox_layer().finish())
            .symlink("link", &v.path(""));
        cases.push((label, t.finish(), "not in the archive"));
    }
    // The good archive, with a hostile member added at the end.
    let mut t = Tar(good[..good.len() - 1024].to_vec());
    t.file(&format!("{UP}{}", v.path("late")), b"late");
    cases.push(("a good archive with a .. member", t.finish(), ".."));

    // Every case is tried; the failures are reported together.
    let mut problems = Vec::new();
    for (label, archive, expected) in cases {
        let path = tmp.path().join("hostile.tar");
        std::fs::write(&path, archive).unwrap();
        let out = berth(
            &home,
            &["image", "load", "-i", path.to_str().unwrap()],
            None,
        );
        let err = show(&out);
        let result = std::panic::catch_unwind(|| {
            v.assert_untouched(&format!("berth image load of {label}"))
        });
        if let Err(e) = result {
            let e = e.downcast_ref::<String>().cloned().unwrap_or_default();
            problems.push(format!("{label}: {e}"));
        }
        if state(&fake_blobs) != fake_before {
            problems.push(format!("{label}: the host blob directory changed"));
        }
        if store_has_secret() {
            problems.push(format!("{label}: a host file was read into the store"));
        }
        if out.status.success() {
            problems.push(format!("{label}: loaded anyway:\n{err}"));
        } else if !err.contains(expected) {
            problems.push(format!(
                "{label}: the error should say {expected:?}:\n{err}"
            ));
        }
        let listed = berth(&home, &["image", "ls"], None);
        if !listed.status.success() || show(&listed).contains("stolen") {
            problems.push(format!(
                "{label}: a hostile image is listed:\n{}",
                show(&listed)
            ));
        }
        // Start each case from an empty store.
        std::fs::remove_dir_all(&home).unwrap();
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    // Symbolic links inside an archive still work, resolved in it: a docker archive
    // whose layers are links to one file (as `docker save` once wrote), one of them
    // absolute (the archive's own /layer.tar).
    let manifest = serde_json::to_vec(&json!([{
        "Config": "config.json", "RepoTags": ["docker/style:1"],
        "Layers": ["a/layer.tar", "b/layer.tar"],
    }]))
    .unwrap();
    let mut t = Tar::default();
    t.file("manifest.json", &manifest)
        .file(
            "config.json",
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .file("layer.tar", &busybox_layer().finish())
        .dir("a/")
        .symlink("a/layer.tar", "../layer.tar")
        .dir("b/")
        .symlink("b/layer.tar", "/layer.tar");
    let path = tmp.path().join("docker-style.tar");
    std::fs::write(&path, t.finish()).unwrap();
    let out = ok(&home, &["image", "load", "-i", path.to_str().unwrap()]);
    assert!(out.contains("docker/style:1"), "{out}");
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&home, &["image", "inspect", "docker/style:1"])).unwrap();
    assert_eq!(inspect[0]["Size"].as_u64().map(|s| s > 100_000), Some(true));
    v.assert_untouched("loading a docker archive with symbolic links");

    // The well-formed archive still loads.
    let path = tmp.path().join("good.tar");
    std::fs::write(&path, &good).unwrap();
    let out = ok(&home, &["image", "load", "-i", path.to_str().unwrap()]);
    assert!(out.contains("some/image:1"), "{out}");
    // And what `berth image save` writes loads into another store.
    let saved = tmp.path().join("saved.tar");
    ok(
        &home,
        &[
            "image",
            "save",
            "some/image:1",
            "-o",
            saved.to_str().unwrap(),
        ],
    );
    let other = tmp.path().join("other-home");
    let out = ok(&other, &["image", "load", "-i", saved.to_str().unwrap()]);
    assert!(out.contains("some/image:1"), "{out}");
    assert_eq!(
        ok(&home, &["image", "inspect", "some/image:1"]),
        ok(&other, &["image", "inspect", "some/image:1"])
    );
    v.assert_untouched("loading well-formed archives");
}
