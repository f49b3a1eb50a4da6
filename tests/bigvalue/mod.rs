//! A stash larger than memory, made while it is serialized and checked
//! while it is read back, for the backends' bounded-memory tests.

#![allow(dead_code)]

use serde::{Deserialize, Serialize};

/// The length of one string of [`Big`].
pub const PIECE: usize = 64 << 10;

/// `PIECE` bytes of `pattern()` from `i % 26` on: piece `i` of a [`Big`].
pub fn piece(i: u64) -> &'static str {
    static PATTERN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let pattern =
        PATTERN.get_or_init(|| (0..PIECE + 26).map(|j| (b'a' + (j % 26) as u8) as char).collect());
    let at = (i % 26) as usize;
    &pattern[at..at + PIECE]
}

/// A JSON array of `.0` strings of `PIECE` bytes, made while it is
/// serialized: nothing of it is ever held whole.
pub struct Big(pub u64);

impl Serialize for Big {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(usize::try_from(self.0).unwrap()))?;
        for i in 0..self.0 {
            seq.serialize_element(piece(i))?;
        }
        seq.end()
    }
}

/// A [`Big`] read back: each piece checked as it comes and dropped; the
/// count of pieces.
pub struct BigCheck(pub u64);

impl<'de> Deserialize<'de> for BigCheck {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<BigCheck, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = BigCheck;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("the pieces of a Big")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<BigCheck, A::Error> {
                let mut n = 0;
                while let Some(s) = seq.next_element::<String>()? {
                    if s != piece(n) {
                        return Err(serde::de::Error::custom(format!("piece {n} differs")));
                    }
                    n += 1;
                }
                Ok(BigCheck(n))
            }
        }
        d.deserialize_seq(Visit)
    }
}
