//! [`KafkaProxy`]: a TCP proxy on 127.0.0.1 in front of one Kafka broker
//! that a test can cut or stall.
//!
//! Metadata responses are rewritten so that the broker is advertised at
//! the proxy's port (else the client would connect to the broker directly).
//!
//! * [`cut`](KafkaProxy::cut)`(true)` drops every connection and refuses
//!   new ones until `cut(false)`: a broker that cannot be reached.
//! * [`stall`](KafkaProxy::stall) holds every request read from the
//!   connections open at that moment: nothing of them reaches the broker,
//!   while new connections pass. The client sees a broker that stopped
//!   answering on those connections (and usually gives up on them); the
//!   requests are still on their way, as in a network that delays one
//!   flow. [`release`](KafkaProxy::release) sends them on, in order, even
//!   when their client has gone meanwhile, and waits until the broker has
//!   answered each: what the broker does with a request that arrives long
//!   after its producer gave up on it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// Connections the proxy serves at once, at most.
const MAX_CONNECTIONS: usize = 64;
/// Largest Kafka frame the proxy forwards.
const MAX_FRAME: usize = 64 << 20;
/// Kafka API keys.
const PRODUCE: i16 = 0;
const METADATA: i16 = 3;

/// See the [module docs](self).
pub struct KafkaProxy {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    /// Connections with an id below this one hold their requests.
    stall_below: watch::Sender<u64>,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    next_id: std::sync::atomic::AtomicU64,
    held: Mutex<Held>,
}

/// Requests held by a stall, and which of them the broker has answered.
#[derive(Default)]
struct Held {
    /// `(connection, correlation id)` of every held request.
    requests: HashSet<(u64, i32)>,
    /// Those of them that are Produce requests.
    produce: usize,
    answered: HashSet<(u64, i32)>,
    /// Connections to the broker that ended (an unanswered held request
    /// of one of them never will be).
    ended: HashSet<u64>,
}

/// What [`KafkaProxy::release`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Requests that were held.
    pub held: usize,
    /// Of those, Produce requests.
    pub produce: usize,
    /// Held requests the broker answered after the release.
    pub answered: usize,
}

impl KafkaProxy {
    /// Starts relaying to `upstream` (which must be on loopback).
    pub async fn start(upstream: SocketAddr) -> KafkaProxy {
        assert!(
            upstream.ip().is_loopback(),
            "the proxy only talks to 127.0.0.1"
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr");
        let (cut, cut_rx) = watch::channel(false);
        let (stall_below, stall_rx) = watch::channel(0u64);
        let shared = Arc::new(Shared::default());
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let conn_shared = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if *cut_rx.borrow() {
                    drop(client);
                    continue;
                }
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    drop(client);
                    continue;
                };
                let id = conn_shared
                    .next_id
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut cut = cut_rx.clone();
                let conn = Connection {
                    id,
                    stall: stall_rx.clone(),
                    shared: conn_shared.clone(),
                    from_port: upstream.port(),
                    to_port: addr.port(),
                };
                tokio::spawn(async move {
                    let _permit = permit;
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = conn.pump(client, server) => {}
                        _ = cut.wait_for(|c| *c) => {}
                    }
                    conn.shared.held.lock().unwrap().ended.insert(conn.id);
                });
            }
        });
        KafkaProxy {
            addr,
            cut,
            stall_below,
            shared,
            task,
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every connection and refuses new ones (`true`), or accepts
    /// them again (`false`).
    pub fn cut(&self, on: bool) {
        self.cut.send_replace(on);
    }

    /// Holds every request of the connections open now (see the
    /// [module docs](self)).
    pub fn stall(&self) {
        let below = self
            .shared
            .next_id
            .load(std::sync::atomic::Ordering::SeqCst);
        self.stall_below.send_replace(below);
    }

    /// Requests held so far: `(all, Produce)`.
    pub fn held(&self) -> (usize, usize) {
        let h = self.shared.held.lock().unwrap();
        (h.requests.len(), h.produce)
    }

    /// Sends the held requests on and waits (up to `timeout`) until the
    /// broker has answered each, or closed its connection.
    pub async fn release(&self, timeout: Duration) -> Released {
        self.stall_below.send_replace(0);
        let deadline = Instant::now() + timeout;
        loop {
            let done = {
                let h = self.shared.held.lock().unwrap();
                let settled = h
                    .requests
                    .iter()
                    .all(|r| h.answered.contains(r) || h.ended.contains(&r.0));
                (settled || Instant::now() >= deadline).then(|| Released {
                    held: h.requests.len(),
                    produce: h.produce,
                    answered: h.answered.len(),
                })
            };
            if let Some(r) = done {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for KafkaProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.stall_below.send_replace(0);
        self.cut.send_replace(true);
    }
}

/// One client connection and its connection to the broker.
struct Connection {
    id: u64,
    stall: watch::Receiver<u64>,
    shared: Arc<Shared>,
    from_port: u16,
    to_port: u16,
}

impl Connection {
    fn stalled(id: u64, below: u64) -> bool {
        id < below
    }

    /// Forwards frames both ways; rewrites the broker port in Metadata
    /// responses; holds requests while this connection is stalled. When
    /// the client closes, what it sent is still delivered and the broker's
    /// answers are awaited (briefly) before the broker side is closed.
    async fn pump(&self, client: TcpStream, server: TcpStream) {
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        // correlation id → Metadata request version
        let metadata = Mutex::new(HashMap::<i32, i16>::new());
        // Frames from the client, read by `reader` (reading is not
        // cancel-safe, a channel is).
        let (frames_tx, mut frames) = mpsc::unbounded_channel::<Vec<u8>>();
        let reader = async move {
            while let Some(frame) = read_frame(&mut cr).await {
                if frames_tx.send(frame).is_err() {
                    break;
                }
            }
        };
        let mut stall = self.stall.clone();
        let requests = async {
            let mut pending: VecDeque<Vec<u8>> = VecDeque::new();
            let mut open = true;
            loop {
                if !Self::stalled(self.id, *stall.borrow_and_update()) {
                    while let Some(frame) = pending.pop_front() {
                        write_frame(&mut sw, &frame).await?;
                    }
                    if !open {
                        return None::<()>;
                    }
                }
                tokio::select! {
                    frame = frames.recv(), if open => match frame {
                        Some(frame) => {
                            let stalled = Self::stalled(self.id, *stall.borrow_and_update());
                            self.note_request(&frame, stalled, &metadata);
                            pending.push_back(frame);
                        }
                        None => open = false,
                    },
                    changed = stall.changed() => changed.ok()?,
                }
            }
        };
        let responses = async {
            while let Some(mut frame) = read_frame(&mut sr).await {
                if frame.len() >= 4 {
                    let corr = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
                    {
                        let mut h = self.shared.held.lock().unwrap();
                        if h.requests.contains(&(self.id, corr)) {
                            h.answered.insert((self.id, corr));
                        }
                    }
                    let version = metadata.lock().unwrap().remove(&corr);
                    if let Some(v) = version {
                        rewrite_metadata_ports(&mut frame, v, self.from_port, self.to_port);
                    }
                }
                // A client that has gone does not end the relay: the
                // broker's answers are still read (and counted).
                let _ = write_frame(&mut cw, &frame).await;
            }
        };
        tokio::pin!(reader, requests, responses);
        let mut reader_done = false;
        loop {
            tokio::select! {
                _ = &mut reader, if !reader_done => reader_done = true,
                _ = &mut requests => {
                    // The client is gone and everything it sent was
                    // forwarded (or the broker stopped reading): let the
                    // broker answer what it was sent.
                    let _ = tokio::time::timeout(Duration::from_secs(5), &mut responses).await;
                    return;
                }
                _ = &mut responses => return,
            }
        }
    }

    /// Records a request: a Metadata request's version (to rewrite its
    /// answer), and whether a stall holds it.
    fn note_request(&self, frame: &[u8], stalled: bool, metadata: &Mutex<HashMap<i32, i16>>) {
        let Some((key, version, corr)) = request_header(frame) else {
            return;
        };
        if key == METADATA {
            metadata.lock().unwrap().insert(corr, version);
        }
        if stalled {
            let mut h = self.shared.held.lock().unwrap();
            h.requests.insert((self.id, corr));
            if key == PRODUCE {
                h.produce += 1;
            }
        }
    }
}

/// `(api key, api version, correlation id)` of a request frame.
fn request_header(frame: &[u8]) -> Option<(i16, i16, i32)> {
    let b = frame.get(..8)?;
    Some((
        i16::from_be_bytes([b[0], b[1]]),
        i16::from_be_bytes([b[2], b[3]]),
        i32::from_be_bytes([b[4], b[5], b[6], b[7]]),
    ))
}

async fn read_frame(s: &mut (impl AsyncReadExt + Unpin)) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.ok()?;
    let n = usize::try_from(i32::from_be_bytes(len)).ok()?;
    if n > MAX_FRAME {
        return None;
    }
    let mut body = vec![0u8; n];
    s.read_exact(&mut body).await.ok()?;
    Some(body)
}

async fn write_frame(s: &mut (impl AsyncWriteExt + Unpin), body: &[u8]) -> Option<()> {
    let n = i32::try_from(body.len()).ok()?;
    s.write_all(&n.to_be_bytes()).await.ok()?;
    s.write_all(body).await.ok()
}

/// In a Metadata response (after the size), replaces broker port
/// `from` by `to`. Leaves the frame as it is if it cannot parse it.
fn rewrite_metadata_ports(frame: &mut [u8], version: i16, from: u16, to: u16) {
    let flexible = version >= 9;
    let mut p = Parser { buf: frame, at: 4 };
    let _ = (|| -> Option<()> {
        if flexible {
            p.skip_tags()?;
        }
        if version >= 3 {
            p.skip(4)?; // throttle_time_ms
        }
        let n = if flexible {
            p.uvarint()?.checked_sub(1)?
        } else {
            u64::try_from(p.i32()?).ok()?
        };
        for _ in 0..n {
            p.skip(4)?; // node_id
            p.string(flexible)?; // host
            let at = p.at;
            let port = p.i32()?;
            if port == i32::from(from) {
                p.buf[at..at + 4].copy_from_slice(&i32::from(to).to_be_bytes());
            }
            if version >= 1 {
                p.string(flexible)?; // rack
            }
            if flexible {
                p.skip_tags()?;
            }
        }
        Some(())
    })();
}

struct Parser<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Parser<'_> {
    fn skip(&mut self, n: usize) -> Option<()> {
        let end = self.at.checked_add(n)?;
        (end <= self.buf.len()).then(|| self.at = end)
    }

    fn i32(&mut self) -> Option<i32> {
        let b = self.buf.get(self.at..self.at + 4)?;
        let v = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        self.at += 4;
        Some(v)
    }

    fn uvarint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.at)?;
            self.at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// A (nullable) string, compact in flexible versions.
    fn string(&mut self, flexible: bool) -> Option<()> {
        if flexible {
            let n = self.uvarint()?;
            self.skip(usize::try_from(n.saturating_sub(1)).ok()?)
        } else {
            let b = self.buf.get(self.at..self.at + 2)?;
            let n = i16::from_be_bytes([b[0], b[1]]);
            self.at += 2;
            self.skip(usize::try_from(n.max(0)).ok()?)
        }
    }

    fn skip_tags(&mut self) -> Option<()> {
        for _ in 0..self.uvarint()? {
            self.uvarint()?;
            let n = self.uvarint()?;
            self.skip(usize::try_from(n).ok()?)?;
        }
        Some(())
    }
}
