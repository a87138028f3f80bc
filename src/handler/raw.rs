//! The producer path of quelog's macros ([`crate::macros`]): a record whose message
//! the listener formats. Everything of [`super::capture`] holds (no lock, no
//! allocation, bounded, signal-safe); what differs is the message section, raw
//! arguments ([`crate::record::args`]) instead of text.

use log::Metadata;

use super::capture::{Capture, Raw};
use super::message::MessageBuf;
use super::{span_stack, QueueHandler};
use crate::record::args::{self, Arg, ArgSink};
use crate::record::callsite::Callsite;
use crate::record::{fields::FieldSink, Kind, MAX_RAW_SECTION};

impl ArgSink for MessageBuf<'_> {
    fn len(&self) -> usize {
        FieldSink::len(self)
    }

    fn try_append(&mut self, bytes: &[u8]) -> bool {
        FieldSink::try_append(self, bytes)
    }

    fn patch(&mut self, at: usize, bytes: &[u8]) {
        FieldSink::patch(self, at, bytes);
    }

    fn format_display(&mut self, value: &dyn std::fmt::Display) -> Option<bool> {
        let completed = self.format(&format_args!("{value}"));
        (!self.truncated()).then_some(completed)
    }
}

impl QueueHandler {
    /// One macro record: `true` if it is dealt with (queued, dropped and counted, or
    /// refused by the filter, as [`log::Log::log`] would), `false` if the caller must
    /// format it and log it through `log` after all (see [`crate::macros`]).
    pub(crate) fn log_raw(
        &self,
        site: &'static Callsite,
        level: log::Level,
        target: Option<&str>,
        args: &[Arg<'_>],
    ) -> bool {
        let module = site.module_path();
        let full_target = target.unwrap_or(module);
        let metadata = Metadata::builder().level(level).target(full_target).build();
        if !log::Log::enabled(self, &metadata) {
            return true;
        }
        if crate::fork::forked(&self.shared) {
            // The child writes lines itself, from the formatted message.
            return false;
        }
        let Some(registered) = site.registered(args.len()) else {
            return false;
        };
        let target_is_callsite = target.is_none_or(|t| t == module);
        let what = Capture {
            level,
            kind: Kind::Event,
            target: if target_is_callsite { "" } else { full_target },
            module: None,
            file: None,
            line: None,
            raw: Some(Raw { target_is_callsite }),
        };
        let format_len = site.format().len();
        self.push(
            &what,
            |message| {
                let Some(bound) = args::encode(
                    message,
                    registered.index,
                    format_len,
                    registered.has_debug,
                    args,
                ) else {
                    return false;
                };
                // Never a message the caller would have cut, nor a section the crash
                // drain cannot copy.
                bound <= message.limit() && ArgSink::len(message) <= MAX_RAW_SECTION
            },
            |fields| {
                if let Some(span) = span_stack::current() {
                    fields.span_context(span);
                }
            },
        )
    }
}
