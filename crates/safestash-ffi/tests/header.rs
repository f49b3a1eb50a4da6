//! The committed C header is what cbindgen generates from this crate now.
//!
//! Fails when `include/safestash.h` differs from a fresh generation, with
//! the command that updates it:
//! `SAFESTASH_BLESS_HEADER=1 cargo test -p safestash-ffi --test header`.

use std::path::Path;

#[test]
fn committed_header_equals_cbindgen_output() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let path = dir.join("include/safestash.h");
    if std::env::var_os("SAFESTASH_BLESS_HEADER").is_some() {
        std::fs::write(&path, &generated).expect("write the header");
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} differs from cbindgen's output; regenerate it with \
         `SAFESTASH_BLESS_HEADER=1 cargo test -p safestash-ffi --test header` and commit it",
        path.display()
    );
}
