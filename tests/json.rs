//! JSON lines (`Format::Json` and its presets) and the `Output` builder: every line the
//! tests write is parsed with serde_json (and checked for duplicate keys); typed
//! fields, reserved-key collisions, spans, adversarial strings, a 100 KB field, the
//! source location on request, quelog's own notices, the everyday one-line set-ups;
//! and the `format_json` fuzz corpus replayed through the fuzz target's own check.

mod support;
use support::common::Memory;

#[path = "../fuzz/json_check.rs"]
mod json_check;

use std::process::Command;

use log::{Level, LevelFilter, Log, Record};
use quelog::{Builder, Format, ListenerConfig, Output, QueueConfig, QueueHandler, QueueListener};
use serde_json::Value;
use support::common::temp_log;

const SUITE: &str = "json";

impl Memory {
    /// Every line, checked (one object, unique keys) and parsed.
    fn objects(&self) -> Vec<Value> {
        parse_lines(&self.0.lock().unwrap())
    }
}

/// Checks and parses every line of `bytes`.
fn parse_lines(bytes: &[u8]) -> Vec<Value> {
    bytes
        .split_inclusive(|&b| b == b'\n')
        .map(|line| {
            json_check::one_object_line(line);
            serde_json::from_slice(line).unwrap()
        })
        .collect()
}

/// A queue with one JSON output of `format` into memory; `build` tweaks the builder.
fn json_builder(format: Format, source: bool, memory: &Memory) -> Builder {
    Builder::new()
        .level(LevelFilter::Trace)
        .tracing(false)
        .output(
            Output::sink(memory.clone())
                .format(format)
                .source_location(source),
        )
}

fn log_at(handler: &QueueHandler, level: Level, message: std::fmt::Arguments<'_>) {
    handler.log(
        &Record::builder()
            .level(level)
            .target("app::db")
            .file(Some("src/db.rs"))
            .line(Some(42))
            .args(message)
            .build(),
    );
}

#[test]
fn the_default_keys_and_their_types() {
    let memory = Memory::default();
    let (handler, listener) = json_builder(Format::Json, false, &memory).build().unwrap();
    log_at(&handler, Level::Warn, format_args!("connected in {} ms", 3));
    listener.stop().unwrap();
    let objects = memory.objects();
    assert_eq!(objects.len(), 1);
    let o = &objects[0];
    assert_eq!(o["level"], "WARN");
    assert_eq!(o["message"], "connected in 3 ms");
    assert_eq!(o["target"], "app::db");
    assert!(o["thread_id"].as_u64().unwrap() > 0);
    assert!(o["thread"].is_string(), "{o}");
    let stamp = o["timestamp"].as_str().unwrap();
    // RFC 3339, microseconds, Z.
    assert_eq!(stamp.len(), "2026-11-22T04:14:35.123456Z".len(), "{stamp}");
    assert!(stamp.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(stamp).is_ok());
    // No source location unless asked for.
    assert!(o.get("file").is_none() && o.get("line").is_none());
}

#[test]
fn file_and_line_on_request_in_every_preset() {
    for (format, check) in [
        (
            Format::Json,
            (|o: &Value| o["file"] == "src/db.rs" && o["line"] == 42) as fn(&Value) -> bool,
        ),
        (Format::JsonEcs, |o| {
            o["log.origin.file.name"] == "src/db.rs" && o["log.origin.file.line"] == 42
        }),
        (Format::JsonGcp, |o| {
            let at = &o["logging.googleapis.com/sourceLocation"];
            at["file"] == "src/db.rs" && at["line"] == "42"
        }),
    ] {
        let memory = Memory::default();
        let (handler, listener) = json_builder(format, true, &memory).build().unwrap();
        log_at(&handler, Level::Info, format_args!("here"));
        listener.stop().unwrap();
        let o = &memory.objects()[0];
        assert!(check(o), "{format:?}: {o}");
    }
}

#[test]
fn ecs_and_gcp_presets_use_their_keys() {
    let memory = Memory::default();
    let (handler, listener) = json_builder(Format::JsonEcs, false, &memory)
        .build()
        .unwrap();
    log_at(&handler, Level::Error, format_args!("boom"));
    listener.stop().unwrap();
    let o = &memory.objects()[0];
    assert_eq!(o["log.level"], "ERROR");
    assert_eq!(o["message"], "boom");
    assert_eq!(o["ecs.version"], "1.6.0");
    assert_eq!(o["log.logger"], "app::db");
    assert!(o["@timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(o["process.thread.id"].is_u64());
    assert!(o.get("timestamp").is_none() && o.get("level").is_none());

    let memory = Memory::default();
    let (handler, listener) = json_builder(Format::JsonGcp, false, &memory)
        .build()
        .unwrap();
    for level in [Level::Warn, Level::Trace, Level::Info] {
        log_at(&handler, level, format_args!("m"));
    }
    listener.stop().unwrap();
    let objects = memory.objects();
    let severities: Vec<&str> = objects
        .iter()
        .map(|o| o["severity"].as_str().unwrap())
        .collect();
    assert_eq!(severities, ["WARNING", "DEBUG", "INFO"]);
    assert!(objects[0]["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(objects[0]["message"], "m");
}

#[test]
fn adversarial_messages_stay_one_valid_line() {
    let memory = Memory::default();
    let (handler, listener) = json_builder(Format::Json, false, &memory).build().unwrap();
    let nasty = [
        "quote \" backslash \\ slash /",
        "newline\nreturn\r\ntab\tnul\0bell\x07esc\x1b[31m del\x7f",
        "line separators \u{2028} \u{2029} and \u{feff} bom",
        "\"}\n{\"forged\":true}",
        "emoji 🦀 and combining e\u{301}",
        "",
    ];
    for text in nasty {
        log_at(&handler, Level::Info, format_args!("{text}"));
    }
    listener.stop().unwrap();
    let raw = memory.0.lock().unwrap().clone();
    // U+2028/9 are escaped, not passed through.
    assert!(!String::from_utf8_lossy(&raw).contains('\u{2028}'));
    let objects = parse_lines(&raw);
    assert_eq!(objects.len(), nasty.len());
    for (o, text) in objects.iter().zip(nasty) {
        assert_eq!(o["message"], text);
        assert!(o.get("forged").is_none());
    }
}

#[test]
fn a_100_kb_field_and_message_are_kept_whole() {
    let memory = Memory::default();
    let big: String = (0..100_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let (handler, listener) = json_builder(Format::Json, false, &memory)
        .max_record(1 << 20)
        .capacity(8 << 20)
        .build()
        .unwrap();
    let subscriber = handler.tracing_subscriber();
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(blob = big.as_str(), "with a blob");
    });
    log_at(&handler, Level::Info, format_args!("{big}\"\n"));
    listener.stop().unwrap();
    let objects = memory.objects();
    assert_eq!(objects[0]["blob"], big.as_str());
    assert_eq!(objects[1]["message"], format!("{big}\"\n"));
}

#[test]
fn typed_fields_keep_their_types() {
    let memory = Memory::default();
    let (handler, listener) = json_builder(Format::Json, false, &memory).build().unwrap();
    let subscriber = handler.tracing_subscriber();
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(
            answer = 42u64,
            delta = -7i64,
            ratio = 0.25f64,
            nan = f64::NAN,
            up = f64::INFINITY,
            down = f64::NEG_INFINITY,
            ok = true,
            huge = u128::MAX,
            tiny = i128::MIN,
            name = "ann \"the\" \\ admin\n",
            debug = ?Some(3),
            shown = %"displayed",
            "typed"
        );
    });
    listener.stop().unwrap();
    let o = &memory.objects()[0];
    assert_eq!(o["answer"], 42);
    assert_eq!(o["delta"], -7);
    assert_eq!(o["ratio"], 0.25);
    assert_eq!(o["nan"], "NaN");
    assert_eq!(o["up"], "Infinity");
    assert_eq!(o["down"], "-Infinity");
    assert_eq!(o["ok"], true);
    assert!(o["huge"].is_number() && o["tiny"].is_number(), "{o}");
    assert!((o["huge"].as_f64().unwrap() - u128::MAX as f64).abs() < 1e25);
    assert_eq!(o["name"], "ann \"the\" \\ admin\n");
    assert_eq!(o["debug"], "Some(3)");
    assert_eq!(o["shown"], "displayed");
    assert_eq!(o["message"], "typed");
}

#[test]
fn fields_named_like_reserved_keys_are_kept_under_a_prefix() {
    let memory = Memory::default();
    let (handler, listener) = json_builder(Format::Json, false, &memory).build().unwrap();
    let subscriber = handler.tracing_subscriber();
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(
            message_id = 1,
            level = "custom",
            target = 3,
            timestamp = "then",
            spans = false,
            "the message"
        );
    });
    listener.stop().unwrap();
    let o = &memory.objects()[0];
    assert_eq!(o["message"], "the message");
    assert_eq!(o["level"], "INFO");
    assert_eq!(o["fields.level"], "custom");
    assert_eq!(o["target"], "json");
    assert_eq!(o["fields.target"], 3);
    assert_eq!(o["fields.timestamp"], "then");
    assert_eq!(o["fields.spans"], false);
    assert_eq!(o["message_id"], 1);
}

#[test]
fn the_span_chain_outermost_first_with_typed_fields() {
    let memory = Memory::default();
    let (handler, listener) = json_builder(Format::Json, false, &memory).build().unwrap();
    let subscriber = handler.tracing_subscriber();
    tracing::subscriber::with_default(subscriber, || {
        let outer = tracing::info_span!("request", id = 7u64, path = "/a\"b");
        let _outer = outer.enter();
        let inner = tracing::info_span!("db", name = "users", ok = true);
        let _inner = inner.enter();
        tracing::info!(rows = 3, "query");
    });
    tracing::subscriber::with_default(handler.tracing_subscriber(), || {
        tracing::info!("outside");
    });
    listener.stop().unwrap();
    let objects = memory.objects();
    let spans = objects[0]["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0]["name"], "request");
    assert_eq!(spans[0]["id"], 7);
    assert_eq!(spans[0]["path"], "/a\"b");
    assert_eq!(spans[1]["name"], "db");
    assert_eq!(spans[1]["fields.name"], "users");
    assert_eq!(spans[1]["ok"], true);
    assert_eq!(objects[0]["rows"], 3);
    assert!(objects[1].get("spans").is_none());
}

#[test]
fn drop_notices_are_json_lines_in_a_json_sink() {
    let memory = Memory::default();
    let handler = QueueHandler::new(&{
        let mut c = QueueConfig::default();
        c.capacity = 1024;
        c.level = LevelFilter::Trace;
        c
    })
    .unwrap();
    for i in 0..100 {
        log_at(&handler, Level::Info, format_args!("early {i}"));
    }
    let dropped = handler.stats().dropped.queue_full;
    assert!(dropped > 0);
    let listener = QueueListener::start_outputs(
        &handler,
        vec![Output::sink(memory.clone()).format(Format::Json)],
        ListenerConfig::default(),
    )
    .unwrap();
    listener.stop().unwrap();
    let objects = memory.objects();
    assert_eq!(objects[0]["target"], "quelog");
    assert_eq!(objects[0]["level"], "WARN");
    assert_eq!(objects[0]["thread"], "quelog");
    assert_eq!(
        objects[0]["message"],
        format!("{dropped} records dropped (queue full)")
    );
    assert_eq!(objects.len() as u64, 1 + 100 - dropped);
}

#[test]
fn a_cut_message_is_marked() {
    let memory = Memory::default();
    let (handler, listener) = json_builder(Format::Json, false, &memory)
        .max_record(64)
        .build()
        .unwrap();
    log_at(&handler, Level::Info, format_args!("{}", "x".repeat(200)));
    listener.stop().unwrap();
    let o = &memory.objects()[0];
    assert_eq!(o["quelog"]["message_bytes"], 200);
    assert!(o["message"].as_str().unwrap().len() < 200);
}

/// The everyday set-ups, as the docs show them, one line each.
#[test]
fn one_line_setups_text_file_and_json_file() {
    let text = temp_log(SUITE, "app.log");
    let (handler, listener) = Builder::new().file(&text).tracing(false).build().unwrap();
    log_at(&handler, Level::Info, format_args!("as text"));
    listener.stop().unwrap();
    let written = std::fs::read_to_string(&text).unwrap();
    assert!(
        written.contains(" INFO [") && written.ends_with(" app::db: as text\n"),
        "{written}"
    );

    let json = temp_log(SUITE, "app.json");
    let (handler, listener) = Builder::new()
        .output(Output::file(&json).format(Format::Json))
        .tracing(false)
        .build()
        .unwrap();
    log_at(&handler, Level::Info, format_args!("as json"));
    listener.stop().unwrap();
    let objects = parse_lines(&std::fs::read(&json).unwrap());
    assert_eq!(objects[0]["message"], "as json");
}

/// In a child process (standard output and error are the child's): JSON on stdout;
/// text on stderr at warn beside a JSON file at debug.
#[test]
fn one_line_setups_on_standard_streams() {
    const CHILD: &str = "QUELOG_JSON_CHILD";
    if let Ok(path) = std::env::var(CHILD) {
        let (handler, listener) = Builder::new()
            .output(Output::stdout().format(Format::Json))
            .tracing(false)
            .build()
            .unwrap();
        log_at(&handler, Level::Info, format_args!("to stdout"));
        listener.stop().unwrap();
        let (handler, listener) = Builder::new()
            .level(LevelFilter::Debug)
            .stderr(LevelFilter::Warn)
            .output(Output::file(&path).format(Format::Json))
            .tracing(false)
            .build()
            .unwrap();
        log_at(&handler, Level::Debug, format_args!("debug detail"));
        log_at(&handler, Level::Warn, format_args!("warning"));
        listener.stop().unwrap();
        return;
    }
    let path = temp_log(SUITE, "beside.json");
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "one_line_setups_on_standard_streams",
            "--exact",
            "--test-threads=1",
        ])
        .env(CHILD, &path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    // libtest's "test ... " may precede the line on standard output.
    let stdout: Vec<u8> = String::from_utf8_lossy(&output.stdout)
        .split_inclusive('\n')
        .filter_map(|line| line.find("{\"timestamp\"").map(|at| &line[at..]))
        .collect::<String>()
        .into_bytes();
    let objects = parse_lines(&stdout);
    assert_eq!(
        objects.len(),
        1,
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(objects[0]["message"], "to stdout");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(" WARN ") && stderr.contains("app::db: warning"),
        "{stderr}"
    );
    assert!(!stderr.contains("debug detail"), "{stderr}");
    let messages: Vec<Value> = parse_lines(&std::fs::read(&path).unwrap())
        .into_iter()
        .map(|o| o["message"].clone())
        .collect();
    assert_eq!(messages, ["debug detail", "warning"]);
}

/// Every file of the fuzz corpus, through the fuzz target's own check.
#[test]
fn the_format_json_fuzz_corpus_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/format_json");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        json_check::check(&quelog::fuzzing::format_json(&data));
        count += 1;
    }
    assert!(count >= 5, "the seed corpus is in {}", dir.display());
}

/// Pseudo-random inputs through the same check, so `cargo test` exercises it beyond
/// the corpus between fuzzing sessions.
#[test]
fn pseudo_random_inputs_pass_the_fuzz_check() {
    let mut next = quelog::fuzzing::pseudo_random();
    for _ in 0..3000 {
        let len = next() as usize % 400;
        // Small bytes often: short chunks and the reserved names.
        let data: Vec<u8> = (0..len)
            .map(|_| {
                let x = next();
                if x % 3 == 0 {
                    (x >> 8) as u8 % 16
                } else {
                    (x >> 8) as u8
                }
            })
            .collect();
        json_check::check(&quelog::fuzzing::format_json(&data));
    }
}
