#!/usr/bin/env python3
"""The HTTP/1.1 module over real sockets, through tests/unit/http_test_server: keep-alive,
pipelining with asynchronous answers, limits, timeouts, gzip, HEAD, many connections, clients that
leave early. Python 3 standard library only; TAP output."""

import gzip
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap  # noqa: E402

SERVER = os.path.join(os.environ.get("top_builddir", "."), "tests", "unit", "http_test_server")
TEXT = b"The quick brown fox jumps over the lazy dog. "


def big_text(n):
    return (TEXT * (n // len(TEXT) + 1))[:n]


class TestServer:
    """http_test_server with options; the port comes from its first line of output."""

    def __init__(self, **opts):
        args = [SERVER]
        for k, v in opts.items():
            args += ["--" + k.replace("_", "-"), str(v)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("port "):
            self.proc.kill()
            raise RuntimeError("http_test_server did not start: %r %r" % (
                line, self.proc.stderr.read().decode("utf-8", "replace")))
        self.port = int(line.split()[1])

    def conn(self, timeout=10.0):
        return Conn(self.port, timeout)

    def stats(self):
        c = self.conn()
        r = c.request("GET", "/stats")
        c.close()
        return json.loads(r.body)

    def stop(self):
        """SIGTERM; returns (exit code, stderr)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err.decode("utf-8", "replace")


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # [(lower-case name, value)]
        self.body = body

    def header(self, name):
        vals = [v for n, v in self.headers if n == name]
        return ", ".join(vals) if vals else None

    def json(self):
        return json.loads(self.body.decode("latin-1"))

    def __repr__(self):
        return "Response(%r, %r, %r)" % (self.status, self.headers, self.body[:200])


class Conn:
    """A blocking HTTP/1.1 client that reads responses by their Content-Length."""

    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def read_head(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = [(n.strip().lower(), v.strip()) for n, v in
                   (line.split(":", 1) for line in lines[1:])]
        return lines[0], status, headers

    def read_response(self, head=False):
        _, status, headers = self.read_head()
        n = 0 if head else int(dict(headers).get("content-length", "0"))
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return Response(status, headers, body)

    def request(self, method, path, headers=None, body=b"", version="1.1"):
        self.send(build(method, path, headers, body, version))
        return self.read_response(head=method == "HEAD")

    def is_closed(self, timeout=5.0):
        """True when the server closes (EOF or reset) within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except socket.timeout:
            return False
        except OSError:
            return True

    def close(self):
        self.sock.close()


def build(method, path, headers=None, body=b"", version="1.1"):
    h = [("Host", "test")] if version == "1.1" else []
    h += list((headers or {}).items())
    if body and not any(n.lower() in ("content-length", "transfer-encoding") for n, _ in h):
        h.append(("Content-Length", str(len(body))))
    head = "%s %s HTTP/%s\r\n" % (method, path, version)
    head += "".join("%s: %s\r\n" % (n, v) for n, v in h) + "\r\n"
    return head.encode("latin-1") + body


def test_keep_alive(t, srv):
    c = srv.conn()
    paths = []
    for i in range(5):
        r = c.request("GET", "/fhir/Patient/%d?_format=json" % i)
        paths.append(r.json()["path"] if r.status == 200 else r.status)
    t.eq(paths, ["/fhir/Patient/%d" % i for i in range(5)], "keep-alive: five requests, one socket")
    r = c.request("GET", "/q?name=J%C3%BCrgen+M&name=x%2By&empty&a=b=c")
    t.eq(r.json()["params"], [["name", "J\u00c3\u00bcrgen M"], ["name", "x+y"], ["empty", ""],
                              ["a", "b=c"]], "query pairs decoded in order, repeats kept")
    r = c.request("GET", "/q?bad=%zz")
    t.eq(r.json()["query_ok"], False, "a bad escape in the query is reported")
    t.ok(r.header("date") is not None and r.header("date").endswith(" GMT"), "Date header")
    t.eq(r.header("connection"), None, "no Connection header while keeping alive")
    c.close()


def test_pipelining(t, srv):
    c = srv.conn()
    paths = ["/slow/400", "/fast1", "/slow/150", "/fast2", "/slow/10", "/fast3"]
    c.send(b"".join(build("GET", p) for p in paths))
    got = [c.read_response().json()["path"] for _ in paths]
    t.eq(got, paths, "pipelined requests answered in order although later ones finish first")
    # More than max_inflight (16) in flight: reading pauses, then resumes.
    n = 60
    c.send(b"".join(build("POST", "/slow/%d" % (i % 3 * 20), body=b"%d" % i) for i in range(n)))
    got = [c.read_response().json()["body"] for _ in range(n)]
    t.eq(got, ["%d" % i for i in range(n)], "60 pipelined slow requests, in order")
    c.close()


def test_connection_close(t, srv):
    c = srv.conn()
    c.send(build("GET", "/a", {"Connection": "close"}) + build("GET", "/never"))
    r = c.read_response()
    t.eq((r.status, r.header("connection")), (200, "close"), "Connection: close is answered so")
    t.ok(c.is_closed(), "then the server closes, ignoring what followed")
    t.ok(b"never" not in c.buf, "the request after Connection: close is not answered")
    c.close()


def test_http10(t, srv):
    c = srv.conn()
    r = c.request("GET", "/old", version="1.0")
    t.eq((r.status, r.json()["version"], r.header("connection")), (200, 10, "close"),
         "HTTP/1.0 without keep-alive: answered, Connection: close")
    t.ok(c.is_closed(), "HTTP/1.0 connection closed after the response")
    c.close()
    c = srv.conn()
    r1 = c.request("GET", "/one", {"Connection": "keep-alive"}, version="1.0")
    r2 = c.request("GET", "/two", version="1.0")
    t.eq((r1.header("connection"), r2.header("connection"), r2.json()["path"]),
         ("keep-alive", "close", "/two"), "HTTP/1.0 keep-alive keeps the connection open")
    c.close()


def test_chunked(t, srv):
    c = srv.conn()
    body = b"5;ext=1\r\nhello\r\n1\r\n,\r\nA\r\n chunked!!\r\n0\r\nX-Trailer: t\r\n\r\n"
    c.send(build("POST", "/chunked", {"Transfer-Encoding": "chunked"}))
    for i in range(0, len(body), 7):
        c.send(body[i:i + 7])
        time.sleep(0.01)
    r = c.read_response()
    t.eq((r.status, r.json()["body"]), (200, "hello, chunked!!"), "chunked request body")
    r = c.request("GET", "/after")
    t.eq(r.json()["path"], "/after", "the connection goes on after a chunked body")
    c.close()


def test_expect_continue(t, srv):
    c = srv.conn()
    c.send(build("PUT", "/x", {"Expect": "100-continue", "Content-Length": "4"}))
    c.sock.settimeout(5)
    first, status, _ = c.read_head()
    t.eq(first, "HTTP/1.1 100 Continue", "100 Continue before the body is sent")
    c.send(b"data")
    r = c.read_response()
    t.eq((r.status, r.json()["body"]), (200, "data"), "then the final response")
    c.close()
    # Too large: refused at once, without 100 Continue.
    c = srv.conn()
    c.send(build("PUT", "/x", {"Expect": "100-continue", "Content-Length": "100000"}))
    r = c.read_response()
    t.eq((r.status, r.header("connection")), (413, "close"), "too large with Expect: 413, no 100")
    c.close()


def test_too_large(t, srv):
    c = srv.conn()
    c.send(build("POST", "/big", body=b"x" * 70000))
    r = c.read_response()
    t.eq((r.status, r.header("connection")), (413, "close"), "body over max_body: 413")
    t.ok(r.body.startswith(b"413 "), "with a small plain-text body", r.body)
    t.ok(c.is_closed(), "and the connection closes (without losing the response to RST)")
    c.close()
    c = srv.conn()
    c.send(build("GET", "/h", {"X-Big": "y" * 5000}))
    r = c.read_response()
    t.eq(r.status, 431, "header over max_header_bytes: 431")
    c.close()
    c = srv.conn()
    c.send(build("GET", "/" + "u" * 3000))
    r = c.read_response()
    t.eq(r.status, 414, "request line over max_request_line: 414")
    c.close()
    c = srv.conn()
    c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"0\r\n\r\n")
    r = c.read_response()
    t.eq(r.status, 400, "Content-Length with Transfer-Encoding: 400")
    c.close()
    c = srv.conn()
    c.send(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n")
    t.eq(c.read_response().status, 505, "HTTP/2.0 request line: 505")
    c.close()


def test_slowloris(t, srv):
    c = srv.conn()
    start = time.time()
    c.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n")
    closed = False
    try:
        for i in range(40):  # 8 s of trickling, far past the 1 s header timeout
            if select.select([c.sock], [], [], 0.2)[0]:
                chunk = c.sock.recv(65536)
                c.buf += chunk
                if not chunk:
                    closed = True
                    break
            c.send(b"X-%d: y\r\n" % i)
    except OSError:
        closed = True
    elapsed = time.time() - start
    t.ok(closed and elapsed < 4, "a header trickled slowly is cut off at the header timeout",
         "closed=%r after %.1fs" % (closed, elapsed))
    t.ok(c.buf.startswith(b"HTTP/1.1 408 "), "with 408 when the client still reads", c.buf[:80])
    c.close()
    # The body timeout.
    c = srv.conn()
    start = time.time()
    c.send(build("POST", "/b", {"Content-Length": "10"}) + b"abc")
    r = c.read_response()
    t.ok(r.status == 408 and time.time() - start < 4, "a body that stops coming: 408",
         "%r after %.1fs" % (r, time.time() - start))
    c.close()


def test_idle_timeout(t, srv):
    c = srv.conn()
    c.request("GET", "/one")
    start = time.time()
    time.sleep(0.5)
    c.request("GET", "/two")  # activity restarts the idle timer
    closed = c.is_closed(5)
    elapsed = time.time() - start
    t.ok(closed and 1.0 <= elapsed < 3.5, "idle connection closed after the idle timeout",
         "closed=%r after %.1fs" % (closed, elapsed))
    c.close()


def test_write_timeout(t, srv):
    # A client that sends requests for large responses and never reads them: parsing pauses
    # (the output is capped), and the write timeout drops the connection.
    before = srv.stats()["requests"]
    polls = 0
    c = srv.conn()
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.send(b"".join(build("GET", "/big/2000000") for _ in range(20)))
    deadline = time.time() + 8
    while True:
        time.sleep(0.2)
        st = srv.stats()
        polls += 1
        if st["open"] == 1 or time.time() > deadline:
            break
    handled = st["requests"] - before - polls
    t.eq(st["open"], 1, "a client that does not read is dropped after the write timeout")
    t.ok(handled < 5, "and its requests were not all read meanwhile", "handled %d" % handled)
    c.close()


def test_gzip(t, srv):
    c = srv.conn()
    r = c.request("GET", "/big/5000", {"Accept-Encoding": "deflate, gzip;q=0.8"})
    t.eq((r.header("content-encoding"), r.header("vary")), ("gzip", "Accept-Encoding"),
         "gzip when the client accepts it")
    t.ok(len(r.body) < 5000 and gzip.decompress(r.body) == big_text(5000),
         "gzip body decompresses to the original")
    r = c.request("GET", "/big/5000", {"Accept-Encoding": "gzip;q=0, br"})
    t.eq((r.header("content-encoding"), r.header("vary"), r.body), (None, "Accept-Encoding",
                                                                    big_text(5000)),
         "no gzip with gzip;q=0 (Vary all the same)")
    r = c.request("GET", "/big/5000")
    t.eq((r.header("content-encoding"), len(r.body)), (None, 5000), "no gzip without Accept-Encoding")
    r = c.request("GET", "/big/500", {"Accept-Encoding": "gzip"})
    t.eq((r.header("content-encoding"), r.header("vary"), len(r.body)), (None, None, 500),
         "no gzip for a small body")
    c.close()


def test_head(t, srv):
    c = srv.conn()
    r = c.request("HEAD", "/big/5000")
    t.eq((r.status, r.header("content-length"), r.body), (200, "5000", b""),
         "HEAD: the GET's Content-Length, no body")
    r = c.request("GET", "/after-head")
    t.eq(r.json()["path"], "/after-head", "the next response follows the HEAD response directly")
    r = c.request("GET", "/empty")
    t.eq((r.status, r.header("content-length")), (204, None), "204 without Content-Length")
    c.close()


def test_many_connections(t, srv):
    n, per = 200, 3
    errors = []
    socks = []
    barrier = threading.Barrier(n)

    def client(i):
        try:
            c = srv.conn(timeout=20)
            socks.append(c)
            barrier.wait(20)
            for k in range(per):
                body = b"conn %d request %d" % (i, k)
                r = c.request("POST", "/c/%d/%d" % (i, k), body=body)
                if r.status != 200 or r.json()["body"] != body.decode():
                    errors.append((i, k, r))
        except Exception as e:  # noqa: BLE001 - collected and reported
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    for c in socks:
        c.close()
    t.ok(not errors, "%d concurrent connections x %d requests" % (n, per), errors[:5])


def test_early_close(t, srv):
    # Clients that send requests (some held by the handler) and leave, politely or with RST.
    for i in range(20):
        c = srv.conn()
        c.send(build("GET", "/slow/200") + build("POST", "/x", body=b"y" * 1000) +
               build("GET", "/slow/50") + b"GET /partial HTTP/1.1\r\nHo")
        if i % 2:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
    c = srv.conn()
    c.send(build("POST", "/x", body=b"z" * 100000)[:5000])
    c.close()
    time.sleep(0.8)
    deadline = time.time() + 5
    while True:
        st = srv.stats()
        if (st["open"] == 1 and st["held"] == 0) or time.time() > deadline:
            break
        time.sleep(0.2)
    t.eq((st["open"], st["held"]), (1, 0),
         "clients that left early: their connections are gone, the server still answers")


def main():
    t = Tap()
    if not os.path.exists(SERVER):
        print("1..0 # SKIP %s not built" % SERVER)
        return
    srv = TestServer(max_body=65536, max_header_bytes=4096, max_request_line=2048,
                     header_ms=1000, body_ms=1000, idle_ms=1500, write_ms=1500)
    for fn in (test_keep_alive, test_pipelining, test_connection_close, test_http10,
               test_chunked, test_expect_continue, test_too_large, test_slowloris,
               test_idle_timeout, test_write_timeout, test_gzip, test_head, test_many_connections,
               test_early_close):
        t.run(fn, srv)
    rc, err = srv.stop()
    t.eq(rc, 0, "the server exits cleanly on SIGTERM")
    t.ok("Sanitizer" not in err and "runtime error" not in err, "no sanitizer report", err[-3000:])
    t.done()


if __name__ == "__main__":
    main()
