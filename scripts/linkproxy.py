#!/usr/bin/env python3
"""A TCP proxy that behaves like a network link: a one-way delay and a rate.

    scripts/linkproxy.py --listen 127.0.0.1:9210 --upstream 127.0.0.1:9200 \\
        --delay-ms 10 --rate-mbit 1000
    scripts/linkproxy.py --selftest [--delay-ms 10 --rate-mbit 1000]

Put in front of a server on 127.0.0.1 (the S3 server of scripts/ci-services.sh),
it makes that server look like one 20 ms round trip away behind a 1 Gbit/s
link, which `tc netem` would do if the kernel had it. scripts/bench-link.sh
uses scripts/linkproxy.rs, the same model and options in Rust: this one
took 0.4-0.5 CPU seconds per restore of the benchmark corpus from the 2 cores
it measured on. `--selftest --proxy PROGRAM` checks that one (or any proxy
with these options) the same way.

The model, per direction (client to server, server to client), shared by all
connections: the link sends one byte after another at the rate, so a chunk
read at `arrival` leaves at `max(arrival, link_free_at) + len / rate` (and the
link is busy until then), and arrives `delay` later. Reading only stamps a
chunk and queues it; a timer writes each connection's queue when its head is
due, everything that is due at once. A new connection waits one round trip
(the TCP handshake) before the proxy connects upstream and before anything
the client sent counts as sent. Queues are bounded, with backpressure on the
socket they are read from: per connection (a receiver that does not read)
and per direction (the backlog waiting to be sent stays within one
bandwidth-delay product, like a router's buffer). Half-closes and resets
are passed on, after what was sent before them. Not modelled: TCP slow
start and windows, loss, jitter; the link is the only bottleneck.

Once ready it prints "linkproxy: listening on HOST:PORT" on stdout. On
SIGTERM or SIGINT it stops and prints the CPU seconds it used on stderr,
"linkproxy: cpu S s (user U, system Y), forwarded UP bytes up, DOWN bytes down".
Python 3 standard library only.
"""

import argparse
import asyncio
import collections
import os
import resource
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time

EOF = None  # queue markers: the sender half-closed,
RESET = object()  # or its socket was reset (the proxy resets the other one)


def set_nodelay(transport):
    # asyncio sets TCP_NODELAY only when sock.proto == IPPROTO_TCP, which is
    # not always so (a socket made with proto 0); set it on every socket.
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class Link:
    """One direction of the link: a serialisation clock shared by every
    connection, and the sources paused because its backlog is full."""

    def __init__(self, loop, name, delay, rate, backlog):
        self.loop = loop
        self.name = name
        self.delay = delay  # seconds, one way
        self.rate = rate  # bytes per second
        self.backlog = backlog  # seconds of sending that may wait to be sent
        self.free_at = 0.0
        self.bytes = 0
        self.paused = set()  # Sides paused because of the backlog
        self.resume_handle = None

    def stamp(self, arrival, size):
        """When a chunk of `size` bytes read at `arrival` reaches the other end."""
        departure = max(arrival, self.free_at) + size / self.rate
        self.free_at = departure
        self.bytes += size
        return departure + self.delay

    def full(self, now):
        return self.free_at - now > self.backlog

    def pause(self, side, now):
        side.pause("link")
        self.paused.add(side)
        if self.resume_handle is None:
            # Resume when half the allowed backlog is left: the sources'
            # socket buffers refill the link before it runs dry.
            when = self.free_at - self.backlog / 2
            self.resume_handle = self.loop.call_at(max(when, now), self.resume)

    def resume(self):
        self.resume_handle = None
        now = self.loop.time()
        if self.full(now):
            when = self.free_at - self.backlog / 2
            self.resume_handle = self.loop.call_at(max(when, now), self.resume)
            return
        paused, self.paused = self.paused, set()
        for side in paused:
            side.unpause("link")

    def forget(self, side):
        self.paused.discard(side)


class Side(asyncio.Protocol):
    """One socket of a proxied connection (the client's or the upstream's)."""

    def __init__(self, conn, name):
        self.conn = conn
        self.name = name
        self.transport = None
        self.pause_reasons = set()
        self.can_write = True
        self.closed = False

    # Reading: pausing has reasons (the peer's queue, the link's backlog);
    # reading resumes when none is left.
    def pause(self, reason):
        if not self.pause_reasons and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self.pause_reasons.add(reason)

    def unpause(self, reason):
        if reason not in self.pause_reasons:
            return
        self.pause_reasons.discard(reason)
        if not self.pause_reasons and self.transport is not None and not self.closed:
            try:
                self.transport.resume_reading()
            except (RuntimeError, AttributeError):
                pass

    def connection_made(self, transport):
        self.transport = transport
        set_nodelay(transport)
        transport.set_write_buffer_limits(high=1 << 20)
        if self.pause_reasons:
            transport.pause_reading()
        self.conn.side_made(self)

    def data_received(self, data):
        self.conn.received(self, data)

    def eof_received(self):
        self.conn.received(self, EOF)
        return True  # keep the other half open

    def connection_lost(self, exc):
        self.closed = True
        self.conn.side_lost(self, exc)

    def pause_writing(self):
        self.can_write = False

    def resume_writing(self):
        self.can_write = True
        self.conn.writable(self)


class Queue:
    """What one side sent and the link has not delivered to the other yet."""

    def __init__(self, conn, src, dst, link):
        self.conn = conn
        self.src, self.dst, self.link = src, dst, link
        self.items = collections.deque()  # (deliver_at, bytes, EOF or RESET)
        self.size = 0
        self.timer = None
        self.eof_sent = False

    def put(self, deliver_at, data):
        self.items.append((deliver_at, data))
        if data is not EOF:
            self.size += len(data)
            if self.size > self.conn.proxy.queue_high:
                self.src.pause("queue")
        if self.timer is None and len(self.items) == 1:
            self.schedule()

    def schedule(self):
        if self.timer is not None or not self.items:
            return
        loop = self.conn.proxy.loop
        self.timer = loop.call_at(self.items[0][0], self.flush)

    def flush(self):
        self.timer = None
        dst = self.dst
        if dst.transport is None or dst.closed or not dst.can_write:
            return  # side_made / writable call flush again
        loop = self.conn.proxy.loop
        due = loop.time() + 0.001  # no sleeping for less than a millisecond
        chunks = []
        eof = False
        items = self.items
        while items and items[0][0] <= due:
            _, data = items.popleft()
            if data is EOF:
                eof = True
                break
            if data is RESET:
                if chunks:
                    dst.transport.writelines(chunks)
                self.conn.abort()
                return
            chunks.append(data)
        if chunks:
            dst.transport.writelines(chunks)
            self.size -= sum(len(c) for c in chunks)
            if self.size <= self.conn.proxy.queue_high // 2:
                self.src.unpause("queue")
        if eof:
            self.eof_sent = True
            try:
                if dst.transport.can_write_eof():
                    dst.transport.write_eof()
            except (OSError, RuntimeError):
                pass
            self.conn.maybe_done()
            if self.conn.done:
                return
        self.schedule()


class Connection:
    def __init__(self, proxy):
        self.proxy = proxy
        loop = proxy.loop
        self.accepted_at = loop.time()
        # Nothing the client sends leaves before its handshake is done.
        self.established_at = self.accepted_at + 2 * proxy.delay
        self.client = Side(self, "client")
        self.upstream = Side(self, "upstream")
        self.up = Queue(self, self.client, self.upstream, proxy.up)
        self.down = Queue(self, self.upstream, self.client, proxy.down)
        self.task = None
        self.done = False

    def side_made(self, side):
        if side is self.client:
            self.proxy.conns.add(self)
            self.task = self.proxy.loop.create_task(self.connect())
        elif self.up.timer is None:
            self.up.flush()  # what the client sent while the proxy connected

    async def connect(self):
        proxy = self.proxy
        host, port = proxy.upstream_addr
        try:
            # The handshake: one round trip before the connection is there.
            await asyncio.sleep(max(0.0, self.established_at - proxy.loop.time()))
            await proxy.loop.create_connection(lambda: self.upstream, host, port)
        except asyncio.CancelledError:
            return
        except OSError as e:
            print(f"linkproxy: cannot connect to {host}:{port}: {e}", file=sys.stderr, flush=True)
            self.abort()
            return
        if self.done and not self.upstream.transport.is_closing():
            self.upstream.transport.abort()  # the client went away meanwhile

    def received(self, side, data):
        now = self.proxy.loop.time()
        queue = self.up if side is self.client else self.down
        link = queue.link
        start = max(now, self.established_at) if side is self.client else now
        size = 0 if data is EOF else len(data)
        deliver_at = link.stamp(start, size)
        queue.put(deliver_at, data)
        if data is not EOF and link.full(now):
            link.pause(side, now)

    def writable(self, side):
        queue = self.up if side is self.upstream else self.down
        if queue.timer is None:
            queue.flush()

    def maybe_done(self):
        if self.up.eof_sent and self.down.eof_sent:
            self.close()

    def side_lost(self, side, exc):
        # Half-closes keep both sockets open (eof_received returns True) and
        # the proxy closes them itself once both directions ended, so a
        # socket lost before that was reset or failed: pass that on, quietly,
        # after what it sent before.
        if self.done:
            return
        queue = self.up if side is self.client else self.down
        if queue.dst.transport is None or queue.dst.closed:
            self.abort()
            return
        last = queue.items[-1][0] if queue.items else 0.0
        queue.items.append((max(last, self.proxy.loop.time() + self.proxy.delay), RESET))
        if len(queue.items) == 1:
            queue.schedule()

    def _finish(self, how):
        if self.done:
            return
        self.done = True
        self.proxy.conns.discard(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()
        for queue in (self.up, self.down):
            if queue.timer is not None:
                queue.timer.cancel()
                queue.timer = None
            queue.items.clear()
        for side in (self.client, self.upstream):
            self.proxy.up.forget(side)
            self.proxy.down.forget(side)
            if side.transport is not None and not side.transport.is_closing():
                if how == "abort":
                    sock = side.transport.get_extra_info("socket")
                    try:  # a reset, not a FIN
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    except (OSError, AttributeError):
                        pass
                getattr(side.transport, how)()

    def close(self):
        self._finish("close")

    def abort(self):
        self._finish("abort")


class Proxy:
    def __init__(self, loop, upstream_addr, delay, rate, queue_high=None, backlog=None):
        self.loop = loop
        self.upstream_addr = upstream_addr
        self.delay = delay
        self.rate = rate
        rtt = 2 * delay
        bdp = rate * rtt
        # Per connection and direction: at least 4 bandwidth-delay products,
        # or one stream cannot fill the link.
        self.queue_high = queue_high or max(int(8 * bdp), 4 << 20)
        # Per direction: the backlog of sending may be one round trip (one
        # BDP), like a router's buffer; at least a few ms at slow rates.
        backlog = backlog if backlog is not None else max(rtt, 0.005, 4 * 262144 / rate)
        self.up = Link(loop, "up", delay, rate, backlog)
        self.down = Link(loop, "down", delay, rate, backlog)
        self.conns = set()

    def protocol(self):
        return Connection(self).client


def parse_addr(text):
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


async def serve(args):
    loop = asyncio.get_running_loop()
    proxy = Proxy(loop, args.upstream, args.delay_ms / 1000, args.rate_mbit * 1e6 / 8)
    host, port = args.listen
    server = await loop.create_server(proxy.protocol, host, port, reuse_address=True, backlog=512)
    bound = server.sockets[0].getsockname()
    print(f"linkproxy: listening on {bound[0]}:{bound[1]}", flush=True)
    print(f"linkproxy: {args.delay_ms:g} ms each way to {args.upstream[0]}:{args.upstream[1]}, "
          f"{args.rate_mbit:g} Mbit/s each direction", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    for conn in list(proxy.conns):
        conn.abort()
    user, system = cpu_seconds()
    print(f"linkproxy: cpu {user + system:.2f} s (user {user:.2f}, system {system:.2f}), "
          f"forwarded {proxy.up.bytes} bytes up, {proxy.down.bytes} bytes down",
          file=sys.stderr, flush=True)


# --- self-test ---------------------------------------------------------------
#
# A tiny request/response server (threads, blocking sockets) in this process,
# the proxy as a child process (this file, as the benchmark runs it), and
# clients that time requests through it.
#   b"?"                       -> b"!"
#   b"G" + 8-byte length n     -> n bytes
#   b"P" + 8-byte length n + n bytes -> b"K"


def recv_exact(sock, n, buf=None):
    view = memoryview(buf or bytearray(min(n, 1 << 20)))
    left = n
    while left:
        got = sock.recv_into(view[:min(left, len(view))])
        if not got:
            raise ConnectionError(f"connection closed with {left} of {n} bytes missing")
        left -= got
    return bytes(view[:n]) if n <= 16 else None


class TestServer:
    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self.sock.getsockname()[1]
        self.blob = memoryview(bytes(8 << 20))
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray(1 << 20)
        with conn:
            try:
                while True:
                    op = conn.recv(1)
                    if not op:
                        return
                    if op == b"?":
                        conn.sendall(b"!")
                    elif op == b"G":
                        n = int.from_bytes(recv_exact(conn, 8), "big")
                        while n:
                            part = self.blob[:min(n, len(self.blob))]
                            conn.sendall(part)
                            n -= len(part)
                    elif op == b"P":
                        n = int.from_bytes(recv_exact(conn, 8), "big")
                        recv_exact(conn, n, buf)
                        conn.sendall(b"K")
                    else:
                        return
            except OSError:
                return


def client(port):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def ping(sock):
    t0 = time.perf_counter()
    sock.sendall(b"?")
    if sock.recv(1) != b"!":
        raise ConnectionError("bad answer to ping")
    return time.perf_counter() - t0


def get(sock, n, buf=None):
    t0 = time.perf_counter()
    sock.sendall(b"G" + n.to_bytes(8, "big"))
    recv_exact(sock, n, buf)
    return time.perf_counter() - t0


def put(sock, n):
    blob = memoryview(bytes(min(n, 8 << 20)))
    t0 = time.perf_counter()
    sock.sendall(b"P" + n.to_bytes(8, "big"))
    left = n
    while left:
        part = blob[:min(left, len(blob))]
        sock.sendall(part)
        left -= len(part)
    if sock.recv(1) != b"K":
        raise ConnectionError("bad answer to put")
    return time.perf_counter() - t0


def selftest(args):
    delay = args.delay_ms / 1000
    rtt = 2 * delay
    rate = args.rate_mbit * 1e6 / 8
    size = int(200e6 * min(1.0, args.rate_mbit / 1000))
    server = TestServer()
    program = [args.proxy] if args.proxy else [sys.executable, os.path.abspath(__file__)]
    proxy = subprocess.Popen(
        program + ["--listen", "127.0.0.1:0",
         "--upstream", f"127.0.0.1:{server.port}", "--delay-ms", str(args.delay_ms),
         "--rate-mbit", str(args.rate_mbit)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    failures = []

    def check(name, ok, text):
        print(f"  {'ok  ' if ok else 'FAIL'} {name}: {text}", flush=True)
        if not ok:
            failures.append(name)

    try:
        line = proxy.stdout.readline()
        if not line.startswith("linkproxy: listening on "):
            raise SystemExit(f"linkproxy: selftest: the proxy did not start: {line!r} "
                             f"{proxy.stderr.read() if proxy.poll() is not None else ''}")
        port = int(line.rsplit(":", 1)[1])
        print(f"linkproxy selftest: {args.delay_ms:g} ms each way (RTT {rtt * 1000:g} ms), "
              f"{args.rate_mbit:g} Mbit/s; proxy pid {proxy.pid} on :{port}", flush=True)

        # (a) a 1-byte request and its 1-byte answer: one round trip.
        t0 = time.perf_counter()
        sock = client(port)
        ping(sock)
        first = time.perf_counter() - t0
        pings = [ping(sock) for _ in range(9)]
        p = statistics.median(pings)
        check("a. 1-byte request/response", rtt <= p < rtt + max(rtt, 0.005),
              f"median {p * 1000:.1f} ms (min {min(pings) * 1000:.1f}, max {max(pings) * 1000:.1f}); "
              f"expected {rtt * 1000:g}-{(rtt + max(rtt, 0.005)) * 1000:g} ms; "
              f"first one on a new connection {first * 1000:.1f} ms (handshake + request, about 2 RTT)")

        # (b) one large transfer each way on that connection: size / rate + RTT.
        buf = bytearray(1 << 20)
        want = size / rate + rtt
        t = get(sock, size, buf)
        check("b. one download", abs(t / want - 1) <= 0.15,
              f"{size / 1e6:.0f} MB in {t:.3f} s = {size * 8 / t / 1e6:.0f} Mbit/s; "
              f"expected {want:.3f} s, off by {100 * (t / want - 1):+.1f} %")
        t = put(sock, size)
        check("b. one upload", abs(t / want - 1) <= 0.15,
              f"{size / 1e6:.0f} MB in {t:.3f} s = {size * 8 / t / 1e6:.0f} Mbit/s; "
              f"expected {want:.3f} s, off by {100 * (t / want - 1):+.1f} %")
        sock.close()

        # (c) 32 connections at once share the link and together fill it.
        n = 32
        each = int(size * 1.6) // n
        times = [0.0] * n
        errors = []

        def one(i):
            try:
                s = client(port)
                get(s, each, bytearray(1 << 18))
                times[i] = time.perf_counter() - t0
                s.close()
            except OSError as e:
                errors.append(e)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        t0 = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        if errors:
            check("c. 32 connections", False, f"errors: {errors[:3]}")
        else:
            total = max(times)
            got = n * each / total
            check("c. 32 connections", got >= 0.85 * rate,
                  f"{n} x {each / 1e6:.1f} MB in {total:.3f} s = {got * 8 / 1e6:.0f} Mbit/s together, "
                  f"{got / rate:.2f} of the rate (at least 0.85); "
                  f"first done after {min(times):.3f} s")
    finally:
        if proxy.poll() is None:
            proxy.send_signal(signal.SIGTERM)
        try:
            _, err = proxy.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proxy.kill()
            _, err = proxy.communicate()
        for line in err.splitlines():
            if line.startswith("linkproxy: cpu"):
                print(f"  proxy: {line[len('linkproxy: '):]}")
        if proxy.returncode != 0:
            print(f"  FAIL the proxy exited with {proxy.returncode}: {err.strip()}")
            failures.append("exit")
    if failures:
        print(f"linkproxy selftest: {len(failures)} failed: {', '.join(failures)}")
        return 1
    print("linkproxy selftest: all passed")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=parse_addr, help="HOST:PORT to listen on (port 0: any)")
    parser.add_argument("--upstream", type=parse_addr, help="HOST:PORT of the server behind the link")
    parser.add_argument("--delay-ms", type=float, default=10.0, help="one-way delay (default 10)")
    parser.add_argument("--rate-mbit", type=float, default=1000.0,
                        help="rate of each direction in Mbit/s, shared by all connections (default 1000)")
    parser.add_argument("--selftest", action="store_true",
                        help="check latency and rate through a proxy to a server in this process")
    parser.add_argument("--proxy", metavar="PROGRAM",
                        help="with --selftest: check this proxy (same options, e.g. "
                             "target/release/examples/linkproxy) instead of this script's")
    args = parser.parse_args()
    if args.delay_ms < 0 or args.rate_mbit <= 0:
        parser.error("--delay-ms must be 0 or more and --rate-mbit more than 0")
    if args.selftest:
        sys.exit(selftest(args))
    if not args.listen or not args.upstream:
        parser.error("--listen and --upstream are needed (or --selftest)")
    try:
        asyncio.run(serve(args))
    except OSError as e:
        print(f"linkproxy: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
