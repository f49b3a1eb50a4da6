//! The backend rows of the bench report, for `#[path]`-inclusion by
//! `bench_report`, `bench_postgres`, `bench_mysql` and `bench_objstore`: safestash's
//! verbs on a remote store next to the same calls written by hand with the
//! same durability, in interleaved rounds (which side goes first
//! alternates), as medians per call and their ratio, with the round trips
//! and bytes each call cost.
//!
//! Both sides talk to the server through the bench's own TCP proxy
//! ([`proxy`]), which delays every burst by `BENCH_RTT_MS` (default 1 ms)
//! each way, as a network between two hosts does, and counts the
//! request/response exchanges and the bytes of every call.

#![allow(dead_code)]

use std::time::{Duration, Instant};

#[cfg(feature = "object-store")]
#[path = "../../tests/bigvalue/mod.rs"]
pub mod bigvalue;
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "object-store")]
pub mod objstore;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod proxy;

use proxy::{Counts, Proxy};

/// One row: an operation, safestash's and the hand-written call's medians.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured, such as `save 1 KiB`.
    pub op: String,
    /// safestash: seconds per call, round trips per call, bytes per call.
    pub ours: Side,
    /// The same by hand.
    pub hand: Side,
    /// The size of safestash's stored envelope, when the row reads one
    /// (for the bytes-moved ratio).
    pub envelope: Option<u64>,
}

/// One side's medians per call.
#[derive(Debug, Clone, Copy, Default)]
pub struct Side {
    pub secs: f64,
    pub round_trips: f64,
    pub bytes: f64,
}

/// One contender of a row: `setup` runs before each call, untimed and
/// uncounted (a save before a timed clear); `call` is what is measured.
pub struct Contender<'a> {
    pub setup: Box<dyn FnMut() + 'a>,
    pub call: Box<dyn FnMut() + 'a>,
}

impl<'a> Contender<'a> {
    /// A contender with no setup.
    pub fn call(call: impl FnMut() + 'a) -> Contender<'a> {
        Contender { setup: Box::new(|| {}), call: Box::new(call) }
    }

    /// A contender whose every call is preceded by `setup`.
    pub fn after(setup: impl FnMut() + 'a, call: impl FnMut() + 'a) -> Contender<'a> {
        Contender { setup: Box::new(setup), call: Box::new(call) }
    }
}

/// Medians of `ours` and `hand`, `iters` calls each per round, over
/// `rounds` rounds that alternate which side goes first; each call timed
/// and counted (through `proxy`, when there is one) on its own.
pub fn interleaved(
    proxy: Option<&Proxy>,
    rounds: usize,
    iters: u32,
    mut ours: Contender<'_>,
    mut hand: Contender<'_>,
) -> (Side, Side) {
    let run = |c: &mut Contender<'_>, samples: &mut Vec<(Duration, Counts)>| {
        let mut time = Duration::ZERO;
        let mut counted = Counts::default();
        for _ in 0..iters {
            (c.setup)();
            let before = proxy.map(Proxy::counts).unwrap_or_default();
            let start = Instant::now();
            (c.call)();
            time += start.elapsed();
            let after = proxy.map(Proxy::counts).unwrap_or_default();
            let d = after - before;
            counted.exchanges += d.exchanges;
            counted.up += d.up;
            counted.down += d.down;
        }
        samples.push((time / iters, counted));
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 0..rounds.max(1) {
        if round % 2 == 0 {
            run(&mut ours, &mut a);
            run(&mut hand, &mut b);
        } else {
            run(&mut hand, &mut b);
            run(&mut ours, &mut a);
        }
    }
    (side(a, iters), side(b, iters))
}

fn side(samples: Vec<(Duration, Counts)>, iters: u32) -> Side {
    let mut secs: Vec<f64> = samples.iter().map(|(d, _)| d.as_secs_f64()).collect();
    let per = |c: u64| c as f64 / f64::from(iters);
    let mut rts: Vec<f64> = samples.iter().map(|(_, c)| per(c.exchanges)).collect();
    let mut bytes: Vec<f64> = samples.iter().map(|(_, c)| per(c.up + c.down)).collect();
    Side { secs: median(&mut secs), round_trips: median(&mut rts), bytes: median(&mut bytes) }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn fmt_bytes(b: f64) -> String {
    if b >= (1 << 20) as f64 {
        format!("{:.2} MiB", b / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", b / 1024.0)
    }
}

/// The rows as a markdown table. Without a proxy the round-trip and byte
/// columns say so.
pub fn table(rows: &[Row], proxied: bool) -> String {
    let mut s = String::from(
        "| operation | safestash | by hand | ratio | round trips: safestash / by hand | \
         bytes moved: safestash / by hand |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let (counts, bytes) = if proxied {
            let mut bytes = format!("{} / {}", fmt_bytes(r.ours.bytes), fmt_bytes(r.hand.bytes));
            if let Some(env) = r.envelope {
                bytes.push_str(&format!(" ({:.2} × the envelope)", r.ours.bytes / env as f64));
            }
            (format!("{} / {}", r.ours.round_trips, r.hand.round_trips), bytes)
        } else {
            ("– (no proxy)".to_owned(), "–".to_owned())
        };
        s.push_str(&format!(
            "| {} | {:.2?} | {:.2?} | {:.2}x | {counts} | {bytes} |\n",
            r.op,
            Duration::from_secs_f64(r.ours.secs),
            Duration::from_secs_f64(r.hand.secs),
            r.ours.secs / r.hand.secs
        ));
    }
    s
}
