//! Object storage rows of the bench report: save and load of 1 KiB and
//! 1 MiB through safestash, next to the same `object_store` calls written
//! by hand, as ratios (medians of interleaved rounds; see
//! `examples/backend_rows/objstore.rs`). Absolute times on shared machines are
//! noise; the ratio is the cost of the envelope, the checksum and the read
//! before each conditional PUT.
//!
//! ```sh
//! # against moto (see docs/BACKENDS.md), or any bucket:
//! SAFESTASH_OBJSTORE_URL=s3://safestash-test/bench AWS_ENDPOINT_URL=http://127.0.0.1:5000 \
//!   AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true \
//!   cargo run --release --features object-store --example bench_objstore -- --rounds 9
//! ```
//!
//! `--gib` saves and loads one 1 GiB stash instead, and prints the bytes
//! its load moved through the proxy against the envelope, and the peak RSS.
//!
//! Without `SAFESTASH_OBJSTORE_URL` it uses `SAFESTASH_TEST_S3_URL` (as set
//! by `.ci/run`) with a fresh prefix, else `memory:///bench`.

#[cfg(feature = "object-store")]
#[path = "backend_rows/mod.rs"]
mod backend_rows;

#[cfg(feature = "object-store")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let rounds = match args.iter().position(|a| a == "--rounds") {
        Some(i) => args.get(i + 1).ok_or("--rounds N")?.parse()?,
        None => 9,
    };
    let url =
        match (std::env::var("SAFESTASH_OBJSTORE_URL"), std::env::var("SAFESTASH_TEST_S3_URL")) {
            (Ok(url), _) => url,
            (_, Ok(bucket)) => {
                format!("{}/bench-{}", bucket.trim_end_matches('/'), std::process::id())
            }
            _ => "memory:///bench".to_owned(),
        };
    // `--gib [BYTES]`: only the large load, safestash alone (default 1 GiB).
    if let Some(i) = args.iter().position(|a| a == "--gib") {
        let size = args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(1 << 30);
        println!("{}", backend_rows::objstore::gib(&url, size)?);
        return Ok(());
    }
    let (rows, proxied) = backend_rows::objstore::rows(&url, rounds)?;
    println!(
        "object store `{}`, {rounds} interleaved rounds, medians:\n",
        url.split('?').next().unwrap_or(&url)
    );
    print!("{}", backend_rows::table(&rows, proxied));
    Ok(())
}

#[cfg(not(feature = "object-store"))]
fn main() {
    eprintln!("this bench needs --features object-store");
}
