//! Raw arguments: the message section of a record from quelog's macros, formatted on
//! the listener instead of the caller. A sibling of the typed field encoding
//! ([`super::fields`]): the same values, without names, in the format string's order.
//!
//! ```text
//! section := callsite:u32 arg* [FAILED len:u32 bytes]
//! arg     := I64 i64 | U64 u64 | I128 i128 | U128 u128 | F64 bits:u64 | F32 bits:u32
//!          | BOOL u8 | CHAR u32 | STR len:u32 bytes | DISPLAY len:u32 bytes
//! ```
//!
//! `callsite` indexes the registry ([`super::callsite`]), which holds the format
//! string. `DISPLAY` is an argument of another type, formatted on the caller as
//! `log::info!` would; `FAILED` is one whose `Display` failed part way (returned an
//! error or panicked) with what it wrote: it ends the section and the message, as
//! `core::fmt` stops there.
//!
//! Only formats the listener reproduces byte for byte are raw: `{}`, `{:?}`, `{{` and
//! `}}` ([`scan`]); the values print through `core::fmt` here exactly as they would
//! have on the caller. Decoding never panics on any input and never allocates, so the
//! crash drain renders raw records too.

use std::fmt::{self, Write as _};

use super::fields::Reader;
use crate::direct::Out;

const TAG_I64: u8 = 1;
const TAG_U64: u8 = 2;
const TAG_I128: u8 = 3;
const TAG_U128: u8 = 4;
const TAG_F64: u8 = 5;
const TAG_F32: u8 = 6;
const TAG_BOOL: u8 = 7;
const TAG_CHAR: u8 = 8;
const TAG_STR: u8 = 9;
const TAG_DISPLAY: u8 = 10;
const TAG_FAILED: u8 = 11;

/// Bytes of the callsite index in front of the arguments.
pub(crate) const CALLSITE_BYTES: usize = 4;

/// Upper bounds of what a value prints (`Display` or `Debug`), so the caller can tell
/// a message would not need cutting without formatting it: an `f64` prints at most
/// 309 integer digits, or `0.` and 323 zeros and 17 digits (`Debug` uses exponents
/// sooner); an `i128` 40 characters; a `char`'s `Debug` at most `'\u{10ffff}'`; a
/// `str`'s `Debug` at most 6 bytes per byte (`\u{1f}`) and the quotes.
pub(crate) const F64_MAX_TEXT: usize = 360;
pub(crate) const F32_MAX_TEXT: usize = 64;
pub(crate) const INT_MAX_TEXT: usize = 40;
pub(crate) const CHAR_MAX_TEXT: usize = 12;

/// What a format string holds, when every piece is one the listener can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scan {
    /// `{}` and `{:?}` placeholders.
    pub(crate) placeholders: usize,
    /// Some placeholder is `{:?}`.
    pub(crate) has_debug: bool,
}

/// One piece of a format string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece<'f> {
    Text(&'f str),
    Arg {
        debug: bool,
    },
    /// Anything else (`{:>5}`, `{0}`, `{name}`, a lone brace): not ours to render.
    Unsupported,
}

/// The pieces of `format`, in order.
fn pieces(format: &str) -> impl Iterator<Item = Piece<'_>> {
    let mut rest = format;
    std::iter::from_fn(move || {
        let bytes = rest.as_bytes();
        let first = *bytes.first()?;
        let (piece, used) = match (first, bytes.get(1), bytes.get(2), bytes.get(3)) {
            (b'{', Some(b'{'), ..) => (Piece::Text("{"), 2),
            (b'}', Some(b'}'), ..) => (Piece::Text("}"), 2),
            (b'{', Some(b'}'), ..) => (Piece::Arg { debug: false }, 2),
            (b'{', Some(b':'), Some(b'?'), Some(b'}')) => (Piece::Arg { debug: true }, 4),
            (b'{' | b'}', ..) => (Piece::Unsupported, rest.len()),
            _ => {
                let end = bytes
                    .iter()
                    .position(|&b| b == b'{' || b == b'}')
                    .unwrap_or(bytes.len());
                (Piece::Text(rest.get(..end).unwrap_or_default()), end)
            }
        };
        rest = rest.get(used..).unwrap_or_default();
        Some(piece)
    })
}

/// Whether the listener can format `format` itself, and what it holds. Bounded by the
/// string's length; no allocation (the first call of a callsite runs it, maybe in a
/// signal handler).
pub(crate) fn scan(format: &str) -> Option<Scan> {
    let mut scan = Scan {
        placeholders: 0,
        has_debug: false,
    };
    for piece in pieces(format) {
        match piece {
            Piece::Text(_) => {}
            Piece::Arg { debug } => {
                scan.placeholders += 1;
                scan.has_debug |= debug;
            }
            Piece::Unsupported => return None,
        }
    }
    Some(scan)
}

/// An argument as the caller hands it over (built by the macros; not for use by
/// hand). Integers are widened (their text does not change), `String` travels as
/// `Str`, any other type that has `Display` as `Display`, and a type that has not
/// (only `Debug`) as `Opaque`: the caller formats that record.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub enum Arg<'a> {
    I64(i64),
    U64(u64),
    I128(i128),
    U128(u128),
    F64(f64),
    F32(f32),
    Bool(bool),
    Char(char),
    Str(&'a str),
    Display(&'a dyn fmt::Display),
    Opaque,
}

impl fmt::Debug for Arg<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arg::Display(_) => "Arg::Display",
            Arg::Opaque => "Arg::Opaque",
            _ => "Arg::Raw",
        })
    }
}

/// Where the producer encodes: its message buffer. `format` formats a `Display` into
/// it and says whether that completed (`Some(false)`: the impl failed part way) or
/// ran out of room (`None`).
pub(crate) trait ArgSink {
    fn len(&self) -> usize;
    /// Appends all of `bytes`, or nothing and `false`.
    fn try_append(&mut self, bytes: &[u8]) -> bool;
    fn patch(&mut self, at: usize, bytes: &[u8]);
    fn format_display(&mut self, value: &dyn fmt::Display) -> Option<bool>;
}

/// Encodes the section for `callsite` and `args` into `sink`, if the listener can
/// print it exactly: `Some(rendered)`, an upper bound of the message's length, or
/// `None` (no room, an `Opaque` argument, a `Display` at a `{:?}`): the caller
/// formats instead. `has_debug`: the format string has a `{:?}`.
pub(crate) fn encode<S: ArgSink + ?Sized>(
    sink: &mut S,
    callsite: u32,
    format_len: usize,
    has_debug: bool,
    args: &[Arg<'_>],
) -> Option<usize> {
    let mut bound = format_len;
    let mut ok = sink.try_append(&callsite.to_le_bytes());
    for arg in args {
        // One append per value (tag and bytes together): this is the caller's cost.
        let (fits, text) = match *arg {
            Arg::I64(n) => (fixed(sink, TAG_I64, n.to_le_bytes()), INT_MAX_TEXT),
            Arg::U64(n) => (fixed(sink, TAG_U64, n.to_le_bytes()), INT_MAX_TEXT),
            Arg::I128(n) => (fixed(sink, TAG_I128, n.to_le_bytes()), INT_MAX_TEXT),
            Arg::U128(n) => (fixed(sink, TAG_U128, n.to_le_bytes()), INT_MAX_TEXT),
            Arg::F64(n) => (
                fixed(sink, TAG_F64, n.to_bits().to_le_bytes()),
                F64_MAX_TEXT,
            ),
            Arg::F32(n) => (
                fixed(sink, TAG_F32, n.to_bits().to_le_bytes()),
                F32_MAX_TEXT,
            ),
            Arg::Bool(b) => (fixed(sink, TAG_BOOL, [u8::from(b)]), 5),
            Arg::Char(c) => (
                fixed(sink, TAG_CHAR, u32::from(c).to_le_bytes()),
                CHAR_MAX_TEXT,
            ),
            Arg::Str(s) => {
                let len = u32::try_from(s.len()).ok()?;
                let fits = fixed(sink, TAG_STR, len.to_le_bytes()) && sink.try_append(s.as_bytes());
                let text = if has_debug {
                    s.len().saturating_mul(6).saturating_add(2)
                } else {
                    s.len()
                };
                (fits, text)
            }
            Arg::Display(value) => {
                if has_debug {
                    // It might sit at a `{:?}`, which needs `Debug`.
                    return None;
                }
                if !sink.try_append(&[TAG_DISPLAY, 0, 0, 0, 0]) {
                    return None;
                }
                let at = sink.len() - 4;
                let completed = sink.format_display(value)?;
                let len = sink.len() - at - 4;
                sink.patch(at, &u32::try_from(len).ok()?.to_le_bytes());
                if !completed {
                    // `core::fmt` stops at the failing argument; so does the listener.
                    sink.patch(at - 1, &[TAG_FAILED]);
                    return ok.then_some(bound.saturating_add(len));
                }
                (true, len)
            }
            Arg::Opaque => return None,
        };
        ok &= fits;
        bound = bound.saturating_add(text);
    }
    ok.then_some(bound)
}

/// Appends `tag` and `value` in one piece.
#[inline(always)]
fn fixed<S: ArgSink + ?Sized, const N: usize>(sink: &mut S, tag: u8, value: [u8; N]) -> bool {
    let mut entry = [tag; 17];
    let used = N + 1;
    if let Some(rest) = entry.get_mut(1..used) {
        rest.copy_from_slice(&value);
    }
    sink.try_append(entry.get(..used).unwrap_or_default())
}

/// An argument as the listener reads it back.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value<'a> {
    I64(i64),
    U64(u64),
    I128(i128),
    U128(u128),
    F64(f64),
    F32(f32),
    Bool(bool),
    Char(char),
    Str(&'a str),
    Display(&'a str),
    /// What a failing `Display` wrote; the message ends after it.
    Failed(&'a str),
}

/// The callsite index a section starts with.
pub(crate) fn callsite_of(section: &[u8]) -> Option<u32> {
    let (index, _) = section.split_first_chunk::<CALLSITE_BYTES>()?;
    Some(u32::from_le_bytes(*index))
}

struct Values<'a> {
    bytes: Reader<'a>,
}

impl<'a> Values<'a> {
    fn text(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes.prefixed()?).ok()
    }

    /// The next value; `None` at the end or at a malformed one.
    fn next(&mut self) -> Option<Value<'a>> {
        let [tag] = self.bytes.array()?;
        Some(match tag {
            TAG_I64 => Value::I64(i64::from_le_bytes(self.bytes.array()?)),
            TAG_U64 => Value::U64(u64::from_le_bytes(self.bytes.array()?)),
            TAG_I128 => Value::I128(i128::from_le_bytes(self.bytes.array()?)),
            TAG_U128 => Value::U128(u128::from_le_bytes(self.bytes.array()?)),
            TAG_F64 => Value::F64(f64::from_bits(u64::from_le_bytes(self.bytes.array()?))),
            TAG_F32 => Value::F32(f32::from_bits(u32::from_le_bytes(self.bytes.array()?))),
            TAG_BOOL => match self.bytes.array::<1>()? {
                [0] => Value::Bool(false),
                [1] => Value::Bool(true),
                _ => return None,
            },
            TAG_CHAR => Value::Char(char::from_u32(u32::from_le_bytes(self.bytes.array()?))?),
            TAG_STR => Value::Str(self.text()?),
            TAG_DISPLAY => Value::Display(self.text()?),
            TAG_FAILED => Value::Failed(self.text()?),
            _ => return None,
        })
    }
}

/// How rendering ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rendered {
    /// The whole message.
    Whole,
    /// A `Display` failed part way: the message ends where it stopped, as on the
    /// caller.
    FormatFailed,
}

/// Formats the message of `format` with the encoded `args` (the section after its
/// callsite index) into `out`, unescaped. `None` if the section does not fit the
/// format (a damaged record): `out` may hold part of a message then.
pub(crate) fn render<O: Out + ?Sized>(format: &str, args: &[u8], out: &mut O) -> Option<Rendered> {
    let mut values = Values {
        bytes: Reader { rest: args },
    };
    for piece in pieces(format) {
        match piece {
            Piece::Text(text) => out.put(text.as_bytes()),
            Piece::Arg { debug } => match values.next()? {
                Value::Failed(text) => {
                    out.put(text.as_bytes());
                    // Nothing may follow it.
                    return values
                        .bytes
                        .rest
                        .is_empty()
                        .then_some(Rendered::FormatFailed);
                }
                value => put_value(out, value, debug),
            },
            Piece::Unsupported => return None,
        }
    }
    values.bytes.rest.is_empty().then_some(Rendered::Whole)
}

fn put_value<O: Out + ?Sized>(out: &mut O, value: Value<'_>, debug: bool) {
    match (value, debug) {
        // Integers and bools print the same with `{}` and `{:?}`.
        (Value::I64(n), _) => {
            if n < 0 {
                out.put(b"-");
            }
            crate::direct::push_decimal(out, n.unsigned_abs(), 1);
        }
        (Value::U64(n), _) => crate::direct::push_decimal(out, n, 1),
        (Value::I128(n), _) => put_fmt(out, format_args!("{n}")),
        (Value::U128(n), _) => put_fmt(out, format_args!("{n}")),
        (Value::Bool(b), _) => out.put(if b { b"true" } else { b"false" }),
        (Value::F64(n), false) => put_fmt(out, format_args!("{n}")),
        (Value::F64(n), true) => put_fmt(out, format_args!("{n:?}")),
        (Value::F32(n), false) => put_fmt(out, format_args!("{n}")),
        (Value::F32(n), true) => put_fmt(out, format_args!("{n:?}")),
        (Value::Char(c), false) => {
            let mut utf8 = [0; 4];
            out.put(c.encode_utf8(&mut utf8).as_bytes());
        }
        (Value::Char(c), true) => put_fmt(out, format_args!("{c:?}")),
        (Value::Str(s), false) | (Value::Display(s), _) => out.put(s.as_bytes()),
        (Value::Str(s), true) => put_fmt(out, format_args!("{s:?}")),
        (Value::Failed(s), _) => out.put(s.as_bytes()),
    }
}

/// `args` through `core::fmt` into `out`, as they are. No allocation.
fn put_fmt<O: Out + ?Sized>(out: &mut O, args: fmt::Arguments<'_>) {
    struct Plain<'o, O: Out + ?Sized>(&'o mut O);
    impl<O: Out + ?Sized> fmt::Write for Plain<'_, O> {
        fn write_str(&mut self, text: &str) -> fmt::Result {
            self.0.put(text.as_bytes());
            Ok(())
        }
    }
    let _ = Plain(out).write_fmt(args);
}

#[cfg(test)]
mod tests {
    use super::*;

    impl ArgSink for Vec<u8> {
        fn len(&self) -> usize {
            Vec::len(self)
        }
        fn try_append(&mut self, bytes: &[u8]) -> bool {
            self.extend_from_slice(bytes);
            true
        }
        fn patch(&mut self, at: usize, bytes: &[u8]) {
            self[at..at + bytes.len()].copy_from_slice(bytes);
        }
        fn format_display(&mut self, value: &dyn fmt::Display) -> Option<bool> {
            let mut text = String::new();
            let completed = write!(text, "{value}").is_ok();
            self.extend_from_slice(text.as_bytes());
            Some(completed)
        }
    }

    fn rendered(format: &str, args: &[Arg<'_>]) -> (String, Rendered) {
        let scan = scan(format).unwrap();
        let mut section = Vec::new();
        encode(&mut section, 7, format.len(), scan.has_debug, args).unwrap();
        assert_eq!(callsite_of(&section), Some(7));
        let mut out = Vec::new();
        let how = render(format, &section[CALLSITE_BYTES..], &mut out).unwrap();
        (String::from_utf8(out).unwrap(), how)
    }

    #[test]
    fn scan_accepts_plain_and_debug_placeholders_and_escaped_braces() {
        assert_eq!(
            scan("a {} {{b}} {:?}"),
            Some(Scan {
                placeholders: 2,
                has_debug: true
            })
        );
        for refused in [
            "{0}", "{x}", "{:5}", "{:#?}", "}", "{", "a } b", "{:x}", "{:?",
        ] {
            assert_eq!(scan(refused), None, "{refused}");
        }
    }

    #[test]
    fn values_print_as_core_fmt_prints_them() {
        let (text, how) = rendered(
            "{} {} {} {:?} {} {:?} {} {} {{}} {:?}",
            &[
                Arg::I64(-5),
                Arg::U128(u128::MAX),
                Arg::F64(1e300),
                Arg::F64(1e300),
                Arg::F32(1.1),
                Arg::Str("a\"\n"),
                Arg::Bool(true),
                Arg::Char('é'),
                Arg::Char('\n'),
            ],
        );
        let expected = format!(
            "{} {} {} {:?} {} {:?} {} {} {{}} {:?}",
            -5i64,
            u128::MAX,
            1e300f64,
            1e300f64,
            1.1f32,
            "a\"\n",
            true,
            'é',
            '\n'
        );
        assert_eq!((text, how), (expected, Rendered::Whole));
    }

    #[test]
    fn a_failed_display_ends_the_message_where_core_fmt_stops() {
        struct Half;
        impl fmt::Display for Half {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("half")?;
                Err(fmt::Error)
            }
        }
        let (text, how) = rendered("a {} b {} c", &[Arg::Display(&Half), Arg::U64(1)]);
        assert_eq!((text.as_str(), how), ("a half", Rendered::FormatFailed));
    }

    #[test]
    fn sections_that_do_not_fit_the_format_are_refused_without_panic() {
        let mut section = Vec::new();
        encode(&mut section, 1, 5, false, &[Arg::U64(3), Arg::Str("x")]).unwrap();
        let args = &section[CALLSITE_BYTES..];
        let mut out = Vec::new();
        assert!(
            render("{}", args, &mut out).is_none(),
            "an argument left over"
        );
        assert!(render("{} {} {}", args, &mut out).is_none(), "one missing");
        for cut in 0..args.len() {
            assert!(render("{} {}", &args[..cut], &mut Vec::new()).is_none());
        }
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for len in 0..500 {
            let data: Vec<u8> = (0..len % 61)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = render("{} {:?} {}", &data, &mut Vec::new());
        }
    }

    #[test]
    fn refused_arguments_leave_the_record_to_the_caller() {
        let mut section = Vec::new();
        assert_eq!(encode(&mut section, 1, 2, false, &[Arg::Opaque]), None);
        assert_eq!(encode(&mut section, 1, 4, true, &[Arg::Display(&3)]), None);
    }
}
