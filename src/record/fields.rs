//! The typed field encoding: the part of a record after its message, when
//! [`super::FLAG_FIELDS`] is set. One design for every producer: tracing's event and
//! span fields, `log`'s key-values, and the arguments the listener will format itself.
//!
//! A sequence of entries, each a tag byte, then (for named values) a name, then the
//! value, all little-endian:
//!
//! ```text
//! entry   := SPAN_CONTEXT u64 | SPAN_PARENT u64 | FOLLOWS u64
//!          | tag name value
//! name    := len:u8 bytes            (UTF-8; tracing names are &'static str)
//! value   := i64 | u64 | i128 | u128 | f64 bits | bool:u8
//!          | len:u32 bytes           (STR, DEBUG and DISPLAY: UTF-8 text)
//! ```
//!
//! Numbers, bools and strings are stored as such, so a layout can print them typed
//! (JSON numbers, say) and the caller never formats them; only `Debug` and `Display`
//! values are formatted on the caller, into ring space. The encoder keeps whole
//! entries only: one that does not fit is left out and the record flagged
//! ([`super::FLAG_FIELDS_CUT`]). The decoder never panics on any input (it is a fuzz
//! target), and stops at the first malformed entry.

/// The current span of an event (or `log` record logged inside one).
pub(crate) const TAG_SPAN_CONTEXT: u8 = 0x01;
/// The parent of a new span (absent: a root span).
pub(crate) const TAG_SPAN_PARENT: u8 = 0x02;
/// A span this one follows from.
pub(crate) const TAG_FOLLOWS: u8 = 0x03;
const TAG_I64: u8 = 0x10;
const TAG_U64: u8 = 0x11;
const TAG_I128: u8 = 0x12;
const TAG_U128: u8 = 0x13;
const TAG_F64: u8 = 0x14;
const TAG_BOOL: u8 = 0x15;
const TAG_STR: u8 = 0x16;
const TAG_DEBUG: u8 = 0x17;
const TAG_DISPLAY: u8 = 0x18;

/// The longest field name stored; longer ones are cut (on a character boundary).
pub(crate) const MAX_NAME: usize = 255;

/// A field's value as the listener reads it back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Value<'a> {
    I64(i64),
    U64(u64),
    I128(i128),
    U128(u128),
    F64(f64),
    Bool(bool),
    /// A string value: printed quoted by the text layout.
    Str(&'a [u8]),
    /// A value formatted with `Debug` on the caller: printed as it is.
    Debug(&'a [u8]),
    /// A value formatted with `Display` (an error, say): printed as it is.
    Display(&'a [u8]),
}

/// One decoded entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Entry<'a> {
    SpanContext(u64),
    SpanParent(u64),
    Follows(u64),
    Field { name: &'a [u8], value: Value<'a> },
}

/// Where an encoder appends: the producer's message buffer, or a `Vec` in tests.
/// `try_append` stores all of `bytes` or nothing.
pub(crate) trait FieldSink {
    fn len(&self) -> usize;
    /// Appends all of `bytes`, or nothing and `false`.
    fn try_append(&mut self, bytes: &[u8]) -> bool;
    /// Cuts back to `len` bytes (an entry that did not fit whole).
    fn truncate(&mut self, len: usize);
    /// Overwrites bytes already appended at `at` (a length prefix).
    fn patch(&mut self, at: usize, bytes: &[u8]);
    /// Formats into the sink; `false` if it ran out of room or the impl failed.
    fn format(&mut self, args: std::fmt::Arguments<'_>) -> bool;
}

impl FieldSink for Vec<u8> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn try_append(&mut self, bytes: &[u8]) -> bool {
        self.extend_from_slice(bytes);
        true
    }
    fn truncate(&mut self, len: usize) {
        Vec::truncate(self, len);
    }
    fn patch(&mut self, at: usize, bytes: &[u8]) {
        if let Some(dst) = self.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    }
    fn format(&mut self, args: std::fmt::Arguments<'_>) -> bool {
        std::io::Write::write_fmt(self, args).is_ok()
    }
}

/// Appends entries to a [`FieldSink`], whole or not at all.
pub(crate) struct Encoder<'s, S: FieldSink + ?Sized> {
    sink: &'s mut S,
    /// An entry was left out for lack of room.
    cut: bool,
}

impl<'s, S: FieldSink + ?Sized> Encoder<'s, S> {
    pub(crate) fn new(sink: &'s mut S) -> Self {
        Encoder { sink, cut: false }
    }

    /// Whether an entry was left out.
    pub(crate) fn cut(&self) -> bool {
        self.cut
    }

    fn entry(&mut self, write: impl FnOnce(&mut S) -> bool) {
        let start = self.sink.len();
        if !write(self.sink) {
            self.sink.truncate(start);
            self.cut = true;
        }
    }

    fn id(&mut self, tag: u8, id: u64) {
        let [a, b, c, d, e, f, g, h] = id.to_le_bytes();
        self.entry(|s| s.try_append(&[tag, a, b, c, d, e, f, g, h]));
    }

    pub(crate) fn span_context(&mut self, id: u64) {
        self.id(TAG_SPAN_CONTEXT, id);
    }

    pub(crate) fn span_parent(&mut self, id: u64) {
        self.id(TAG_SPAN_PARENT, id);
    }

    pub(crate) fn follows(&mut self, id: u64) {
        self.id(TAG_FOLLOWS, id);
    }

    fn named(sink: &mut S, tag: u8, name: &str) -> bool {
        let name = crate::handler::clip(name, MAX_NAME);
        sink.try_append(&[tag, name.len() as u8]) && sink.try_append(name.as_bytes())
    }

    fn fixed(&mut self, tag: u8, name: &str, value: &[u8]) {
        self.entry(|s| Self::named(s, tag, name) && s.try_append(value));
    }

    pub(crate) fn i64(&mut self, name: &str, value: i64) {
        self.fixed(TAG_I64, name, &value.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, name: &str, value: u64) {
        self.fixed(TAG_U64, name, &value.to_le_bytes());
    }

    pub(crate) fn i128(&mut self, name: &str, value: i128) {
        self.fixed(TAG_I128, name, &value.to_le_bytes());
    }

    pub(crate) fn u128(&mut self, name: &str, value: u128) {
        self.fixed(TAG_U128, name, &value.to_le_bytes());
    }

    pub(crate) fn f64(&mut self, name: &str, value: f64) {
        self.fixed(TAG_F64, name, &value.to_bits().to_le_bytes());
    }

    pub(crate) fn bool(&mut self, name: &str, value: bool) {
        self.fixed(TAG_BOOL, name, &[u8::from(value)]);
    }

    pub(crate) fn str(&mut self, name: &str, value: &str) {
        self.str_bytes(name, value.as_bytes());
    }

    /// A string value from bytes: the handler passes UTF-8 only; the fuzz entry points
    /// pass anything, as a layout must survive it.
    pub(crate) fn str_bytes(&mut self, name: &str, value: &[u8]) {
        let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
        self.entry(|s| {
            Self::named(s, TAG_STR, name) && s.try_append(&len.to_le_bytes()) && s.try_append(value)
        });
    }

    /// A value formatted on the caller (`Debug` or `Display`), written straight into
    /// the sink, its length patched in after.
    fn formatted(&mut self, tag: u8, name: &str, args: std::fmt::Arguments<'_>) {
        self.entry(|s| {
            if !(Self::named(s, tag, name) && s.try_append(&[0; 4])) {
                return false;
            }
            let at = s.len() - 4;
            if !s.format(args) {
                return false;
            }
            let len = u32::try_from(s.len() - at - 4).unwrap_or(u32::MAX);
            s.patch(at, &len.to_le_bytes());
            true
        });
    }

    pub(crate) fn debug(&mut self, name: &str, value: &dyn std::fmt::Debug) {
        self.formatted(TAG_DEBUG, name, format_args!("{value:?}"));
    }

    pub(crate) fn display(&mut self, name: &str, value: &dyn std::fmt::Display) {
        self.formatted(TAG_DISPLAY, name, format_args!("{value}"));
    }
}

/// Iterates over the entries of an encoded field section.
pub(crate) fn entries(bytes: &[u8]) -> Entries<'_> {
    Entries {
        bytes: Reader { rest: bytes },
    }
}

/// The iterator behind [`entries`]; ends at the end or at a malformed entry.
pub(crate) struct Entries<'a> {
    bytes: Reader<'a>,
}

/// Reads an encoding front to back, never past its end: what the field and the
/// raw-argument decoders share.
pub(super) struct Reader<'a> {
    pub(super) rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// The next `n` bytes.
    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (now, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        Some(now)
    }

    /// The next `N` bytes, as an array.
    pub(super) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// The next bytes after their little-endian `u32` length.
    pub(super) fn prefixed(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        self.take(len)
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        let entry = self.decode();
        if entry.is_none() {
            // Malformed or at the end: stop for good.
            self.bytes.rest = &[];
        }
        entry
    }
}

impl<'a> Entries<'a> {
    fn decode(&mut self) -> Option<Entry<'a>> {
        let [tag] = self.bytes.array()?;
        let id = |this: &mut Self| this.bytes.array().map(u64::from_le_bytes);
        match tag {
            TAG_SPAN_CONTEXT => return id(self).map(Entry::SpanContext),
            TAG_SPAN_PARENT => return id(self).map(Entry::SpanParent),
            TAG_FOLLOWS => return id(self).map(Entry::Follows),
            _ => {}
        }
        let [name_len] = self.bytes.array()?;
        let name = self.bytes.take(usize::from(name_len))?;
        let value = match tag {
            TAG_I64 => Value::I64(i64::from_le_bytes(self.bytes.array()?)),
            TAG_U64 => Value::U64(u64::from_le_bytes(self.bytes.array()?)),
            TAG_I128 => Value::I128(i128::from_le_bytes(self.bytes.array()?)),
            TAG_U128 => Value::U128(u128::from_le_bytes(self.bytes.array()?)),
            TAG_F64 => Value::F64(f64::from_bits(u64::from_le_bytes(self.bytes.array()?))),
            // 0 or 1 only: one spelling per value.
            TAG_BOOL => match self.bytes.array::<1>()? {
                [0] => Value::Bool(false),
                [1] => Value::Bool(true),
                _ => return None,
            },
            TAG_STR => Value::Str(self.bytes.prefixed()?),
            TAG_DEBUG => Value::Debug(self.bytes.prefixed()?),
            TAG_DISPLAY => Value::Display(self.bytes.prefixed()?),
            _ => return None,
        };
        Some(Entry::Field { name, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        let mut bytes = Vec::new();
        let mut enc = Encoder::new(&mut bytes);
        enc.span_context(7);
        enc.span_parent(0);
        enc.follows(u64::MAX);
        enc.i64("i", -5);
        enc.u64("u", 5);
        enc.i128("big", i128::MIN);
        enc.u128("ubig", u128::MAX);
        enc.f64("f", 1.5);
        enc.bool("b", true);
        enc.str("s", "two \"quoted\"\n");
        enc.debug("d", &Some(3));
        enc.display("e", &"an error");
        assert!(!enc.cut());
        let all: Vec<Entry<'_>> = entries(&bytes).collect();
        let field = |name: &'static str, value| Entry::Field {
            name: name.as_bytes(),
            value,
        };
        assert_eq!(
            all,
            vec![
                Entry::SpanContext(7),
                Entry::SpanParent(0),
                Entry::Follows(u64::MAX),
                field("i", Value::I64(-5)),
                field("u", Value::U64(5)),
                field("big", Value::I128(i128::MIN)),
                field("ubig", Value::U128(u128::MAX)),
                field("f", Value::F64(1.5)),
                field("b", Value::Bool(true)),
                field("s", Value::Str(b"two \"quoted\"\n")),
                field("d", Value::Debug(b"Some(3)")),
                field("e", Value::Display(b"an error")),
            ]
        );
    }

    #[test]
    fn malformed_input_stops_without_panic() {
        let mut bytes = Vec::new();
        let mut enc = Encoder::new(&mut bytes);
        enc.str("name", "value");
        enc.u64("n", 1);
        for cut in 0..bytes.len() {
            // A cut entry is never returned half-read.
            let got: Vec<_> = entries(&bytes[..cut]).collect();
            assert!(got.len() <= 1, "{cut}: {got:?}");
        }
        let mut junk = bytes.clone();
        junk[0] = 0xee;
        assert_eq!(entries(&junk).count(), 0);
        // Pseudo-random bytes: never a panic.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..2000 {
            let data: Vec<u8> = (0..len % 97)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = entries(&data).count();
        }
    }

    #[test]
    fn long_names_are_cut_on_a_character_boundary() {
        let mut bytes = Vec::new();
        let name = "é".repeat(200);
        Encoder::new(&mut bytes).bool(&name, false);
        let Some(Entry::Field { name, .. }) = entries(&bytes).next() else {
            panic!("no entry");
        };
        assert!(name.len() <= MAX_NAME && std::str::from_utf8(name).is_ok());
    }
}
