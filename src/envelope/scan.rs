//! Byte searches over a header eight bytes at a time (the header line is
//! read on every load; a byte-by-byte scan was a visible share of a small
//! load).

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Nonzero if some byte of `w` is below `n` (`n` at most 128). May also be
/// nonzero for a byte just above one that is: callers rescan the word.
const fn has_less(w: u64, n: u8) -> u64 {
    w.wrapping_sub(LO * n as u64) & !w & HI
}

/// Nonzero if some byte of `w` is `b` (with the same proviso).
const fn has_byte(w: u64, b: u8) -> u64 {
    has_less(w ^ (LO * b as u64), 1)
}

/// The first index in `bytes` where `special` holds, skipping words for
/// which `may_hold` is zero (it must be nonzero for every word holding a
/// special byte).
fn find(
    bytes: &[u8],
    may_hold: impl Fn(u64) -> u64,
    special: impl Fn(u8) -> bool,
) -> Option<usize> {
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        // `chunks_exact(8)` gives 8 bytes; the fallback is never taken, and
        // would only mean a bytewise rescan.
        let w = u64::from_le_bytes(<[u8; 8]>::try_from(chunk).unwrap_or([0; 8]));
        if may_hold(w) != 0 {
            if let Some(i) = chunk.iter().position(|&b| special(b)) {
                return Some(offset + i);
            }
        }
        offset += 8;
    }
    chunks.remainder().iter().position(|&b| special(b)).map(|i| offset + i)
}

/// The index of the first `\n` in `bytes`.
pub(super) fn line_feed(bytes: &[u8]) -> Option<usize> {
    find(bytes, |w| has_byte(w, b'\n'), |b| b == b'\n')
}

/// The index of the first byte that ends or breaks an unescaped JSON
/// string: `"`, `\` or a control character.
pub(super) fn string_end(bytes: &[u8]) -> Option<usize> {
    find(
        bytes,
        |w| has_byte(w, b'"') | has_byte(w, b'\\') | has_less(w, 0x20),
        |b| b == b'"' || b == b'\\' || b < 0x20,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn word_scans_find_what_a_bytewise_scan_finds(
            bytes in proptest::collection::vec(
                prop_oneof![any::<u8>(), proptest::sample::select(vec![b'\n', b'"', b'\\', 0x1f, 0x20, 0x21, 0x0b, 0x5c, 0xa2, 0x8a])],
                0..80,
            ),
        ) {
            prop_assert_eq!(line_feed(&bytes), bytes.iter().position(|&b| b == b'\n'));
            prop_assert_eq!(
                string_end(&bytes),
                bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            );
        }
    }

    #[test]
    fn every_position_and_byte() {
        for b in 0..=255u8 {
            for at in 0..17 {
                let mut v = vec![b'a'; 17];
                v[at] = b;
                let want = |p: fn(u8) -> bool| v.iter().position(|&x| p(x));
                assert_eq!(line_feed(&v), want(|x| x == b'\n'));
                assert_eq!(string_end(&v), want(|x| x == b'"' || x == b'\\' || x < 0x20));
            }
        }
    }
}
