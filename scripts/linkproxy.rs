//! A TCP proxy that behaves like a network link: a one-way delay and a rate.
//!
//! ```text
//! cargo build --release --example linkproxy
//! target/release/examples/linkproxy --listen 127.0.0.1:9210 --upstream 127.0.0.1:9200 \
//!     --delay-ms 10 --rate-mbit 1000
//! python3 scripts/linkproxy.py --selftest    # checks it: round trip, rate, sharing
//! ```
//!
//! Put in front of the S3 server of scripts/ci-services.sh, it makes that
//! server look one 20 ms round trip away behind a 1 Gbit/s link, which
//! `tc netem` would do if this kernel had it (scripts/bench-link.sh).
//!
//! The model, per direction (client to server, server to client), shared by
//! all connections: the link sends one byte after another at the rate, so a
//! piece read at `arrival` leaves at `max(arrival, link free) + len / rate`
//! (the link is busy until then) and arrives `delay` later, when a writer
//! task writes it. A new connection waits one round trip (the handshake)
//! before anything. Backpressure: a connection's queue is bounded, and a
//! direction whose backlog exceeds one bandwidth-delay product stops reading
//! until half of it is sent (a router's buffer). Not modelled: slow start,
//! windows, loss, jitter.
//!
//! It was first written in Python (asyncio); on this project's 2-core
//! machines that one used 0.4-0.5 CPU seconds per restore of the benchmark
//! corpus, taken from the restore it measured. This one forwards the same
//! bytes with a fraction of that. On SIGTERM or SIGINT it prints
//! "linkproxy: cpu S s (user U, system Y), forwarded UP bytes up, DOWN bytes
//! down" on stderr. Once ready it prints "linkproxy: listening on HOST:PORT".
//!
//! With `--gaps` it also prints its start (seconds since the epoch, to line
//! up with other logs) and, on SIGTERM, each direction's timeline: when its
//! first byte was read and its last arrived, and the gaps in between when
//! the link had nothing to carry. Started for a single restore, that shows
//! whether the restore kept the link busy.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until};

/// Bytes read at once from a socket.
const READ: usize = 64 << 10;
/// Pieces queued per connection and direction before its reader waits.
const QUEUE: usize = 64;

/// One direction of the link, shared by every connection.
struct Link {
    delay: Duration,
    /// Bytes per second.
    rate: f64,
    /// How much sending may wait to be sent (one bandwidth-delay product).
    backlog: Duration,
    free_at: Mutex<Instant>,
    bytes: AtomicU64,
    /// The link's idle gaps between its first and its last byte: when each
    /// began (from the start) and how long it lasted.
    gaps: Mutex<Vec<(Duration, Duration)>>,
    /// When the first byte was read, and when the last one arrives.
    span: Mutex<Option<(Instant, Instant)>>,
    start: Instant,
}

impl Link {
    fn new(delay: Duration, rate: f64) -> Link {
        Link {
            delay,
            rate,
            backlog: (2 * delay).max(Duration::from_millis(1)),
            free_at: Mutex::new(Instant::now()),
            bytes: AtomicU64::new(0),
            gaps: Mutex::new(Vec::new()),
            span: Mutex::new(None),
            start: Instant::now(),
        }
    }

    /// When `len` bytes read now reach the other end, and how long the
    /// reader should wait before reading more (the backlog is full).
    fn stamp(&self, len: usize) -> (Instant, Option<Instant>) {
        let before = self.bytes.fetch_add(len as u64, Ordering::Relaxed);
        let now = Instant::now();
        let mut free_at = self.free_at.lock().unwrap_or_else(|e| e.into_inner());
        if before > 0 && len > 0 && now > *free_at {
            let mut gaps = self.gaps.lock().unwrap_or_else(|e| e.into_inner());
            gaps.push((*free_at - self.start, now - *free_at));
        }
        let departure = (*free_at).max(now) + Duration::from_secs_f64(len as f64 / self.rate);
        *free_at = departure;
        if len > 0 {
            let mut span = self.span.lock().unwrap_or_else(|e| e.into_inner());
            let first = span.map_or(now, |s| s.0);
            *span = Some((first, departure + self.delay));
        }
        let wait = (departure - now > self.backlog).then(|| departure - self.backlog / 2);
        (departure + self.delay, wait)
    }

    /// "NAME: bytes from FIRST s to LAST s, idle S s in N gaps; of 5 ms or
    /// more: AT+MSms ...", times from the start: where the link waited
    /// for something to carry while a transfer was under way.
    fn timeline(&self, name: &str) -> String {
        let gaps = self.gaps.lock().unwrap_or_else(|e| e.into_inner());
        let idle: Duration = gaps.iter().map(|g| g.1).sum();
        let long: Vec<String> = gaps
            .iter()
            .filter(|g| g.1 >= Duration::from_millis(5))
            .map(|(at, len)| format!("{:.3}+{:.0}ms", at.as_secs_f64(), len.as_secs_f64() * 1e3))
            .collect();
        let span = self.span.lock().unwrap_or_else(|e| e.into_inner());
        let since = |t: Instant| (t - self.start).as_secs_f64();
        let (first, last) = span.map_or((0.0, 0.0), |(f, l)| (since(f), since(l)));
        format!(
            "linkproxy: {name}: bytes from {first:.3} s to {last:.3} s, idle {:.3} s in {} gaps; of 5 ms or more: {}",
            idle.as_secs_f64(),
            gaps.len(),
            long.join(" ")
        )
    }
}

/// What a reader hands its writer: bytes due at a time, or the end.
enum Piece {
    Data(Instant, Vec<u8>),
    /// The sender half-closed: shut the other side's writing down, after
    /// what came before.
    End(Instant),
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let (Some(listen), Some(upstream)) = (value("--listen"), value("--upstream")) else {
        eprintln!(
            "usage: linkproxy --listen HOST:PORT --upstream HOST:PORT [--delay-ms 10] [--rate-mbit 1000] [--gaps]"
        );
        std::process::exit(2);
    };
    let number = |name: &str, default: f64| {
        value(name).map_or(Ok(default), |v| {
            v.parse::<f64>()
                .map_err(|_| io::Error::other(format!("{name} {v} is not a number")))
        })
    };
    let delay = Duration::from_secs_f64(number("--delay-ms", 10.0)? / 1000.0);
    let rate = number("--rate-mbit", 1000.0)? * 1e6 / 8.0;
    let up = Arc::new(Link::new(delay, rate));
    let down = Arc::new(Link::new(delay, rate));
    let listener = TcpListener::bind(&listen).await?;
    println!("linkproxy: listening on {}", listener.local_addr()?);
    let gaps = args.iter().any(|a| a == "--gaps");
    if gaps {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        eprintln!("linkproxy: started at {:.3}", t.as_secs_f64());
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut connections = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (client, _) = accepted?;
                connections += 1;
                let (up, down, upstream) = (Arc::clone(&up), Arc::clone(&down), upstream.clone());
                tokio::spawn(async move {
                    let _ = connect(client, &upstream, up, down, delay).await;
                });
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let (user, system) = cpu_seconds();
    eprintln!(
        "linkproxy: cpu {:.2} s (user {user:.2}, system {system:.2}), forwarded {} bytes up, {} bytes down, {connections} connections",
        user + system,
        up.bytes.load(Ordering::Relaxed),
        down.bytes.load(Ordering::Relaxed)
    );
    if gaps {
        eprintln!("{}", up.timeline("up"));
        eprintln!("{}", down.timeline("down"));
    }
    Ok(())
}

/// One proxied connection: after a round trip (the handshake), both
/// directions run until each has ended.
async fn connect(
    client: TcpStream,
    upstream: &str,
    up: Arc<Link>,
    down: Arc<Link>,
    delay: Duration,
) -> io::Result<()> {
    sleep(2 * delay).await;
    let server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let sending = tokio::spawn(direction(client_read, up, server_write));
    let receiving = direction(server_read, down, client_write).await;
    let _ = sending.await;
    receiving
}

/// Carries one direction: reads, stamps and queues; a writer task writes
/// each piece when it is due.
async fn direction(mut from: OwnedReadHalf, link: Arc<Link>, to: OwnedWriteHalf) -> io::Result<()> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let writer = tokio::spawn(write_due(rx, to));
    loop {
        let mut buffer = vec![0; READ];
        let n = match from.read(&mut buffer).await {
            Ok(n) => n,
            // A reset: the writer drops its socket, which closes it.
            Err(_) => break,
        };
        if n == 0 {
            let (due, _) = link.stamp(0);
            let _ = tx.send(Piece::End(due)).await;
            break;
        }
        buffer.truncate(n);
        let (due, wait) = link.stamp(n);
        if tx.send(Piece::Data(due, buffer)).await.is_err() {
            break;
        }
        if let Some(until) = wait {
            sleep_until(until).await;
        }
    }
    drop(tx);
    writer.await.unwrap_or(Ok(()))
}

async fn write_due(mut pieces: mpsc::Receiver<Piece>, mut to: OwnedWriteHalf) -> io::Result<()> {
    while let Some(piece) = pieces.recv().await {
        match piece {
            Piece::Data(due, bytes) => {
                sleep_until(due).await;
                to.write_all(&bytes).await?;
            }
            Piece::End(due) => {
                sleep_until(due).await;
                return to.shutdown().await;
            }
        }
    }
    Ok(())
}

/// This process's user and system CPU seconds, from /proc.
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command name: state is field 0, utime 11, stime 12.
    (ticks(11) / 100.0, ticks(12) / 100.0)
}
