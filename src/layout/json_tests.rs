//! Unit tests of the JSON layout: raw bytes no `&str` can carry (invalid UTF-8), the
//! escapes, key collisions, every style, parsed with serde_json.

use super::*;
use crate::record::fields::Encoder;
use crate::record::Kind;

fn view<'a>(message: &'a [u8], fields: &'a [u8]) -> RecordView<'a> {
    RecordView {
        // 2023-11-14T22:13:20.123456Z
        timestamp_nanos: 1_700_000_000_123_456_789,
        thread_id: 4242,
        level: log::Level::Info,
        target: "app::db",
        module_path: None,
        file: Some("src/db.rs"),
        line: Some(42),
        message,
        message_full_len: message.len() as u32,
        nested: false,
        format_error: false,
        kind: Kind::Event,
        fields,
        fields_cut: false,
    }
}

fn line(style: JsonStyle, record: &RecordView<'_>) -> (String, serde_json::Value) {
    let mut out = Vec::new();
    JsonFormatter::new(style, true).write(record, Some("worker-1"), None, &mut out);
    let text = String::from_utf8(out).expect("UTF-8");
    assert!(
        text.ends_with('\n') && text.matches('\n').count() == 1,
        "{text}"
    );
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (text, value)
}

#[test]
fn the_exact_default_line() {
    let (text, _) = line(JsonStyle::Plain, &view(b"connected", &[]));
    assert_eq!(
        text,
        "{\"timestamp\":\"2023-11-14T22:13:20.123456Z\",\"level\":\"INFO\",\
         \"message\":\"connected\",\"target\":\"app::db\",\"thread\":\"worker-1\",\
         \"thread_id\":4242,\"file\":\"src/db.rs\",\"line\":42}\n"
    );
}

#[test]
fn invalid_utf8_is_replaced_everywhere() {
    let mut fields = Vec::new();
    let mut encoder = Encoder::new(&mut fields);
    encoder.str_bytes("raw", b"a\xffb\xe2\x80");
    encoder.str_bytes("ok", "é".as_bytes());
    let (_, o) = line(JsonStyle::Plain, &view(b"ok \xff\xfe end \xc3", &fields));
    assert_eq!(o["message"], "ok \u{fffd}\u{fffd} end \u{fffd}");
    assert_eq!(o["raw"], "a\u{fffd}b\u{fffd}");
    assert_eq!(o["ok"], "é");
    // The lossy replacement is exactly `from_utf8_lossy`'s.
    for bytes in [
        &b"\xed\xa0\x80x"[..],
        b"\xf0\x9f\x98",
        b"\xc0\xaf",
        b"\x80\x80",
    ] {
        let mut out = Vec::new();
        push_str(&mut out, bytes);
        let parsed: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed, String::from_utf8_lossy(bytes));
    }
}

#[test]
fn every_control_character_and_the_js_line_breaks_are_escaped() {
    let all: Vec<u8> = (0u8..0x80).collect();
    let mut text = all.clone();
    text.extend_from_slice("\u{2028}\u{2029}\u{2027}\u{202a}".as_bytes());
    let mut out = Vec::new();
    push_str(&mut out, &text);
    assert!(out.iter().all(|&b| b >= 0x20 && b != 0x7f));
    let escaped = String::from_utf8(out.clone()).unwrap();
    assert!(
        escaped.contains("\\u2028\\u2029\u{2027}\u{202a}"),
        "{escaped}"
    );
    assert!(escaped.contains("\\b") && escaped.contains("\\f") && escaped.contains("\\u001b"));
    let parsed: String = serde_json::from_slice(&out).unwrap();
    assert_eq!(parsed.as_bytes(), &text[..]);
}

#[test]
fn colliding_and_duplicate_names_are_numbered_never_lost() {
    let mut fields = Vec::new();
    let mut encoder = Encoder::new(&mut fields);
    encoder.str("message", "one");
    encoder.str("message", "two");
    encoder.str("fields.message", "three");
    encoder.u64("quelog", 1);
    encoder.u64("x", 1);
    encoder.u64("x", 2);
    let (text, o) = line(JsonStyle::Plain, &view(b"m", &fields));
    assert_eq!(o["message"], "m");
    assert_eq!(o["fields.message"], "one");
    assert_eq!(o["fields.message#2"], "two");
    assert_eq!(o["fields.fields.message"], "three");
    assert_eq!(o["fields.quelog"], 1);
    assert_eq!(o["x"], 1);
    assert_eq!(o["fields.x"], 2);
    // Eight fixed keys, six fields: nothing overwritten.
    assert_eq!(o.as_object().unwrap().len(), 14, "{text}");
}

#[test]
fn presets_reserve_their_own_keys() {
    let mut fields = Vec::new();
    let mut encoder = Encoder::new(&mut fields);
    encoder.str("ecs.version", "mine");
    encoder.str("severity", "mine");
    encoder.str("log.level", "mine");
    let (_, ecs) = line(JsonStyle::Ecs, &view(b"m", &fields));
    assert_eq!(ecs["ecs.version"], "1.6.0");
    assert_eq!(ecs["fields.ecs.version"], "mine");
    assert_eq!(ecs["fields.log.level"], "mine");
    assert_eq!(ecs["severity"], "mine");
    let (_, gcp) = line(JsonStyle::Gcp, &view(b"m", &fields));
    assert_eq!(gcp["severity"], "INFO");
    assert_eq!(gcp["fields.severity"], "mine");
    assert_eq!(gcp["log.level"], "mine");
}

#[test]
fn markers_and_floats() {
    let mut fields = Vec::new();
    let mut encoder = Encoder::new(&mut fields);
    for (name, value) in [
        ("a", 1e300),
        ("b", -0.0),
        ("c", 1e-7),
        ("d", f64::MIN_POSITIVE),
    ] {
        encoder.f64(name, value);
    }
    let mut record = view(b"abc", &fields);
    record.message_full_len = 100;
    record.format_error = true;
    record.fields_cut = true;
    let (_, o) = line(JsonStyle::Plain, &record);
    assert_eq!(o["a"], 1e300);
    assert_eq!(o["c"], 1e-7);
    assert_eq!(o["d"], f64::MIN_POSITIVE);
    assert_eq!(o["b"].as_f64(), Some(0.0));
    assert_eq!(o["quelog"]["message_bytes"], 100);
    assert_eq!(o["quelog"]["format_error"], true);
    assert_eq!(o["quelog"]["fields_cut"], true);
}

#[test]
fn a_lost_span_is_a_question_mark() {
    let mut spans = Spans::default();
    let mut fields = Vec::new();
    Encoder::new(&mut fields).span_context(99);
    let mut out = Vec::new();
    JsonFormatter::new(JsonStyle::Plain, false).write(
        &view(b"m", &fields),
        None,
        Some(&mut spans),
        &mut out,
    );
    let o: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(o["spans"], serde_json::json!([{"name": "?"}]));
    assert!(o.get("thread").is_none());
}
