//! The spans the listener knows, rebuilt from the tracing subscriber's bookkeeping
//! records (new, record, close) as they come off the ring, so an event carries only
//! its current span's id and the cost of an event does not grow with span depth.
//!
//! Ring order is causal for one span: its "new" record was claimed before any event
//! inside it (the id did not exist before), and its "close" after its last event (the
//! last handle was dropped after them). A bookkeeping record that found no room in the
//! ring is counted (`Stats::spans.lost`); the spans it concerned print as `?` in the
//! chain (text), and lose the fields it carried.
//!
//! A span stays in the chains of its children after its own last handle is dropped
//! (a request span that ends before the task it spawned, say), as in
//! tracing-subscriber's registry, where a child keeps its parent open: a closed span
//! with live children is kept here until the last of them closes.

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
    /// Live spans whose parent this is (their chains go through it).
    children: u32,
    /// Its close record came while it still had children.
    closed: bool,
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
        // Events, nearly every record, are told by their kind: their fields are not read.
        if record.kind == Kind::Event {
            return false;
        }
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
                if let Some(parent) = self.live.get_mut(&parent) {
                    parent.children = parent.children.saturating_add(1);
                }
                let span = Span {
                    name,
                    parent,
                    fields,
                    children: 0,
                    closed: false,
                };
                if let Some(replaced) = self.live.insert(id, span) {
                    // Two new records for one id: only memory corruption does that.
                    // Keep the books of the one replaced.
                    self.release_parent(replaced.parent);
                }
            }
            Kind::SpanRecord => {
                if let Some(span) = self.live.get_mut(&id) {
                    span.fields.extend_from_slice(record.fields);
                }
            }
            Kind::SpanClose => match self.live.get_mut(&id) {
                Some(span) if span.children > 0 => span.closed = true,
                Some(_) => self.remove(id),
                None => {}
            },
        }
        true
    }

    /// Forgets span `id`, and then each closed ancestor that was kept for it alone.
    fn remove(&mut self, id: u64) {
        if let Some(span) = self.live.remove(&id) {
            self.release_parent(span.parent);
        }
    }

    /// A child of `parent` is gone: forgets the parents kept for their children alone,
    /// up the chain (a loop, not recursion: chains may be long).
    fn release_parent(&mut self, mut parent: u64) {
        while let Some(span) = self.live.get_mut(&parent) {
            span.children = span.children.saturating_sub(1);
            if !(span.closed && span.children == 0) {
                return;
            }
            let grandparent = span.parent;
            self.live.remove(&parent);
            parent = grandparent;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::fields::Encoder;

    /// A bookkeeping record's view: `kind` about span `id` (with `parent`).
    fn apply(spans: &mut Spans, kind: Kind, id: u64, parent: u64, name: &[u8]) {
        let mut fields = Vec::new();
        let mut encoder = Encoder::new(&mut fields);
        encoder.span_context(id);
        if parent != 0 {
            encoder.span_parent(parent);
        }
        let view = RecordView {
            timestamp_nanos: 0,
            thread_id: 1,
            level: log::Level::Info,
            target: "t",
            module_path: None,
            file: None,
            line: None,
            message: name,
            message_full_len: name.len() as u32,
            nested: false,
            format_error: false,
            kind,
            fields: &fields,
            fields_cut: false,
        };
        assert!(spans.apply(&view));
    }

    fn chain(spans: &mut Spans, id: u64) -> Vec<String> {
        let mut names = Vec::new();
        spans.chain(id, |span| {
            names.push(span.map_or("?".to_owned(), |s| s.name.clone()));
        });
        names
    }

    #[test]
    fn a_closed_parent_stays_in_its_childrens_chains_until_the_last_closes() {
        let mut spans = Spans::default();
        apply(&mut spans, Kind::SpanNew, 1, 0, b"root");
        apply(&mut spans, Kind::SpanNew, 2, 1, b"parent");
        apply(&mut spans, Kind::SpanNew, 3, 2, b"first");
        apply(&mut spans, Kind::SpanNew, 4, 2, b"second");
        // The parent's (and the root's) last handles go first.
        apply(&mut spans, Kind::SpanClose, 2, 0, b"");
        apply(&mut spans, Kind::SpanClose, 1, 0, b"");
        assert_eq!(chain(&mut spans, 3), ["root", "parent", "first"]);
        apply(&mut spans, Kind::SpanClose, 3, 0, b"");
        assert_eq!(chain(&mut spans, 4), ["root", "parent", "second"]);
        assert_eq!(spans.live.len(), 3);
        // The last child closes: its closed ancestors go with it.
        apply(&mut spans, Kind::SpanClose, 4, 0, b"");
        assert!(spans.live.is_empty(), "{:?}", spans.live);
    }

    #[test]
    fn a_parent_still_open_is_kept_and_counts_right() {
        let mut spans = Spans::default();
        apply(&mut spans, Kind::SpanNew, 1, 0, b"root");
        apply(&mut spans, Kind::SpanNew, 2, 1, b"child");
        apply(&mut spans, Kind::SpanClose, 2, 0, b"");
        assert_eq!(chain(&mut spans, 1), ["root"]);
        assert_eq!(spans.live.len(), 1);
        // No children left: its own close removes it at once.
        apply(&mut spans, Kind::SpanClose, 1, 0, b"");
        assert!(spans.live.is_empty());
        // A child whose parent's new record was lost: `?`, and nothing to count.
        apply(&mut spans, Kind::SpanNew, 5, 9, b"orphan");
        assert_eq!(chain(&mut spans, 5), ["?", "orphan"]);
        apply(&mut spans, Kind::SpanClose, 5, 0, b"");
        assert!(spans.live.is_empty());
    }
}
