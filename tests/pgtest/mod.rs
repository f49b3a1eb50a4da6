//! The PostgreSQL server the tests run against, from the environment.
//!
//! `SAFESTASH_TEST_POSTGRES_URL` names a database the tests may write to
//! (`.ci/run` starts a throwaway server and exports it). When it is unset
//! a test prints why it skips its PostgreSQL part; under `CI=true` that is
//! a failure instead, so CI can never skip these tests silently.
#![allow(dead_code)] // each test crate uses a different subset

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The server's URL, or `None` (with the reason printed) when the tests
/// should skip. Panics under `CI=true` when it is missing.
pub fn url(test: &str) -> Option<String> {
    match std::env::var("SAFESTASH_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "{test}: CI=true but SAFESTASH_TEST_POSTGRES_URL is not set; \
                     the PostgreSQL tests must never be skipped in CI"
                );
            }
            eprintln!(
                "{test}: skipping the PostgreSQL part: SAFESTASH_TEST_POSTGRES_URL is not set \
                 (bash .ci/run starts a server and sets it)"
            );
            None
        }
    }
}

/// A namespace no other test (or earlier run) uses.
pub fn fresh_namespace(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{test}-{}-{nanos}-{n}", std::process::id())
}

/// `url` with `?namespace=ns` (or `&namespace=ns`) appended.
pub fn with_namespace(url: &str, ns: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}namespace={ns}")
}

/// The directory of PostgreSQL's programs (`SAFESTASH_TEST_PGBIN`, else
/// the Debian location of version 15).
pub fn pgbin() -> String {
    std::env::var("SAFESTASH_TEST_PGBIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into())
}

/// Runs `sql` with psql against `url` (no namespace parameter) and returns
/// its unaligned output. Panics when psql fails.
pub fn psql(url: &str, sql: &str) -> String {
    let psql = format!("{}/psql", pgbin());
    let psql = if std::path::Path::new(&psql).exists() { psql } else { "psql".into() };
    let out = Command::new(psql)
        .args([url, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("run psql");
    assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A SQL string literal for `s` (tests only: values here are test-made).
pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The `host:port` of a `postgresql://user@host:port/db...` URL.
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").expect("a URL").1;
    let authority = rest.split(['/', '?']).next().unwrap();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if hostport.contains(':') { hostport.to_owned() } else { format!("{hostport}:5432") }
}

/// `url` with its `host:port` replaced by `127.0.0.1:port`.
pub fn via_port(url: &str, port: u16) -> String {
    let old = host_port(url);
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((user, _)) => format!("{user}@127.0.0.1:{port}"),
        None => format!("127.0.0.1:{port}"),
    };
    let _ = old;
    format!("{scheme}://{authority}{tail}")
}

#[allow(unused_imports)] // not every test crate uses the proxy
pub use proxy::{Mode, Proxy};

/// A TCP proxy between the store and the server (std::net and threads), to
/// inject faults at the network boundary: it forwards, or stops forwarding
/// in both directions (a silent server), or cuts the client's side of a
/// connection right after forwarding a `COMMIT` to the server (the commit
/// lands, its reply is lost).
pub mod proxy {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::Duration;

    /// What the proxy does with the traffic.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Mode {
        /// Forwards everything.
        Forward,
        /// Holds everything (new connections are accepted, nothing passes):
        /// a server that stopped answering.
        Stall,
        /// Forwards; the next simple-query `COMMIT` a client sends is
        /// forwarded to the server after that client's socket is shut down,
        /// so the commit runs and its reply is lost. Back to `Forward` after.
        CutAfterCommit,
    }

    struct State {
        mode: Mutex<Mode>,
        changed: Condvar,
        cuts: AtomicU32,
        accepted: AtomicU32,
        /// Client bursts that followed a server reply (or opened a
        /// connection): request/response exchanges, round trips.
        exchanges: AtomicU64,
        /// Connections numbered below this are closed at their next message.
        doomed_below: AtomicU32,
        closing: AtomicBool,
    }

    impl State {
        /// Waits while the proxy stalls; false once it is closing.
        fn pass(&self) -> bool {
            let mut mode = self.mode.lock().unwrap();
            while *mode == Mode::Stall && !self.closing.load(Ordering::SeqCst) {
                mode = self.changed.wait(mode).unwrap();
            }
            !self.closing.load(Ordering::SeqCst)
        }
    }

    /// A running proxy to `upstream` on `127.0.0.1:port`.
    pub struct Proxy {
        /// The port it listens on.
        pub port: u16,
        state: Arc<State>,
    }

    impl Proxy {
        /// Starts a proxy to `upstream` (`host:port`).
        pub fn start(upstream: &str) -> Proxy {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
            let port = listener.local_addr().unwrap().port();
            let state = Arc::new(State {
                mode: Mutex::new(Mode::Forward),
                changed: Condvar::new(),
                cuts: AtomicU32::new(0),
                accepted: AtomicU32::new(0),
                exchanges: AtomicU64::new(0),
                doomed_below: AtomicU32::new(0),
                closing: AtomicBool::new(false),
            });
            let upstream = upstream.to_owned();
            let st = state.clone();
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if st.closing.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let id = st.accepted.fetch_add(1, Ordering::SeqCst);
                    let Ok(server) = TcpStream::connect(&upstream) else { continue };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    let answered = Arc::new(AtomicBool::new(true));
                    let (st1, a1) = (st.clone(), answered.clone());
                    std::thread::spawn(move || client_to_server(st1, id, a1, client, server));
                    let st2 = st.clone();
                    std::thread::spawn(move || server_to_client(st2, answered, s2, c2));
                }
            });
            Proxy { port, state }
        }

        /// Sets what the proxy does from now on.
        pub fn set(&self, mode: Mode) {
            *self.state.mode.lock().unwrap() = mode;
            self.state.changed.notify_all();
        }

        /// The current mode (a `CutAfterCommit` that cut is `Forward` again).
        pub fn mode(&self) -> Mode {
            *self.state.mode.lock().unwrap()
        }

        /// How many connections had their reply cut after a `COMMIT`.
        pub fn cuts(&self) -> u32 {
            self.state.cuts.load(Ordering::SeqCst)
        }

        /// Every connection open now is closed (both sides, nothing
        /// forwarded) when its client next sends a message: connections
        /// that died while idle (a restart behind a NAT, a firewall's idle
        /// timeout), found out only at their next use.
        pub fn doom_open_connections(&self) {
            self.state.doomed_below.store(self.accepted(), Ordering::SeqCst);
        }

        /// Round trips so far, over all connections: a client's burst of
        /// bytes that follows the server's reply on its connection (or
        /// opens it) counts one, so statements sent together (pipelined)
        /// and answered together are one, and a statement that waits for
        /// the previous one's answer is one more.
        pub fn exchanges(&self) -> u64 {
            self.state.exchanges.load(Ordering::SeqCst)
        }

        /// How many connections it accepted.
        pub fn accepted(&self) -> u32 {
            self.state.accepted.load(Ordering::SeqCst)
        }
    }

    impl Drop for Proxy {
        fn drop(&mut self) {
            self.state.closing.store(true, Ordering::SeqCst);
            self.state.changed.notify_all();
            // Wake the accept loop so it sees `closing`.
            let _ = TcpStream::connect(("127.0.0.1", self.port));
        }
    }

    fn server_to_client(
        st: Arc<State>,
        answered: Arc<AtomicBool>,
        mut server: TcpStream,
        mut client: TcpStream,
    ) {
        let mut buf = [0u8; 16384];
        loop {
            let n = match server.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            answered.store(true, Ordering::SeqCst);
            if !st.pass() {
                break;
            }
            // A client that is gone (cut after its COMMIT) leaves the
            // server's answers unread, and its session to the other side.
            let _ = client.write_all(&buf[..n]);
        }
        let _ = client.shutdown(Shutdown::Both);
        let _ = server.shutdown(Shutdown::Both);
    }

    /// Forwards the client's messages one at a time (the protocol's framing:
    /// untyped startup packets, then a type byte and a length), so that a
    /// `COMMIT` can be seen.
    fn client_to_server(
        st: Arc<State>,
        id: u32,
        answered: Arc<AtomicBool>,
        mut client: TcpStream,
        mut server: TcpStream,
    ) {
        let mut startup = true;
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = [0u8; 16384];
        'outer: loop {
            let n = match client.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if answered.swap(false, Ordering::SeqCst) {
                st.exchanges.fetch_add(1, Ordering::SeqCst);
            }
            pending.extend_from_slice(&buf[..n]);
            loop {
                let (len, header) = if startup { (4, 0) } else { (5, 1) };
                if pending.len() < len {
                    break;
                }
                let body = u32::from_be_bytes(pending[header..header + 4].try_into().unwrap());
                let total = header + body as usize;
                if pending.len() < total {
                    break;
                }
                let msg: Vec<u8> = pending.drain(..total).collect();
                if startup {
                    let code = u32::from_be_bytes(msg[4..8].try_into().unwrap());
                    // SSLRequest and GSSENCRequest are followed by another
                    // untyped packet; anything else is the startup itself.
                    startup = code == 80_877_103 || code == 80_877_104;
                }
                if !st.pass() || id < st.doomed_below.load(Ordering::SeqCst) {
                    break 'outer;
                }
                let commit = !startup
                    && msg[0] == b'Q'
                    && String::from_utf8_lossy(&msg[5..])
                        .trim_start()
                        .to_ascii_uppercase()
                        .starts_with("COMMIT");
                let cut = commit && {
                    let mut mode = st.mode.lock().unwrap();
                    let cut = *mode == Mode::CutAfterCommit;
                    if cut {
                        *mode = Mode::Forward;
                    }
                    cut
                };
                if cut {
                    // The client's side goes first, so no reply can reach it;
                    // then the COMMIT goes to the server, which runs it.
                    st.cuts.fetch_add(1, Ordering::SeqCst);
                    let _ = client.shutdown(Shutdown::Both);
                    let _ = server.write_all(&msg);
                    std::thread::sleep(Duration::from_millis(500));
                    let _ = server.shutdown(Shutdown::Both);
                    return;
                }
                if server.write_all(&msg).is_err() {
                    break 'outer;
                }
            }
        }
        let _ = server.shutdown(Shutdown::Both);
        let _ = client.shutdown(Shutdown::Both);
    }
}
