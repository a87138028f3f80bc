//! The header in front of every record, in one of two forms. Both start with the level
//! byte and the flags, so any reader tells them apart (and a record's kind) from its
//! first two bytes.
//!
//! ```text
//! full (32 bytes)                          short (20 bytes, raw records only)
//! offset size field                        offset size field
//!      0    1 level byte                        0    1 level byte
//!      1    1 flags                             1    1 flags
//!      2    2 target length                     2    2 target length
//!      4    2 module path length                4    2 message (raw section) length
//!      6    2 file length                       6    2 zero
//!      8    4 thread id (gettid)                8    4 thread id
//!     12    4 line (0: unknown)                12    8 timestamp
//!     16    4 message length stored
//!     20    4 message length the caller produced (more than stored: truncated)
//!     24    8 timestamp
//! ```
//!
//! The level byte is the level (1 = Error .. 5 = Trace) and three bits: raw (the
//! message section holds raw arguments, [`super::args`]), ticks (the timestamp is in
//! TSC ticks, [`crate::handler::clock`]; nanoseconds since the Unix epoch, UTC,
//! otherwise) and short (this is the short form). The short form is what quelog's
//! macros write on their fast path: a raw record has no module path or file, and its
//! message is never cut, so a three-argument record fits one 64-byte ring slot.

/// Bytes of the full header.
pub(crate) const HEADER_LEN: usize = 32;
/// Bytes of the short header.
pub(crate) const SHORT_HEADER_LEN: usize = 20;
/// Where the flags are, in both forms.
pub(crate) const FLAGS_AT: usize = 1;

const LEVEL_RAW: u8 = 0x80;
const LEVEL_TICKS: u8 = 0x40;
const LEVEL_SHORT: u8 = 0x20;
const LEVEL_BITS: u8 = LEVEL_RAW | LEVEL_TICKS | LEVEL_SHORT;

/// The fixed part of a record, as captured on the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) timestamp_nanos: u64,
    pub(crate) thread_id: u32,
    pub(crate) line: u32,
    pub(crate) message_len: u32,
    pub(crate) message_full_len: u32,
    pub(crate) target_len: u16,
    pub(crate) module_len: u16,
    pub(crate) file_len: u16,
    pub(crate) level: u8,
    pub(crate) flags: u8,
    /// The message section holds raw arguments ([`super::args`]).
    pub(crate) raw: bool,
    /// `timestamp_nanos` holds TSC ticks ([`Header::wall_nanos`] converts them).
    pub(crate) ticks: bool,
    /// The short form: only for a raw record without module path, file or line,
    /// whose section is shorter than 64 KiB and whose message is whole.
    pub(crate) short: bool,
}

impl Header {
    /// Bytes of the header itself.
    pub(crate) fn len(&self) -> usize {
        if self.short {
            SHORT_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Bytes of the whole record: header plus variable parts (typed fields aside).
    pub(crate) fn record_len(&self) -> usize {
        self.len()
            + self.target_len as usize
            + self.module_len as usize
            + self.file_len as usize
            + self.message_len as usize
    }

    /// The header's bytes: all [`HEADER_LEN`] of the full form, the first
    /// [`SHORT_HEADER_LEN`] of the short one ([`Header::len`]).
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        if self.short {
            if let Some(dst) = out.get_mut(..SHORT_HEADER_LEN) {
                dst.copy_from_slice(&self.encode_short());
            }
            return out;
        }
        let level = self.level_byte();
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            if let Some(dst) = out.get_mut(at..at + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
            at += bytes.len();
        };
        put(&[level, self.flags]);
        put(&self.target_len.to_le_bytes());
        put(&self.module_len.to_le_bytes());
        put(&self.file_len.to_le_bytes());
        put(&self.thread_id.to_le_bytes());
        put(&self.line.to_le_bytes());
        put(&self.message_len.to_le_bytes());
        put(&self.message_full_len.to_le_bytes());
        put(&self.timestamp_nanos.to_le_bytes());
        out
    }

    /// The short form's bytes (whatever `short` says; the fast path's header).
    #[inline(always)]
    pub(crate) fn encode_short(&self) -> [u8; SHORT_HEADER_LEN] {
        let level = self.level_byte() | LEVEL_SHORT;
        let [g0, g1] = self.target_len.to_le_bytes();
        let [m0, m1] = (self.message_len as u16).to_le_bytes();
        let [i0, i1, i2, i3] = self.thread_id.to_le_bytes();
        let [t0, t1, t2, t3, t4, t5, t6, t7] = self.timestamp_nanos.to_le_bytes();
        [
            level, self.flags, g0, g1, m0, m1, 0, 0, i0, i1, i2, i3, t0, t1, t2, t3, t4, t5, t6, t7,
        ]
    }

    fn level_byte(&self) -> u8 {
        (self.level & !LEVEL_BITS)
            | if self.raw { LEVEL_RAW } else { 0 }
            | if self.ticks { LEVEL_TICKS } else { 0 }
            | if self.short { LEVEL_SHORT } else { 0 }
    }

    /// The header `bytes` start with, or `None` if they are too short for it. Any
    /// bytes decode otherwise (no panic, no indexing): the crash drain runs this in a
    /// signal handler, on whatever the ring holds.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Header> {
        let (&[level, flags, g0, g1, a0, a1, b0, b1, i0, i1, i2, i3], rest) =
            bytes.split_first_chunk::<12>()?;
        let short = level & LEVEL_SHORT != 0;
        let target_len = u16::from_le_bytes([g0, g1]);
        let thread_id = u32::from_le_bytes([i0, i1, i2, i3]);
        let mut header = Header {
            timestamp_nanos: 0,
            thread_id,
            line: 0,
            message_len: 0,
            message_full_len: 0,
            target_len,
            module_len: 0,
            file_len: 0,
            level: level & !LEVEL_BITS,
            flags,
            raw: level & LEVEL_RAW != 0,
            ticks: level & LEVEL_TICKS != 0,
            short,
        };
        if short {
            let (timestamp, _) = rest.split_first_chunk::<8>()?;
            let message_len = u32::from(u16::from_le_bytes([a0, a1]));
            header.timestamp_nanos = u64::from_le_bytes(*timestamp);
            header.message_len = message_len;
            header.message_full_len = message_len;
        } else {
            let (&[l0, l1, l2, l3, m0, m1, m2, m3, f0, f1, f2, f3], rest) =
                rest.split_first_chunk::<12>()?;
            let (timestamp, _) = rest.split_first_chunk::<8>()?;
            header.module_len = u16::from_le_bytes([a0, a1]);
            header.file_len = u16::from_le_bytes([b0, b1]);
            header.line = u32::from_le_bytes([l0, l1, l2, l3]);
            header.message_len = u32::from_le_bytes([m0, m1, m2, m3]);
            header.message_full_len = u32::from_le_bytes([f0, f1, f2, f3]);
            header.timestamp_nanos = u64::from_le_bytes(*timestamp);
        }
        Some(header)
    }

    /// The timestamp in nanoseconds since the Unix epoch. Async-signal-safe.
    pub(crate) fn wall_nanos(&self) -> u64 {
        if self.ticks {
            crate::handler::clock::wall_from_ticks(self.timestamp_nanos)
        } else {
            self.timestamp_nanos
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(short: bool) -> Header {
        Header {
            timestamp_nanos: 0x0102_0304_0506_0708,
            thread_id: 77,
            line: if short { 0 } else { 9 },
            message_len: 300,
            message_full_len: if short { 300 } else { 400 },
            target_len: 513,
            module_len: if short { 0 } else { 5 },
            file_len: if short { 0 } else { 6 },
            level: 3,
            flags: 0x5a,
            raw: true,
            ticks: true,
            short,
        }
    }

    #[test]
    fn both_forms_round_trip_and_say_which_they_are() {
        for short in [false, true] {
            let h = header(short);
            let bytes = h.encode();
            let used = &bytes[..h.len()];
            assert_eq!(Header::decode(used), Some(h));
            assert_eq!(used[FLAGS_AT], 0x5a);
            // One byte short of the form: refused.
            assert_eq!(Header::decode(&used[..h.len() - 1]), None);
        }
        assert_eq!(header(true).len(), SHORT_HEADER_LEN);
        assert_eq!(header(false).record_len(), HEADER_LEN + 513 + 5 + 6 + 300);
    }
}
