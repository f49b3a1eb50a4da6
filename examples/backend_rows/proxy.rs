//! The bench's TCP proxy: it stands between a client and one server on
//! 127.0.0.1, delays every burst of bytes by a fixed time in each
//! direction (a network's latency, with no bandwidth limit), and counts
//! what crosses it.
//!
//! An *exchange* (a round trip) is a client-to-server burst followed by a
//! server-to-client burst on the same connection: it is counted when a
//! connection's server starts answering after its client spoke. Pipelined
//! statements answered together are one exchange; requests on several
//! connections at once are one each (their latencies overlap, their
//! count does not).
//!
//! Each direction of a connection has a reader thread, which stamps every
//! chunk with the time it arrived, and a writer thread, which passes the
//! chunk on once `delay` has elapsed since: chunks keep their order and
//! their spacing, and a large body pays the delay once, not per chunk. At
//! most [`IN_FLIGHT`] chunks of at most [`CHUNK`] bytes wait in each
//! direction (about 2 MiB), so the proxy's own memory stays bounded
//! whatever a side sends (and a reader that falls behind slows the
//! sender, as TCP's window does).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// The largest chunk read at once.
pub const CHUNK: usize = 64 << 10;

/// Chunks waiting for their delay in one direction, at most.
pub const IN_FLIGHT: usize = 32;

/// What crossed the proxy so far, over all its connections.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Request/response exchanges (round trips).
    pub exchanges: u64,
    /// Bytes from clients to the server.
    pub up: u64,
    /// Bytes from the server to clients.
    pub down: u64,
}

impl std::ops::Sub for Counts {
    type Output = Counts;
    fn sub(self, o: Counts) -> Counts {
        Counts {
            exchanges: self.exchanges - o.exchanges,
            up: self.up - o.up,
            down: self.down - o.down,
        }
    }
}

#[derive(Default)]
struct Counters {
    exchanges: AtomicU64,
    up: AtomicU64,
    down: AtomicU64,
}

/// A running proxy. It accepts for as long as the process runs (the bench
/// starts one per server).
pub struct Proxy {
    /// The address it listens on: `127.0.0.1:PORT`.
    pub addr: String,
    counters: Arc<Counters>,
}

/// The delay each way: `BENCH_RTT_MS` milliseconds (default 1, `0` for
/// none).
pub fn delay_from_env() -> Duration {
    let ms = std::env::var("BENCH_RTT_MS").ok().and_then(|v| v.parse::<f64>().ok()).unwrap_or(1.0);
    Duration::from_secs_f64(ms.max(0.0) / 1e3)
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection
    /// to `upstream` (`host:port`), `delay` late each way.
    pub fn start(upstream: &str, delay: Duration) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let counters = Arc::new(Counters::default());
        let (c, upstream) = (counters.clone(), upstream.to_owned());
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                // Who spoke last on this connection: 0 nobody, 1 client, 2 server.
                let last = Arc::new(AtomicU8::new(0));
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else { continue };
                let (up, down) = ((c.clone(), last.clone()), (c.clone(), last));
                thread::spawn(move || pump(client, server, delay, up, true));
                thread::spawn(move || pump(s2, c2, delay, down, false));
            }
        });
        Ok(Proxy { addr, counters })
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        Counts {
            exchanges: self.counters.exchanges.load(Ordering::SeqCst),
            up: self.counters.up.load(Ordering::SeqCst),
            down: self.counters.down.load(Ordering::SeqCst),
        }
    }
}

/// Forwards `from` to `to`, each chunk `delay` after it arrived.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    delay: Duration,
    (counters, last): (Arc<Counters>, Arc<AtomicU8>),
    client_side: bool,
) {
    let (tx, rx) = mpsc::sync_channel::<(Instant, Vec<u8>)>(IN_FLIGHT);
    let writer = thread::spawn(move || {
        for (arrived, chunk) in rx {
            let due = arrived + delay;
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let arrived = Instant::now();
        if client_side {
            counters.up.fetch_add(n as u64, Ordering::SeqCst);
            last.store(1, Ordering::SeqCst);
        } else {
            counters.down.fetch_add(n as u64, Ordering::SeqCst);
            if last.swap(2, Ordering::SeqCst) == 1 {
                counters.exchanges.fetch_add(1, Ordering::SeqCst);
            }
        }
        if tx.send((arrived, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.join();
}
