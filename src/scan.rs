//! Byte scans for the listener's hot path and the signal-safe writers alike: where
//! the next byte to escape is, whether bytes are ASCII, whether two short names are
//! equal. Sixteen bytes at a time with SSE2 on x86-64 (part of its baseline), eight
//! at a time elsewhere; no allocation, no panic, async-signal-safe.

/// The index of the first byte at or after `from` that needs escaping (a control
/// character or DEL), testing sixteen bytes at a time where the target has SSE2 (every
/// x86-64) and eight at a time otherwise.
pub(crate) fn find_escape(bytes: &[u8], from: usize) -> Option<usize> {
    let rest = bytes.get(from..)?;
    #[cfg(target_arch = "x86_64")]
    if rest.len() >= 16 {
        return find_escape_16(rest).map(|at| from + at);
    }
    find_escape_8(rest).map(|at| from + at)
}

/// [`find_escape`] for at least sixteen bytes: the last sixteen are read overlapping
/// the ones already found clean, so a flag there is a byte of the tail.
#[cfg(target_arch = "x86_64")]
fn find_escape_16(rest: &[u8]) -> Option<usize> {
    let mut offset = 0;
    while let Some(chunk) = rest.get(offset..).and_then(<[u8]>::first_chunk::<16>) {
        let mask = escape_mask_16(chunk);
        if mask != 0 {
            return Some(offset + mask.trailing_zeros() as usize);
        }
        offset += 16;
    }
    let tail = rest.len() - offset;
    if tail == 0 {
        return None;
    }
    let last = rest.last_chunk::<16>()?;
    let mask = escape_mask_16(last) >> (16 - tail);
    (mask != 0).then(|| offset + mask.trailing_zeros() as usize)
}

/// One bit per byte of `chunk` (bit `i` for byte `i`) that is below 0x20 or DEL: two
/// SSE2 compares and one `pmovmskb` (a plain loop is not vectorized that well).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn escape_mask_16(chunk: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        _mm_set_epi64x,
    };
    let [lo, hi] = split_16(chunk);
    // SAFETY: SSE2 is part of the x86-64 baseline (every x86-64 CPU has it, and the
    // target enables it); these intrinsics only compute on values, no memory access.
    let mask = unsafe {
        let bytes = _mm_set_epi64x(hi as i64, lo as i64);
        // Unsigned `byte <= 0x1f` as `min(byte, 0x1f) == byte`.
        let control = _mm_cmpeq_epi8(_mm_min_epu8(bytes, _mm_set1_epi8(0x1f)), bytes);
        let del = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(0x7f));
        _mm_movemask_epi8(_mm_or_si128(control, del))
    };
    mask as u32
}

/// The two little-endian words of sixteen bytes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn split_16(chunk: &[u8; 16]) -> [u64; 2] {
    let (lo, hi) = chunk.split_at(8);
    let word = |half: &[u8]| u64::from_le_bytes(half.try_into().unwrap_or([0; 8]));
    [word(lo), word(hi)]
}

/// [`find_escape`] eight bytes at a time; the last few are read overlapping the
/// words already found clean.
fn find_escape_8(rest: &[u8]) -> Option<usize> {
    let mut words = rest.chunks_exact(8);
    let mut offset = 0;
    for word in words.by_ref() {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        if let Some(at) = first_escape_in(u64::from_le_bytes(eight)) {
            return Some(offset + at);
        }
        offset += 8;
    }
    let tail = words.remainder();
    if tail.is_empty() {
        return None;
    }
    // The last eight bytes of `rest`, overlapping the words already found clean, so a
    // flag there is a byte of the tail; no copy of a variable length (a `memcpy` call).
    if let Some(last) = rest.len().checked_sub(8).and_then(|at| rest.get(at..)) {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(last);
        let before = 8 - tail.len();
        return first_escape_in(u64::from_le_bytes(eight)).map(|at| offset + at - before);
    }
    tail.iter()
        .position(|&byte| byte < 0x20 || byte == 0x7f)
        .map(|at| offset + at)
}

/// The index (0-7, in memory order) of the first of the eight bytes of `word` (read
/// little-endian) that is below 0x20 or equal to 0x7f. The classic bit tricks:
/// `(x - 0x20..) & !x & 0x80..` flags each byte below 0x20 and `x ^ 0x7f..` turns DEL
/// into a zero byte, flagged the same way. A borrow can flag a byte above a true hit,
/// never one below it, so the lowest flag is exact.
fn first_escape_in(word: u64) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let below_space = word.wrapping_sub(0x20 * ONES) & !word;
    let del = word ^ (0x7f * ONES);
    let is_del = del.wrapping_sub(ONES) & !del;
    let flags = (below_space | is_del) & HIGHS;
    (flags != 0).then(|| flags.trailing_zeros() as usize / 8)
}

/// Whether every byte is ASCII: sixteen at a time on x86-64 (SSE2), eight elsewhere
/// (`<[u8]>::is_ascii` goes byte by byte on short slices like a line).
pub(crate) fn is_ascii(bytes: &[u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if bytes.len() >= 16 {
        let mut high = 0;
        let mut chunks = bytes.chunks_exact(16);
        for chunk in chunks.by_ref() {
            high |= high_bits_16(chunk.try_into().unwrap_or(&[0; 16]));
        }
        // The last sixteen, overlapping ones already read.
        if !chunks.remainder().is_empty() {
            high |= bytes.last_chunk::<16>().map_or(0, high_bits_16);
        }
        return high == 0;
    }
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut words = bytes.chunks_exact(8);
    let mut high = 0;
    for word in words.by_ref() {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        high |= u64::from_le_bytes(eight);
    }
    high & HIGHS == 0 && words.remainder().iter().all(u8::is_ascii)
}

/// One bit per byte of `chunk` that has its high bit set (is not ASCII).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn high_bits_16(chunk: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{_mm_movemask_epi8, _mm_set_epi64x};
    let [lo, hi] = split_16(chunk);
    // SAFETY: SSE2 is part of the x86-64 baseline (see `escape_mask_16`); these
    // intrinsics only compute on values, no memory access.
    let mask = unsafe { _mm_movemask_epi8(_mm_set_epi64x(hi as i64, lo as i64)) };
    mask as u32
}

/// Whether `a` and `b` hold the same bytes: for the short names the listener compares
/// per record (target, file, thread name), eight bytes at a time inline, where `==`
/// calls `memcmp`.
#[inline]
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    if a.len() < 8 {
        return a == b;
    }
    let word = |bytes: &[u8], at: usize| {
        bytes
            .get(at..at + 8)
            .map_or(0, |w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])))
    };
    let mut differ = 0;
    let mut at = 0;
    while at + 8 <= a.len() {
        differ |= word(a, at) ^ word(b, at);
        at += 8;
    }
    // The last eight, overlapping words already compared.
    let last = a.len() - 8;
    differ |= word(a, last) ^ word(b, last);
    differ == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_and_equality_checks_match_the_standard_ones() {
        for len in 0..50 {
            let base: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(is_ascii(&base));
            assert!(same_bytes(&base, &base.clone()));
            for at in 0..len {
                for byte in [0x00, 0x7f, 0x80, 0xc3, 0xff, b'A'] {
                    let mut other = base.clone();
                    other[at] = byte;
                    assert_eq!(is_ascii(&other), other.is_ascii(), "{other:?}");
                    assert_eq!(same_bytes(&base, &other), base == other, "{other:?}");
                }
            }
            assert!(!same_bytes(&base, &base[..len.saturating_sub(1)]) || len == 0);
        }
    }
}
