//! The spans the listener knows, rebuilt from the tracing subscriber's bookkeeping
//! records (new, record, close) as they come off the ring, so an event carries only
//! its current span's id and the cost of an event does not grow with span depth.
//!
//! Ring order is causal for one span: its "new" record was claimed before any event
//! inside it (the id did not exist before), and its "close" after its last event (the
//! last handle was dropped after them). A bookkeeping record that found no room in the
//! ring is counted (`Stats::spans.lost`); the spans it concerned print as `?` in the
//! chain (text), and lose the fields it carried.

use std::collections::HashMap;

use crate::record::fields::{entries, Entry};
use crate::record::{Kind, RecordView};

/// The most spans kept. Past it (close records lost for a long time, so dead spans
/// pile up), the map starts over: live spans then print as `?` until they close.
const MAX_LIVE: usize = 1 << 20;

/// The deepest chain walked for one event (a guard against a cycle no subscriber
/// could build, and against chains that would not fit a line anyway).
const MAX_CHAIN: usize = 64;

/// One live span.
#[derive(Debug)]
pub(crate) struct Span {
    pub(crate) name: String,
    /// 0: a root span.
    pub(crate) parent: u64,
    /// Encoded fields ([`crate::record::fields`]), appended to by `Span::record`.
    pub(crate) fields: Vec<u8>,
}

/// The live spans by id.
#[derive(Debug, Default)]
pub(crate) struct Spans {
    live: HashMap<u64, Span>,
    /// Scratch for [`Spans::chain`], reused.
    chain: Vec<u64>,
}

impl Spans {
    /// Applies a span bookkeeping record; `false` if `record` is an event.
    pub(crate) fn apply(&mut self, record: &RecordView<'_>) -> bool {
        let mut id = 0;
        let mut parent = 0;
        for entry in entries(record.fields) {
            match entry {
                Entry::SpanContext(span) => id = span,
                Entry::SpanParent(span) => parent = span,
                _ => {}
            }
        }
        match record.kind {
            Kind::Event => return false,
            Kind::SpanNew => {
                if self.live.len() >= MAX_LIVE {
                    self.live.clear();
                }
                let name = String::from_utf8_lossy(record.message).into_owned();
                let fields = record.fields.to_vec();
                self.live.insert(
                    id,
                    Span {
                        name,
                        parent,
                        fields,
                    },
                );
            }
            Kind::SpanRecord => {
                if let Some(span) = self.live.get_mut(&id) {
                    span.fields.extend_from_slice(record.fields);
                }
            }
            Kind::SpanClose => {
                self.live.remove(&id);
            }
        }
        true
    }

    /// The span an event was logged in, if it names one.
    pub(crate) fn context_of(record: &RecordView<'_>) -> Option<u64> {
        entries(record.fields).find_map(|entry| match entry {
            Entry::SpanContext(id) if id != 0 => Some(id),
            _ => None,
        })
    }

    /// Calls `visit` for each span from the outermost to `id`, with `None` for a span
    /// whose bookkeeping was lost.
    pub(crate) fn chain(&mut self, id: u64, mut visit: impl FnMut(Option<&Span>)) {
        self.chain.clear();
        let mut at = id;
        while at != 0 && self.chain.len() < MAX_CHAIN {
            self.chain.push(at);
            at = self.live.get(&at).map_or(0, |span| span.parent);
        }
        for id in self.chain.iter().rev() {
            visit(self.live.get(id));
        }
    }
}
