#!/usr/bin/env python3
"""Crash safety: kill -9 the server mid-stream; every message that got AA must be in the store
exactly once after a restart, each stored message with its AuditEvent (same transaction), and
resending the un-ACKed ones stores each of them once."""

import http.client
import json
import threading
import time
import urllib.parse

from harness import SB, EB, CR, Server, Tap, adt, frame, free_port


def sender(port, prefix, n, acked, sent, stop):
    """Pipelines n messages on one connection (up to 32 in flight), records the AA'd ids."""
    import socket
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        return
    s.settimeout(5)
    buf = b""
    next_i = 0
    inflight = 0
    try:
        while (next_i < n or inflight > 0) and not stop.is_set():
            while next_i < n and inflight < 32:
                cid = "%s-%05d" % (prefix, next_i)
                s.sendall(frame(adt(cid)))
                sent.append(cid)
                next_i += 1
                inflight += 1
            chunk = s.recv(65536)
            if not chunk:
                return
            buf += chunk
            while True:
                a = buf.find(SB)
                b = buf.find(EB + CR)
                if a < 0 or b < 0:
                    break
                ack = buf[a + 1:b].split(b"\r")
                buf = buf[b + 2:]
                msa = [seg for seg in ack if seg.startswith(b"MSA|")][0].split(b"|")
                if msa[1] == b"AA":
                    acked.append(msa[2].decode())
                inflight -= 1
    except OSError:
        return
    finally:
        s.close()


def audit_message_seqs(port):
    """The message sequences the message AuditEvents name (following next links)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    path = "/fhir/AuditEvent?type=110107&_count=1000"
    seqs = set()
    for _ in range(100):
        c.request("GET", path, headers={"Accept": "application/fhir+json"})
        doc = json.loads(c.getresponse().read())
        for e in doc.get("entry", []):
            ent = e["resource"]["entity"][0]
            seqs.add(int(ent["what"]["identifier"]["value"]))
        nxt = [ln["url"] for ln in doc.get("link", []) if ln["relation"] == "next"]
        if not nxt:
            break
        u = urllib.parse.urlsplit(nxt[0])
        path = u.path + "?" + u.query
    c.close()
    return seqs


def main():
    t = Tap()
    hport = free_port()
    srv = Server("http.listen=127.0.0.1:%d" % hport, threads=2)
    srv.start()
    try:
        conns, per = 6, 1500
        acked, sent = [], []
        stop = threading.Event()
        threads = [threading.Thread(target=sender,
                                    args=(srv.port, "K%d" % k, per, acked, sent, stop))
                   for k in range(conns)]
        for th in threads:
            th.start()
        # Kill once a good share has been ACKed, while the senders are still going.
        deadline = time.time() + 60
        while len(acked) < conns * per // 3 and time.time() < deadline:
            time.sleep(0.005)
        srv.kill9()
        stop.set()
        for th in threads:
            th.join(30)
        t.ok(0 < len(acked) < conns * per, "killed mid-stream (%d of %d ACKed)" %
             (len(acked), conns * per))

        srv.start()
        stored = [r[2] for r in srv.stored_control_ids()]
        counts = {}
        for cid in stored:
            counts[cid] = counts.get(cid, 0) + 1
        missing = [cid for cid in acked if counts.get(cid, 0) == 0]
        dupes = [cid for cid, n in counts.items() if n > 1]
        t.ok(not missing, "every AA'd message is in the store after kill -9",
             "missing %d, e.g. %s" % (len(missing), missing[:5]))
        t.ok(not dupes, "no message is stored twice", repr(dupes[:5]))
        # The message and its AuditEvent share a transaction: after the crash every stored
        # message has its event and no event names a message that is not there.
        seqs = set(r[0] for r in srv.stored_control_ids())
        named = audit_message_seqs(hport)
        t.ok(named == seqs, "every stored message has its AuditEvent, and only those",
             "stored %d, named %d, without event %r, event without message %r" % (
                 len(seqs), len(named), sorted(seqs - named)[:5], sorted(named - seqs)[:5]))

        # Resend everything that did not get an AA (some may have been committed already).
        acked_set = set(acked)
        resend = [cid for cid in sent if cid not in acked_set]
        c = srv.client(timeout=30)
        for i in range(0, len(resend), 200):
            chunk = resend[i:i + 200]
            c.send_raw(b"".join(frame(adt(cid)) for cid in chunk))
            for _ in chunk:
                a = c.recv_ack()
                if a is None or a.code != "AA":
                    t.ok(False, "resend got %r" % (a,))
                    break
        c.close()
        stored = [r[2] for r in srv.stored_control_ids()]
        counts = {}
        for cid in stored:
            counts[cid] = counts.get(cid, 0) + 1
        t.ok(all(counts.get(cid) == 1 for cid in sent),
             "after resending the un-ACKed ones, every sent message is stored exactly once",
             "not once: %r" % [cid for cid in sent if counts.get(cid) != 1][:5])
        t.eq(srv.stop(), 0, "restarted server drains and exits 0")
        rc, out, err = srv.fhirgate("store", "verify")
        t.ok(rc == 0, "store verify finds no problem after the crash", out + err)
    finally:
        srv.cleanup()
    t.done()


if __name__ == "__main__":
    main()
