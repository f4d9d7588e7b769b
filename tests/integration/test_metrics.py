#!/usr/bin/env python3
"""Operations endpoints and backpressure against the real binary: /metrics in the Prometheus
text format (counters move with real MLLP and HTTP traffic), /healthz and /readyz, and a flood
of MLLP and HTTP writes while the writer is slowed down by its own batch delay: HTTP writes get
503 with Retry-After, MLLP reading pauses, the server's memory stays bounded and nothing
acknowledged is lost. TAP on stdout."""

import http.client
import json
import os
import re
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Server, Tap, adt, frame, free_port  # noqa: E402

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*"'
                    r'(,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*")*)?\})? (-?[0-9.e+-]+|\+Inf|NaN)$')


def get(port, path, method="GET", body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    c.close()
    return r.status, hdrs, data


def parse_metrics(text):
    """{(name, frozenset(labels)): value}, and the problems found with the format."""
    samples, types, problems = {}, {}, []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
            continue
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        if not m:
            problems.append("bad sample line: %r" % line)
            continue
        labels = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"', m.group(3) or ""))
        samples[(m.group(1), labels)] = float(m.group(5))
        base = re.sub(r"_(bucket|sum|count)$", "", m.group(1))
        if m.group(1) not in types and base not in types:
            problems.append("sample without a TYPE line: %s" % m.group(1))
    return samples, types, problems


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def check_histogram(t, samples, name, labels=()):
    """Buckets cumulative, +Inf equal to _count."""
    lab = dict(labels)
    buckets = sorted(((float(dict(k[1])["le"]) if dict(k[1])["le"] != "+Inf" else float("inf")), v)
                     for k, v in samples.items()
                     if k[0] == name + "_bucket" and {x for x in k[1] if x[0] != "le"} ==
                     set(lab.items()))
    vals = [v for _, v in buckets]
    t.ok(len(buckets) > 1 and vals == sorted(vals), "%s%s: buckets are cumulative" % (name, lab),
         buckets)
    t.eq(vals[-1] if vals else None, value(samples, name + "_count", **lab),
         "%s%s: +Inf bucket equals _count" % (name, lab))
    return value(samples, name + "_count", **lab)


def t_metrics(t):
    http_port = free_port()
    with Server("http.listen=127.0.0.1:%d" % http_port) as srv:
        st, h, body = get(http_port, "/healthz")
        doc = json.loads(body)
        t.eq((st, doc["status"], h.get("content-type")), (200, "pass", "application/health+json"),
             "healthz: 200 pass")
        st, h, body = get(http_port, "/readyz")
        doc = json.loads(body)
        t.eq((st, doc["status"]), (200, "pass"), "readyz: 200 pass")
        t.ok({"writer:queue", "store:read", "server:draining", "store:commit"} <=
             set(doc["checks"]), "readyz lists its checks", doc)
        st, h, _ = get(http_port, "/metrics", method="POST", body=b"x")
        t.eq((st, h.get("allow")), (405, "GET, HEAD"), "POST /metrics: 405 with Allow")

        c = srv.client()
        acks = [c.roundtrip(adt("M1")).code, c.roundtrip(adt("M2", pid_name="ROE^RITA")).code,
                c.roundtrip(b"MSH|^~\\&|A|B|C|D|20250101||ADT^A01|M3|P|2.5\rPID|bad").code]
        c.close()
        t.eq(acks[:2], ["AA", "AA"], "two ADTs accepted")
        get(http_port, "/fhir/Patient/does-not-exist")
        get(http_port, "/fhir/Patient?gender=male")
        get(http_port, "/fhir/metadata")

        st, h, body = get(http_port, "/metrics")
        t.eq(st, 200, "metrics: 200")
        t.ok(h.get("content-type", "").startswith("text/plain; version=0.0.4"),
             "metrics: Prometheus text content type", h)
        samples, types, problems = parse_metrics(body.decode())
        t.eq(problems, [], "metrics: every line is a valid sample with a TYPE")
        t.eq(value(samples, "fhirgate_mllp_messages_received_total"), 3.0, "3 messages received")
        t.eq(value(samples, "fhirgate_mllp_acks_total", code="AA"), 2.0, "2 AA")
        t.eq(value(samples, "fhirgate_mllp_acks_total", code=acks[2]), 1.0,
             "1 %s for the malformed one" % acks[2])
        t.eq(value(samples, "fhirgate_dead_letters"), 1.0, "dead letters gauge: 1")
        t.ok((value(samples, "fhirgate_store_resources") or 0) >= 2,
             "store resources gauge counts the mapped resources")
        t.eq(value(samples, "fhirgate_http_requests_total", route="read", status="404"), 1.0,
             "http: one read answered 404")
        t.eq(value(samples, "fhirgate_http_requests_total", route="search", status="200"), 1.0,
             "http: one search answered 200")
        t.eq(value(samples, "fhirgate_http_requests_total", route="metadata", status="200"), 1.0,
             "http: metadata counted")
        # Earlier connections are closed by the client; the server may see that a moment later.
        open_now = value(samples, "fhirgate_connections_open", protocol="http")
        deadline = time.time() + 5
        while open_now != 1.0 and time.time() < deadline:
            time.sleep(0.05)
            open_now = value(parse_metrics(get(http_port, "/metrics")[2].decode())[0],
                             "fhirgate_connections_open", protocol="http")
        t.eq(open_now, 1.0, "http connections open: this one")
        t.eq(check_histogram(t, samples, "fhirgate_conversion_seconds"), 3.0,
             "conversion histogram: one sample per message")
        t.ok((check_histogram(t, samples, "fhirgate_commit_seconds") or 0) >= 1,
             "commit histogram has samples")
        check_histogram(t, samples, "fhirgate_http_request_seconds", {"route": "read"})
        t.eq(types.get("fhirgate_mllp_acks_total"), "counter", "acks is a counter")
        t.eq(types.get("fhirgate_store_used_bytes"), "gauge", "store size is a gauge")
        t.ok(b"DOE" not in body and b"12345" not in body, "no patient data in /metrics")


def rss_kib(pid):
    """Anonymous resident memory: the heap and stacks, not the store's mapped file pages."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def sanitized(pid):
    """True when the server runs under AddressSanitizer (its heap figures mean nothing)."""
    with open("/proc/%d/maps" % pid) as f:
        return "libasan" in f.read()


def t_backpressure(t):
    """The writer waits up to 20 ms per batch and queues at most 16 jobs: a flood fills it."""
    http_port = free_port()
    with Server("http.listen=127.0.0.1:%d" % http_port, "writer.queue_max=16",
                "writer.batch_max_delay=20ms", "writer.batch_max_messages=100000",
                "http.max_inflight=64") as srv:
        base_rss = rss_kib(srv.proc.pid)
        n_mllp, n_http_threads, per_thread = 3000, 8, 40
        peak = [base_rss]
        stop = threading.Event()

        def sample_rss():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_kib(srv.proc.pid))
                time.sleep(0.05)

        # MLLP: one connection writes every frame without waiting for ACKs.
        acks = []

        def mllp_flood():
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.settimeout(60)
            data = b"".join(frame(adt("F%05d" % i, pid_name="P%05d^X" % i))
                            for i in range(n_mllp))
            reader_buf = bytearray()

            def reader():
                while len(acks) < n_mllp:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    reader_buf.extend(chunk)
                    while b"\x1c\r" in reader_buf:
                        i = reader_buf.index(b"\x1c\r")
                        acks.append(bytes(reader_buf[:i]))
                        del reader_buf[:i + 2]
            rt = threading.Thread(target=reader)
            rt.start()
            s.sendall(data)
            rt.join(60)
            s.close()

        statuses, created, retry_after = [], [], set()
        lock = threading.Lock()

        def http_flood(k):
            c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=60)
            for i in range(per_thread):
                body = json.dumps({"resourceType": "Patient",
                                   "name": [{"family": "Flood%d" % k, "given": ["G%d" % i]}]})
                c.request("POST", "/fhir/Patient", body=body,
                          headers={"Content-Type": "application/fhir+json"})
                r = c.getresponse()
                data = r.read()
                with lock:
                    statuses.append(r.status)
                    if r.status == 201:
                        created.append(r.getheader("Location"))
                    elif r.status == 503:
                        retry_after.add(r.getheader("Retry-After"))
                        doc = json.loads(data)
                        if doc.get("resourceType") != "OperationOutcome":
                            retry_after.add("not an OperationOutcome")
            c.close()

        sampler = threading.Thread(target=sample_rss)
        sampler.start()
        threads = [threading.Thread(target=mllp_flood)] + [
            threading.Thread(target=http_flood, args=(k,)) for k in range(n_http_threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        stop.set()
        sampler.join()

        t.eq(len(acks), n_mllp, "MLLP flood: every message got an ACK")
        t.ok(all(b"MSA|AA|" in a for a in acks), "MLLP flood: all AA (reading paused, "
             "nothing refused)", [a for a in acks if b"MSA|AA|" not in a][:3])
        t.eq(sorted(set(statuses) - {201, 503}), [], "HTTP flood: only 201 and 503")
        t.ok(503 in statuses, "HTTP flood: writes refused with 503 while the queue is full",
             "statuses: %d x 201, %d x 503" % (statuses.count(201), statuses.count(503)))
        t.eq(retry_after, {"1"}, "503s carry Retry-After: 1 and an OperationOutcome")
        grown = peak[0] - base_rss
        if sanitized(srv.proc.pid):
            t.ok(True, "server heap bounded # SKIP AddressSanitizer keeps freed memory in "
                 "quarantine (grew %d KiB)" % grown)
        else:
            t.ok(grown < 32 * 1024,
                 "server heap grew by %d KiB during the flood (< 32 MiB)" % grown)
        # Nothing acknowledged is lost: every AA'd message and every 201 is in the store.
        ids = {row[2] for row in srv.stored_control_ids()}
        t.ok(all("F%05d" % i in ids for i in range(n_mllp)), "every AA'd message is stored")
        missing = [loc for loc in created
                   if get(http_port, "/fhir/" + loc.split("/fhir/", 1)[1])[0] != 200]
        t.eq(missing, [], "every 201 Created is readable")


def t_syslog(t):
    """log.output=syslog: nothing on stderr (the system logger, if any, gets the lines)."""
    with Server("log.output=syslog") as srv:
        c = srv.client()
        t.eq(c.roundtrip(adt("S1")).code, "AA", "syslog output: server works")
        c.close()
        t.eq(srv.stop(), 0, "syslog output: clean stop")
        t.ok("level=" not in srv.read_log(), "syslog output: no log lines on stderr",
             srv.read_log())


def main():
    t = Tap()
    t.run(t_metrics)
    t.run(t_syslog)
    t.run(t_backpressure)
    t.done()


if __name__ == "__main__":
    main()
