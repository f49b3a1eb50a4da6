//! Arbitrary bytes through the envelope decoder: never a panic; anything
//! that decodes re-encodes to a file that decodes to the same header and
//! payload; the streaming verifier agrees with the in-memory decoder.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use safestash::envelope::{decode, encode, read_header, verify_reader};

fuzz_target!(|data: &[u8]| {
    let decoded = decode(data);
    let streamed = verify_reader(&mut Cursor::new(data), data.len() as u64)
        .expect("reading from memory cannot fail");
    // The two decoders accept exactly the same files, with the same result.
    match (&decoded, &streamed) {
        (Ok(d), Ok(layout)) => {
            assert_eq!(d.header, layout.header);
            assert_eq!(d.digest, layout.digest);
            assert_eq!(d.payload.len() as u64, layout.payload_len);
            let start = layout.payload_offset as usize;
            assert_eq!(&data[start..start + d.payload.len()], d.payload);
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        (a, b) => panic!("decoders disagree: {a:?} vs {b:?}"),
    }
    if let Ok(d) = decoded {
        // A verified file's header also reads on its own.
        assert_eq!(read_header(data).expect("header of a valid file"), d.header);
        let again = encode(&d.header, d.payload);
        let d2 = decode(&again).expect("a re-encoded envelope decodes");
        assert_eq!(d2.header, d.header);
        assert_eq!(d2.payload, d.payload);
    } else {
        // Never a panic on the header-only path either.
        let _ = read_header(data);
    }
});
