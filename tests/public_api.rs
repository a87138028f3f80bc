//! What a user's build of quelog contains: a scratch crate that depends on quelog the
//! way a user does (by path, default features) must not reach the test machinery
//! (hooks that wedge the ring or kill the listener, fuzz entry points) nor the record
//! internals, and must not build config structs with struct literals (they grow).
//! Each case is `cargo check`ed for real; the control case proves the scratch crate
//! builds at all, so a failure means the item is out of reach, not a broken setup.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Creates a crate at `dir` whose `main.rs` is `body`, depending on this quelog.
fn scratch_crate(dir: &Path, body: &str) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let manifest = format!(
        "[package]\nname = \"user\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n\
         [dependencies]\nquelog = {{ path = {:?} }}\nlog = \"0.4\"\n\n[workspace]\n",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(dir.join("src/main.rs"), body).unwrap();
}

/// `cargo check`s `body` in a scratch crate; the compiler's output when it fails.
fn check(name: &str, body: &str) -> Result<(), String> {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("public-api");
    let dir = root.join(name);
    scratch_crate(&dir, body);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["check", "--quiet", "--offline"])
        .current_dir(&dir)
        // One target directory for every case, so dependencies build once.
        .env("CARGO_TARGET_DIR", root.join("target"))
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo");
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[test]
fn a_users_build_has_no_test_machinery_and_configs_grow_without_breaking_users() {
    check(
        "control",
        r#"fn main() {
            let mut queue = quelog::QueueConfig::default();
            queue.capacity = 1 << 20;
            let mut listener = quelog::ListenerConfig::default();
            listener.shutdown_timeout = std::time::Duration::from_secs(1);
            let _ = quelog::Builder::new().shutdown_timeout(listener.shutdown_timeout);
            let _ = quelog::QueueHandler::new(&queue);
            let _ = quelog::Builder::new()
                .output(quelog::Output::stdout().format(quelog::Format::Json).level(log::LevelFilter::Warn));
        }"#,
    )
    .expect("the control crate must build: the harness itself is broken");

    let unreachable = [
        (
            "test-hooks",
            "let _ = quelog::test_hooks::ring_slots;",
            "test_hooks",
        ),
        (
            "fuzzing",
            "let _ = quelog::fuzzing::ring_against_model;",
            "fuzzing",
        ),
        (
            "builder-hooks",
            "let _ = quelog::Builder::new().listener_hooks(Default::default());",
            "listener_hooks",
        ),
        (
            "record-view",
            "let _: Option<quelog::RecordView<'static>> = None;",
            "RecordView",
        ),
        ("decode", "let _ = quelog::decode_record;", "decode_record"),
        (
            "format-match",
            "match quelog::Format::Text { quelog::Format::Text | quelog::Format::Json \
             | quelog::Format::JsonEcs | quelog::Format::JsonGcp => {} }",
            "non-exhaustive",
        ),
        (
            "queue-literal",
            "let _ = quelog::QueueConfig { capacity: 1024, ..Default::default() };",
            "non-exhaustive",
        ),
        (
            "listener-literal",
            "let _ = quelog::ListenerConfig { max_batch: 1, ..Default::default() };",
            "non-exhaustive",
        ),
    ];
    for (name, line, expected) in unreachable {
        let body = format!("fn main() {{ {line} }}");
        match check(name, &body) {
            Ok(()) => panic!("a user's build reaches `{line}`"),
            Err(errors) => assert!(
                errors.contains(expected),
                "`{line}` failed for another reason than expected ({expected}):\n{errors}"
            ),
        }
    }
}
