//! PostgreSQL rows of the bench report: save and load of 1 KiB and 1 MiB
//! through safestash, next to the same statements written by hand with the
//! same durability, as ratios (medians of interleaved rounds; see
//! `examples/backend_rows/postgres.rs`). Absolute times on shared machines
//! are noise; the ratio is the cost of the envelope, the checksum, the
//! advisory lock and the checks. `bench_report` prints the same rows when
//! built with the feature and the variable is set.
//!
//! ```sh
//! SAFESTASH_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/safestash_test \
//!   cargo run --release --features postgres --example bench_postgres -- --rounds 9
//! ```
//!
//! Without `SAFESTASH_POSTGRES_URL` it uses `SAFESTASH_TEST_POSTGRES_URL`
//! (as set by `.ci/run`).

#[cfg(feature = "postgres")]
#[path = "backend_rows/mod.rs"]
mod backend_rows;

#[cfg(feature = "postgres")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let rounds = match args.iter().position(|a| a == "--rounds") {
        Some(i) => args.get(i + 1).ok_or("--rounds N")?.parse()?,
        None => 9,
    };
    let url = match std::env::var("SAFESTASH_POSTGRES_URL")
        .or_else(|_| std::env::var("SAFESTASH_TEST_POSTGRES_URL"))
    {
        Ok(url) => url,
        Err(_) => {
            eprintln!(
                "set SAFESTASH_POSTGRES_URL=postgresql://user@host:port/db to run this bench"
            );
            return Ok(());
        }
    };
    let (rows, proxied) = backend_rows::postgres::rows(&url, rounds)?;
    println!("PostgreSQL, {rounds} interleaved rounds, medians:\n");
    print!("{}", backend_rows::table(&rows, proxied));
    println!("\n| target | measured | met |\n|---|---:|---|");
    print!("{}", backend_rows::postgres::targets(&rows));
    Ok(())
}

#[cfg(not(feature = "postgres"))]
fn main() {
    eprintln!("this bench needs --features postgres");
}
