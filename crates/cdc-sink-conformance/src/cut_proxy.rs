//! [`CutProxy`]: a TCP relay on 127.0.0.1 whose connections a test can cut.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Relays every connection made to [`addr`](CutProxy::addr) to `upstream`,
/// byte for byte. [`cut`](CutProxy::cut) drops every open connection at
/// once, losing whatever the relay had read but not yet written (as a
/// network failure would); [`refuse`](CutProxy::refuse) turns new
/// connections away until called again with `false`;
/// [`delay_connects`](CutProxy::delay_connects) holds each new connection
/// for a while before relaying it (a server slow to accept).
pub struct CutProxy {
    addr: SocketAddr,
    /// Bumped by every cut; each relay ends when it changes.
    generation: watch::Sender<u64>,
    refusing: Arc<std::sync::atomic::AtomicBool>,
    /// Milliseconds each new connection waits before it is relayed.
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// Starts relaying to `upstream` (which must be on loopback).
    pub async fn start(upstream: SocketAddr) -> CutProxy {
        assert!(
            upstream.ip().is_loopback(),
            "the proxy only talks to 127.0.0.1"
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let addr = listener.local_addr().expect("proxy address");
        let (generation, gen_rx) = watch::channel(0u64);
        let refusing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refuse = refusing.clone();
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let delay = delay_ms.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if refuse.load(std::sync::atomic::Ordering::Relaxed) {
                    drop(client);
                    continue;
                }
                let mut rx = gen_rx.clone();
                let born = *rx.borrow_and_update();
                let wait = delay.load(std::sync::atomic::Ordering::Relaxed);
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = rx.wait_for(|g| *g != born) => {}
                    }
                    // Dropping both sockets here loses what was in flight.
                });
            }
        });
        CutProxy {
            addr,
            generation,
            refusing,
            delay_ms,
            task,
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every open connection now.
    pub fn cut(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Refuses (`true`) or accepts (`false`) new connections.
    pub fn refuse(&self, on: bool) {
        self.refusing
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }
}

impl CutProxy {
    /// Holds each connection made from now on for `delay` before relaying
    /// it (zero: at once).
    pub fn delay_connects(&self, delay: std::time::Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.delay_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}
