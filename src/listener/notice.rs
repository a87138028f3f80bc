//! Lines quelog writes about itself, in the sink's own layout: target `quelog`,
//! thread `quelog/0`. They go straight into a sink's buffer, never through the queue.

use crate::layout::Layout;
use crate::record::RecordView;
use crate::stats::Dropped;

/// One line from quelog itself at `level`, formatted with `layout`, appended to `out`.
pub(super) fn push_notice(layout: &mut Layout, level: log::Level, text: &str, out: &mut Vec<u8>) {
    let view = RecordView {
        timestamp_nanos: crate::handler::clock_nanos(libc::CLOCK_REALTIME),
        thread_id: 0,
        level,
        target: "quelog",
        module_path: None,
        file: None,
        line: None,
        message: text.as_bytes(),
        message_full_len: text.len() as u32,
        nested: false,
        format_error: false,
        kind: crate::record::Kind::Event,
        fields: &[],
        fields_cut: false,
    };
    layout.write(&view, Some("quelog"), None, out);
}

/// The drop notices a sink has not been told yet: one `WARN` line per reason whose
/// count grew from `told` to `now`, appended to `out`.
pub(super) fn push_drop_notices(
    layout: &mut Layout,
    told: Dropped,
    now: Dropped,
    out: &mut Vec<u8>,
) {
    let reasons = [
        (now.queue_full, told.queue_full, "queue full"),
        (now.contended, told.contended, "contended"),
    ];
    for (total, reported, reason) in reasons {
        if total > reported {
            let text = format!("{} records dropped ({reason})", total - reported);
            push_notice(layout, log::Level::Warn, &text, out);
        }
    }
}

/// The line after a sink recovers: `lost` records lost because of `why`.
pub(super) fn push_loss_notice(layout: &mut Layout, lost: u64, why: &str, out: &mut Vec<u8>) {
    let text = format!("{lost} records lost ({why})");
    push_notice(layout, log::Level::Error, &text, out);
}
