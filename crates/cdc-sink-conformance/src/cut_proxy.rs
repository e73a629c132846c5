//! [`CutProxy`]: a TCP relay on 127.0.0.1 whose connections a test can cut.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Relays every connection made to [`addr`](CutProxy::addr) to `upstream`,
/// byte for byte. [`cut`](CutProxy::cut) drops every open connection at
/// once, losing whatever the relay had read but not yet written (as a
/// network failure would); [`refuse`](CutProxy::refuse) turns new
/// connections away until called again with `false`.
pub struct CutProxy {
    addr: SocketAddr,
    /// Bumped by every cut; each relay ends when it changes.
    generation: watch::Sender<u64>,
    refusing: Arc<std::sync::atomic::AtomicBool>,
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
                tokio::spawn(async move {
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

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}
