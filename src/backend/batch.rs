//! The default [`Backend::put_batch`]: check every envelope, then put each.

use std::io::{self, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::{Backend, BatchOutcome, BatchPut, Outcome};
use crate::digest::Digest;
use crate::error::Result;

/// The largest envelope kept in memory between the two passes.
const HELD_LIMIT: usize = 1 << 20;

/// What is kept in memory between the two passes, in all.
const HELD_TOTAL: usize = 16 << 20;

/// A sink that keeps what is written while it stays within `cap`, and from
/// then on only lets it through.
struct Capped {
    held: Option<Vec<u8>>,
    over: bool,
    cap: usize,
}

impl Write for Capped {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if !self.over {
            let held = self.held.get_or_insert_with(Vec::new);
            if held.len() + data.len() <= self.cap {
                held.extend_from_slice(data);
            } else {
                self.held = None;
                self.over = true;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Two passes. First every envelope is written into a [`Capped`] sink: a
/// value that does not serialize stops the batch before anything is put,
/// and envelopes are kept while they total at most [`HELD_TOTAL`] (any
/// other is filled again, straight into the backend, so memory stays
/// bounded). Then the puts, [`Backend::concurrent_puts`] at a time, each
/// its own atomic, conditional write; the first that fails or is refused
/// stops those not yet started.
pub(super) fn put_each<B: Backend + ?Sized>(backend: &B, puts: &[BatchPut<'_>]) -> BatchOutcome {
    let mut out = BatchOutcome { outcomes: vec![None; puts.len()], failed: None };
    let mut held: Vec<Option<(Vec<u8>, Digest)>> = Vec::with_capacity(puts.len());
    let mut budget = HELD_TOTAL;
    for (i, put) in puts.iter().enumerate() {
        let mut capped = Capped { held: None, over: false, cap: budget.min(HELD_LIMIT) };
        match (put.fill)(&mut capped) {
            Ok(digest) => {
                let kept = capped.held.map(|bytes| (bytes, digest));
                budget -= kept.as_ref().map_or(0, |(bytes, _)| bytes.len());
                held.push(kept);
            }
            Err(e) => {
                out.failed = Some((i, e));
                return out;
            }
        }
    }
    let put_one = |i: usize| -> Result<Outcome> {
        let put = &puts[i];
        match &held[i] {
            Some((bytes, digest)) => backend.put(put.key, bytes, digest, put.cond),
            None => backend.put_with(put.key, put.cond, &mut |sink| (put.fill)(sink)),
        }
    };
    let stops = |r: &Result<Outcome>| !matches!(r, Ok(Outcome::Done | Outcome::Missing));
    let mut results: Vec<Option<Result<Outcome>>> = (0..puts.len()).map(|_| None).collect();
    let width = backend.concurrent_puts().clamp(1, 64).min(puts.len().max(1));
    if width == 1 {
        for (i, slot) in results.iter_mut().enumerate() {
            let r = put_one(i);
            let stop = stops(&r);
            *slot = Some(r);
            if stop {
                break;
            }
        }
    } else {
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let done = Mutex::new(&mut results);
        std::thread::scope(|scope| {
            for _ in 0..width {
                scope.spawn(|| {
                    while !stop.load(Ordering::SeqCst) {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= puts.len() {
                            return;
                        }
                        let r = put_one(i);
                        if stops(&r) {
                            stop.store(true, Ordering::SeqCst);
                        }
                        done.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[i] = Some(r);
                    }
                });
            }
        });
    }
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Some(Ok(outcome)) => out.outcomes[i] = Some(outcome),
            Some(Err(e)) if out.failed.is_none() => out.failed = Some((i, e)),
            Some(Err(_)) | None => {}
        }
    }
    out
}
