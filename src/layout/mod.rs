//! Layout: records to bytes, on the listener thread. One room per format (text and
//! JSON lines), and the thread names every format prints.
//!
//! The listener formats a record once per distinct layout that some sink accepting
//! it uses, not once per sink: sinks sharing a layout share the line.

mod json;
mod spans;
mod text;
mod threads;

pub(crate) use json::{JsonFormatter, JsonStyle};
pub(crate) use spans::Spans;
pub(crate) use text::TextFormatter;
pub(crate) use threads::ThreadNames;

use crate::record::RecordView;

/// How a sink's lines look. Two sinks with equal layouts share one formatted line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LayoutSpec {
    /// [`text`]'s one-line text format, in UTC or local time.
    Text { local_time: bool },
    /// [`json`]'s JSON lines in one of its key styles, with the source file and line
    /// or without.
    Json { style: JsonStyle, source: bool },
}

impl LayoutSpec {
    /// Whether lines of this layout show a record's source file and line (so the
    /// producer must capture them).
    pub(crate) fn prints_source(&self) -> bool {
        matches!(self, LayoutSpec::Json { source: true, .. })
    }
}

/// A layout with its formatting state (caches), owned by the listener.
#[derive(Debug)]
pub(crate) enum Layout {
    Text(TextFormatter),
    Json(JsonFormatter),
}

impl Layout {
    pub(crate) fn new(spec: LayoutSpec) -> Layout {
        match spec {
            LayoutSpec::Text { local_time } => Layout::Text(TextFormatter::new(local_time)),
            LayoutSpec::Json { style, source } => Layout::Json(JsonFormatter::new(style, source)),
        }
    }

    /// Appends one whole line for `record` to `out`; `spans` resolves the span chain
    /// of an event logged inside spans.
    pub(crate) fn write(
        &mut self,
        record: &RecordView<'_>,
        thread_name: Option<&str>,
        spans: Option<&mut Spans>,
        out: &mut Vec<u8>,
    ) {
        match self {
            Layout::Text(text) => text.write(record, thread_name, spans, out),
            Layout::Json(json) => json.write(record, thread_name, spans, out),
        }
    }
}
