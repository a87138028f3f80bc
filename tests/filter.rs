//! `Builder::filter` and `RUST_LOG`: directive precedence, bare targets, `off`, byte
//! prefixes (as env_logger), errors naming the token, the environment's override and
//! its malformed directives, and `log` and tracing filtering alike, per callsite.
//!
//! Installing is once per process and `RUST_LOG` is process-wide, so every scenario
//! that installs runs in a child process (see `support/child.rs`) with the
//! environment it needs.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use log::Log;
use support::common::{lines, temp_log};
use support::storm::child::{self, Run, Watch};

const SUITE: &str = "filter";

const WATCH: Watch = Watch {
    stall: Duration::from_secs(20),
    total: Duration::from_secs(50),
    stacks: false,
};

/// Runs `scenario` in a child with `env` set (and `RUST_LOG` removed unless `env`
/// sets it).
fn in_child(test_name: &str, env: &[(&str, &str)], scenario: impl FnOnce()) -> Option<Run> {
    let mut command: Command = child::self_test_command(test_name, test_name);
    command.env_remove("RUST_LOG");
    for (key, value) in env {
        command.env(key, value);
    }
    let run = child::in_child(test_name, Some(command), WATCH, scenario)?;
    child::echo_measured(test_name, &run);
    Some(run)
}

fn install(name: &str, builder: quelog::Builder) -> (quelog::Guard, PathBuf) {
    let path = temp_log(SUITE, name);
    let guard = builder.file(&path).install().expect("install quelog");
    (guard, path)
}

/// The `target: message` part of every line written.
fn written(guard: quelog::Guard, path: &Path) -> Vec<String> {
    guard.flush().unwrap();
    guard.stop().unwrap();
    let lines = lines(path);
    if let Some(dir) = path.parent().and_then(Path::parent) {
        let _ = std::fs::remove_dir_all(dir);
    }
    lines
        .iter()
        .map(|l| l.split_once("] ").map_or(l.as_str(), |(_, b)| b).to_owned())
        .collect()
}

use support::common::{Counted, COUNTED};

/// Logs one record with `log` and one tracing event at every level for the targets
/// the precedence scenario uses; the message says which.
macro_rules! everywhere {
    ($target:literal) => {
        log::error!(target: $target, "log error {:?}", Counted);
        log::warn!(target: $target, "log warn {:?}", Counted);
        log::info!(target: $target, "log info {:?}", Counted);
        log::debug!(target: $target, "log debug {:?}", Counted);
        log::trace!(target: $target, "log trace {:?}", Counted);
        tracing::error!(target: $target, v = ?Counted, "tracing error");
        tracing::warn!(target: $target, v = ?Counted, "tracing warn");
        tracing::info!(target: $target, v = ?Counted, "tracing info");
        tracing::debug!(target: $target, v = ?Counted, "tracing debug");
        tracing::trace!(target: $target, v = ?Counted, "tracing trace");
    };
}

/// What the scenario expects at `target`, the most verbose level written (0 none,
/// 1 error .. 5 trace): `log` and tracing both.
fn expected(target: &str, most: usize) -> Vec<String> {
    let levels = ["error", "warn", "info", "debug", "trace"];
    let mut out = Vec::new();
    for level in &levels[..most] {
        out.push(format!("{target}: log {level} counted"));
    }
    for level in &levels[..most] {
        out.push(format!("{target}: tracing {level} v=counted"));
    }
    out
}

#[test]
fn precedence_bare_targets_off_and_prefixes_for_log_and_tracing() {
    in_child(
        "precedence_bare_targets_off_and_prefixes_for_log_and_tracing",
        &[],
        || {
            let spec = "warn,app=debug,app::db=trace,app::db::noisy=off,tool";
            let (guard, path) = install("precedence", quelog::Builder::new().filter(spec));
            // The most verbose level any directive enables reached both.
            assert_eq!(log::max_level(), log::LevelFilter::Trace);
            assert_eq!(
                tracing_core::LevelFilter::current(),
                tracing_core::LevelFilter::TRACE
            );
            COUNTED.store(0, Relaxed);
            everywhere!("app");
            everywhere!("app::web");
            everywhere!("app::db");
            everywhere!("app::db::pool");
            everywhere!("app::db::noisy");
            everywhere!("app::db::noisy::deeper");
            everywhere!("app_extra");
            everywhere!("ap");
            everywhere!("tool::x");
            everywhere!("other");
            let mut want = Vec::new();
            for (target, most) in [
                ("app", 4),
                ("app::web", 4),
                ("app::db", 5),
                ("app::db::pool", 5),
                ("app::db::noisy", 0),
                ("app::db::noisy::deeper", 0),
                // A byte prefix, as env_logger matches: `app` covers `app_extra`.
                ("app_extra", 4),
                ("ap", 2),
                ("tool::x", 5),
                ("other", 2),
            ] {
                want.extend(expected(target, most));
            }
            // Every record written formatted its argument once; no other did.
            assert_eq!(COUNTED.load(Relaxed) as usize, want.len());
            let got = written(guard, &path);
            assert_eq!(got, want);
            println!(
                "MEASURED {} records kept of 100, as the directives say",
                got.len()
            );
        },
    );
}

#[test]
fn tracing_callsites_are_filtered_per_target_and_never_evaluated() {
    in_child(
        "tracing_callsites_are_filtered_per_target_and_never_evaluated",
        &[],
        || {
            let builder = quelog::Builder::new().filter("info,chatty=error,deep::inner=trace");
            let (guard, path) = install("callsites", builder);
            COUNTED.store(0, Relaxed);
            let mut disabled_spans = 0;
            for _ in 0..1_000 {
                tracing::warn!(target: "chatty", v = ?Counted, "filtered");
                tracing::debug!(target: "deep", v = ?Counted, "filtered");
                log::warn!(target: "chatty::sub", "filtered {:?}", Counted);
                let span = tracing::info_span!(target: "chatty", "span", v = ?Counted);
                disabled_spans += usize::from(span.is_disabled());
            }
            assert_eq!(COUNTED.load(Relaxed), 0, "a filtered field was evaluated");
            assert_eq!(disabled_spans, 1_000);
            assert!(!tracing::enabled!(target: "chatty", tracing::Level::WARN));
            assert!(tracing::enabled!(target: "chatty", tracing::Level::ERROR));
            assert!(tracing::enabled!(target: "deep::inner", tracing::Level::TRACE));
            assert!(!log::log_enabled!(target: "deep", log::Level::Debug));
            assert!(log::log_enabled!(target: "deep::inner::x", log::Level::Trace));
            tracing::trace!(target: "deep::inner", v = ?Counted, "kept");
            assert_eq!(COUNTED.load(Relaxed), 1);
            let got = written(guard, &path);
            assert_eq!(got, ["deep::inner: kept v=counted"]);
            println!("MEASURED 4,000 filtered calls: 0 Debug calls; 1 kept");
        },
    );
}

#[test]
fn rust_log_replaces_the_code_filter() {
    in_child(
        "rust_log_replaces_the_code_filter",
        &[("RUST_LOG", "error,app=info")],
        || {
            let (guard, path) = install("env", quelog::Builder::new().filter("trace"));
            assert_eq!(log::max_level(), log::LevelFilter::Info);
            log::debug!(target: "app", "app debug");
            log::info!(target: "app::x", "app info");
            log::warn!(target: "other", "other warn");
            log::error!(target: "other", "other error");
            tracing::info!(target: "app", "tracing app info");
            tracing::warn!(target: "other", "tracing other warn");
            let got = written(guard, &path);
            assert_eq!(
                got,
                [
                    "app::x: app info",
                    "other: other error",
                    "app: tracing app info"
                ]
            );
        },
    );
}

#[test]
fn malformed_rust_log_warns_first_and_the_rest_works() {
    let run = in_child(
        "malformed_rust_log_warns_first_and_the_rest_works",
        &[("RUST_LOG", "warn,app=loud,app::db=debug,x[span]=info")],
        || {
            let (guard, path) = install("malformed", quelog::Builder::new());
            log::debug!(target: "app::db", "db debug");
            log::info!(target: "app", "app info");
            log::warn!(target: "app", "app warn");
            let got = written(guard, &path);
            assert_eq!(got.len(), 3, "{got:?}");
            assert!(got[0].starts_with("quelog: RUST_LOG: ignored malformed directives"));
            assert!(got[0].contains("\"app=loud\" (not a level"), "{}", got[0]);
            assert!(
                got[0].contains("\"x[span]=info\" (span and field"),
                "{}",
                got[0]
            );
            assert_eq!(got[1..], ["app::db: db debug", "app: app warn"]);
        },
    );
    if let Some(run) = run {
        assert!(
            run.stderr
                .contains("quelog: WARN RUST_LOG: ignored malformed directives")
                && run.stderr.contains("app=loud"),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn rust_log_of_only_bad_directives_keeps_the_code_filter() {
    in_child(
        "rust_log_of_only_bad_directives_keeps_the_code_filter",
        &[("RUST_LOG", "app=loud")],
        || {
            let (guard, path) = install("onlybad", quelog::Builder::new().filter("warn"));
            log::info!("dropped");
            log::warn!(target: "w", "kept");
            let got = written(guard, &path);
            assert_eq!(got.len(), 2, "{got:?}");
            assert!(
                got[0].ends_with("; using the configured filter"),
                "{}",
                got[0]
            );
            assert_eq!(got[1], "w: kept");
        },
    );
}

#[test]
fn env_var_none_ignores_rust_log_and_another_name_is_read() {
    in_child(
        "env_var_none_ignores_rust_log_and_another_name_is_read",
        &[("RUST_LOG", "off"), ("MY_LOG", "debug")],
        || {
            let (handler, _listener) = quelog::Builder::new()
                .filter("info")
                .env_var(None)
                .file(temp_log(SUITE, "none"))
                .build()
                .unwrap();
            assert_eq!(handler.level(), log::LevelFilter::Info);
            let (handler, _listener) = quelog::Builder::new()
                .filter("info")
                .env_var(Some("MY_LOG"))
                .file(temp_log(SUITE, "mine"))
                .build()
                .unwrap();
            assert_eq!(handler.level(), log::LevelFilter::Debug);
            let (handler, _listener) = quelog::Builder::new()
                .filter("info")
                .file(temp_log(SUITE, "default"))
                .build()
                .unwrap();
            assert_eq!(handler.level(), log::LevelFilter::Off);
        },
    );
}

fn metadata(level: log::Level, target: &str) -> log::Metadata<'_> {
    log::Metadata::builder().level(level).target(target).build()
}

#[test]
fn errors_in_code_name_the_token_and_why() {
    for (spec, token, why) in [
        ("info,app=loud", "app=loud", "not a level"),
        (
            "app[span]=debug",
            "app[span]=debug",
            "span and field directives",
        ),
        (
            "app{user=ann}",
            "app{user=ann}",
            "span and field directives",
        ),
        ("info/regex", "info/regex", "regex"),
        ("a=b=c", "a=b=c", "more than one '='"),
        ("=info", "=info", "empty target"),
        ("", "", "no directive"),
    ] {
        let result = quelog::Builder::new()
            .filter(spec)
            .env_var(None)
            .file(temp_log(SUITE, "error"))
            .build();
        match result {
            Err(quelog::Error::InvalidFilter { token: t, reason }) => {
                assert_eq!(t, token, "{spec}");
                assert!(reason.contains(why), "{spec}: {reason}");
                let text = quelog::Error::InvalidFilter { token: t, reason }.to_string();
                assert!(text.contains(&format!("{token:?}")), "{text}");
            }
            other => panic!("{spec}: {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn a_built_handler_filters_without_installing() {
    let (handler, _listener) = quelog::Builder::new()
        .filter("warn,app=debug,app::db=trace")
        .env_var(None)
        .file(temp_log(SUITE, "built"))
        .build()
        .unwrap();
    assert_eq!(handler.level(), log::LevelFilter::Trace);
    assert!(handler.enabled(&metadata(log::Level::Trace, "app::db::pool")));
    assert!(!handler.enabled(&metadata(log::Level::Trace, "app::web")));
    assert!(handler.enabled(&metadata(log::Level::Debug, "app::web")));
    assert!(!handler.enabled(&metadata(log::Level::Info, "web")));
    assert!(handler.enabled(&metadata(log::Level::Warn, "web")));
    // Without a filter, the level alone, as before.
    let (handler, _listener) = quelog::Builder::new()
        .level(log::LevelFilter::Debug)
        .env_var(None)
        .file(temp_log(SUITE, "level"))
        .build()
        .unwrap();
    assert!(handler.enabled(&metadata(log::Level::Debug, "anything")));
    assert!(!handler.enabled(&metadata(log::Level::Trace, "anything")));
}
