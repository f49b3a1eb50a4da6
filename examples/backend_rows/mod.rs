//! The backend rows of the bench report, for `#[path]`-inclusion by
//! `bench_report`, `bench_postgres` and `bench_objstore`: safestash save
//! and load of 1 KiB and 1 MiB on a remote store, next to the same calls
//! written by hand with the same durability, in interleaved rounds (which
//! side goes first alternates), as medians per call and their ratio.

#![allow(dead_code)]

use std::time::{Duration, Instant};

#[cfg(feature = "object-store")]
pub mod objstore;
#[cfg(feature = "postgres")]
pub mod postgres;

/// One row: `(operation, safestash seconds per call, by-hand seconds per call)`.
pub type Row = (String, f64, f64);

/// Medians of the per-call times of `ours` and `hand`, `iters` calls each
/// per round, alternating which goes first.
pub fn interleaved(
    rounds: usize,
    iters: u32,
    mut ours: impl FnMut(),
    mut hand: impl FnMut(),
) -> (f64, f64) {
    let time = |f: &mut dyn FnMut()| -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        start.elapsed() / iters
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 0..rounds.max(1) {
        if round % 2 == 0 {
            a.push(time(&mut ours));
            b.push(time(&mut hand));
        } else {
            b.push(time(&mut hand));
            a.push(time(&mut ours));
        }
    }
    (median(a), median(b))
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64()
}

/// The rows as a markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::from("| operation | safestash | by hand | ratio |\n|---|---|---|---|\n");
    for (op, ours, hand) in rows {
        s.push_str(&format!(
            "| {op} | {:.2?} | {:.2?} | {:.2}x |\n",
            Duration::from_secs_f64(*ours),
            Duration::from_secs_f64(*hand),
            ours / hand
        ));
    }
    s
}
