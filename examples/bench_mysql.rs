//! MySQL/MariaDB rows of the bench report: save and load of 1 KiB and
//! 1 MiB through safestash, next to the durable statement written by hand,
//! as ratios (medians of interleaved rounds, both sides through a latency
//! proxy; see `examples/backend_rows/mysql.rs`). Absolute times on shared
//! machines are noise. `bench_report` prints the same rows when built with
//! the feature and the variable is set.
//!
//! ```sh
//! SAFESTASH_MYSQL_URL=mysql://root@127.0.0.1:3306/safestash_test \
//!   cargo run --release --features mysql --example bench_mysql -- --rounds 9
//! ```
//!
//! Without `SAFESTASH_MYSQL_URL` it uses `SAFESTASH_TEST_MYSQL_URL` (as set
//! by `.ci/mariadb.sh`).

#[cfg(feature = "mysql")]
#[path = "backend_rows/mod.rs"]
mod backend_rows;

#[cfg(feature = "mysql")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let rounds = match args.iter().position(|a| a == "--rounds") {
        Some(i) => args.get(i + 1).ok_or("--rounds N")?.parse()?,
        None => 9,
    };
    let url = match std::env::var("SAFESTASH_MYSQL_URL")
        .or_else(|_| std::env::var("SAFESTASH_TEST_MYSQL_URL"))
    {
        Ok(url) => url,
        Err(_) => {
            eprintln!("set SAFESTASH_MYSQL_URL=mysql://user@host:port/db to run this bench");
            return Ok(());
        }
    };
    let (rows, proxied) = backend_rows::mysql::rows(&url, rounds)?;
    println!("MySQL/MariaDB, {rounds} interleaved rounds, medians:\n");
    print!("{}", backend_rows::table(&rows, proxied));
    Ok(())
}

#[cfg(not(feature = "mysql"))]
fn main() {
    eprintln!("this bench needs --features mysql");
}
