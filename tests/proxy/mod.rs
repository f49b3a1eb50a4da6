//! A TCP proxy for tests: forwards every connection to one server, and
//! injects the faults a network and a server show, at the boundary.
//!
//! - [`Proxy::arm`]: hold back the first client bytes that contain a
//!   pattern until [`Proxy::release`] (the request is on its way; the test
//!   can kill its session meanwhile);
//! - [`Proxy::freeze`]: stop forwarding in both directions, connections
//!   kept open, as a stopped server or a partition shows, until
//!   [`Proxy::thaw`];
//! - [`Proxy::cut_after`]: the next client bytes that contain a pattern
//!   reach the server after the client's side of the connection is shut
//!   down: the request runs, its reply is lost.
#![allow(dead_code)] // each test crate uses a different subset

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Default)]
struct State {
    pattern: Option<Vec<u8>>,
    holding: bool,
    released: bool,
    frozen: bool,
    cut: Option<Vec<u8>>,
    cuts: u32,
}

type Shared = Arc<(Mutex<State>, Condvar)>;

/// A running proxy; it stops accepting when dropped.
pub struct Proxy {
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    state: Shared,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`
    /// (`host:port`).
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state: Shared = Arc::default();
        let (s, upstream) = (state.clone(), upstream.to_owned());
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (up, down) = (s.clone(), s.clone());
                thread::spawn(move || pump(client, server, up, true));
                thread::spawn(move || pump(s2, c2, down, false));
            }
        });
        Proxy { port, state }
    }

    /// `url` with its `host:port` authority (`authority`) replaced by this
    /// proxy's.
    pub fn url(&self, url: &str, authority: &str) -> String {
        url.replacen(authority, &format!("127.0.0.1:{}", self.port), 1)
    }

    /// Holds the next client bytes that contain `pattern`.
    pub fn arm(&self, pattern: &[u8]) {
        self.state.0.lock().unwrap().pattern = Some(pattern.to_vec());
    }

    /// The next client bytes that contain `pattern` are forwarded after the
    /// client's side is shut down (no reply can reach it); the server's side
    /// is closed half a second later.
    pub fn cut_after(&self, pattern: &[u8]) {
        self.state.0.lock().unwrap().cut = Some(pattern.to_vec());
    }

    /// How many requests were cut from their replies.
    pub fn cuts(&self) -> u32 {
        self.state.0.lock().unwrap().cuts
    }

    /// Waits until bytes are held.
    pub fn wait_holding(&self) {
        let (lock, cv) = &*self.state;
        let guard = lock.lock().unwrap();
        let (guard, timeout) =
            cv.wait_timeout_while(guard, Duration::from_secs(30), |h| !h.holding).unwrap();
        assert!(!timeout.timed_out() && guard.holding, "nothing matched the pattern");
    }

    /// Lets the held bytes go on.
    pub fn release(&self) {
        let (lock, cv) = &*self.state;
        lock.lock().unwrap().released = true;
        cv.notify_all();
    }

    /// Stops forwarding, both ways, on every connection (new ones too).
    pub fn freeze(&self) {
        self.state.0.lock().unwrap().frozen = true;
    }

    /// Forwards again.
    pub fn thaw(&self) {
        let (lock, cv) = &*self.state;
        lock.lock().unwrap().frozen = false;
        cv.notify_all();
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, state: Shared, client_side: bool) {
    let mut buf = vec![0u8; 64 << 10];
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let (lock, cv) = &*state;
        let mut s = lock.lock().unwrap();
        if client_side {
            let seen: Vec<u8> = tail.iter().chain(&buf[..n]).copied().collect();
            let hit = s
                .pattern
                .as_ref()
                .is_some_and(|p| seen.windows(p.len()).any(|w| w == p.as_slice()));
            let cut =
                s.cut.as_ref().is_some_and(|p| seen.windows(p.len()).any(|w| w == p.as_slice()));
            if cut {
                s.cut = None;
                s.cuts += 1;
                drop(s);
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.write_all(&buf[..n]);
                thread::sleep(Duration::from_millis(500));
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
            if hit {
                s.pattern = None;
                s.holding = true;
                cv.notify_all();
                s = cv.wait_while(s, |s| !s.released).unwrap();
            }
            tail = seen[seen.len().saturating_sub(64)..].to_vec();
        }
        drop(cv.wait_while(s, |s| s.frozen).unwrap());
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
