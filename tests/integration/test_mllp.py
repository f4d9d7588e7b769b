#!/usr/bin/env python3
"""MLLP listener against the real binary: framing, ACK rules, dedupe, dead letters, drain."""

import os
import signal
import socket
import subprocess
import threading
import time

from harness import DATA, FHIRGATE, Server, Tap, adt, frame, hl7


def test_basic_ack(t, srv):
    c = srv.client()
    ack = c.roundtrip(adt("BASIC1"))
    c.close()
    t.eq(ack.code, "AA", "AA for a valid message")
    t.eq(ack.control_id, "BASIC1", "MSA-2 is the message's MSH-10")
    t.eq(ack.field("MSH", 3), "RECVAPP", "ACK MSH-3 mirrors MSH-5")
    t.eq(ack.field("MSH", 4), "RECVFAC", "ACK MSH-4 mirrors MSH-6")
    t.eq(ack.field("MSH", 5), "SENDAPP", "ACK MSH-5 mirrors MSH-3")
    t.eq(ack.field("MSH", 6), "SENDFAC", "ACK MSH-6 mirrors MSH-4")
    t.eq(ack.field("MSH", 12), "2.5", "ACK has the message's version")
    t.eq(ack.field("MSH", 9).split("^")[0], "ACK", "ACK MSH-9 is ACK")
    t.ok(ack.seg("ERR") is None, "no ERR segment in an AA")


def test_split_frames(t, srv):
    c = srv.client()
    data = frame(adt("SPLIT1"))
    for i in range(len(data)):
        c.send_raw(data[i:i + 1])
        if i % 37 == 0:
            time.sleep(0.002)
    ack = c.recv_ack()
    c.close()
    t.ok(ack is not None and ack.code == "AA" and ack.control_id == "SPLIT1",
         "a frame split into single bytes is ACKed AA", repr(ack))


def test_frames_in_one_write(t, srv):
    c = srv.client()
    c.send_raw(b"".join(frame(adt("MULTI%d" % i)) for i in range(5)))
    acks = [c.recv_ack() for _ in range(5)]
    c.close()
    t.eq([a.control_id if a else None for a in acks], ["MULTI%d" % i for i in range(5)],
         "five frames in one write: five ACKs in order")


def test_pipelining(t, srv):
    c = srv.client()
    n = 300
    c.send_raw(b"".join(frame(adt("PIPE%d" % i)) for i in range(n)))
    acks = [c.recv_ack() for _ in range(n)]
    c.close()
    t.eq([a.control_id if a else None for a in acks], ["PIPE%d" % i for i in range(n)],
         "300 pipelined messages (past mllp.max_inflight): ACKs in order")
    t.ok(all(a is not None and a.code == "AA" for a in acks), "all pipelined messages AA")


def test_garbage_before_start(t, srv):
    c = srv.client()
    c.send_raw(b"hello garbage\r\n" + frame(adt("GARB1")))
    ack = c.recv_ack()
    c.close()
    t.ok(ack is not None and ack.code == "AA", "garbage before a start block is skipped",
         repr(ack))


def test_garbage_frame(t, srv):
    c = srv.client()
    ack = c.roundtrip(b"this is not HL7 at all")
    c.close()
    t.ok(ack is not None and ack.code in ("AE", "AR"), "a frame that is not HL7 gets AE/AR",
         repr(ack))
    t.ok(ack is not None and ack.seg("ERR") is not None, "with an ERR segment", repr(ack))
    rc, out, err = srv.fhirgate("store", "dead")
    t.ok(rc == 0 and "parse" in out, "the garbage is a dead letter (stage parse)", out + err)


def test_validation_errors(t, srv):
    c = srv.client()
    bad_version = adt("BADVER", version="9.9")
    ack = c.roundtrip(bad_version)
    t.ok(ack.code == "AR", "unsupported version: AR", repr(ack))
    err = ack.seg("ERR")
    t.ok(err is not None and "203" in ack.field("ERR", 3), "ERR-3 carries 0357 code 203",
         repr(ack))
    t.ok(err is not None and "MSH" in ack.field("ERR", 2), "ERR-2 points into MSH", repr(ack))
    no_id = hl7("MSH|^~\\&|A|B|C|D|20250101||ADT^A01^ADT_A01||P|2.5", "EVN|A01|20250101",
                "PID|1||1^^^H^MR||X^Y", "PV1|1|I")
    ack = c.roundtrip(no_id)
    t.ok(ack.code == "AE" and "101" in (ack.field("ERR", 3) or ""),
         "missing MSH-10: AE with code 101", repr(ack))
    v23 = adt("OLDERR", version="2.3").replace(b"|P|2.3", b"|X|2.3")
    ack = c.roundtrip(v23)
    t.ok(ack.code == "AR" and ack.field("ERR", 1) and "202" in ack.field("ERR", 1),
         "v2.3 error: ERR-1 form with code 202 (processing id)", repr(ack))
    c.close()


def test_custom_delimiters(t, srv):
    msg = hl7("MSH#$*@!|SA|SF|RA|RF|20250101120000||ADT$A01$ADT_A01|DELIM1|P|2.5",
              "EVN#A01#20250101120000", "PID#1##12345$$$H$MR##DOE$JANE", "PV1#1#I")
    msg = msg.replace(b"|", b"#")
    c = srv.client()
    ack = c.roundtrip(msg)
    c.close()
    t.ok(ack is not None and ack.raw.startswith(b"MSH#$*@!#"),
         "ACK uses the sender's delimiters", repr(ack))
    t.ok(ack is not None and ack.code == "AA" and ack.control_id == "DELIM1",
         "custom-delimiter message ACKed AA", repr(ack))


def test_enhanced_mode(t, srv):
    c = srv.client()
    msg = adt("ENH1", extra_msh="|||AL|AL")
    c.send(msg)
    a1, a2 = c.recv_ack(), c.recv_ack()
    t.ok(a1 is not None and a1.code == "CA" and a2 is not None and a2.code == "AA",
         "enhanced mode AL/AL: CA then AA", "%r %r" % (a1, a2))
    c.send(adt("ENH2", extra_msh="|||NE|AL"))
    a = c.recv_ack()
    t.ok(a is not None and a.code == "AA" and a.control_id == "ENH2",
         "enhanced mode NE/AL: only the application ACK", repr(a))
    c.send(adt("ENH3", extra_msh="|||NE|NE"))
    c.send(adt("ENH4", extra_msh="|||AL|ER"))
    a = c.recv_ack()
    t.ok(a is not None and a.code == "CA" and a.control_id == "ENH4",
         "NE/NE gets no ACK at all; AL/ER on success only the commit ACK", repr(a))
    a = c.recv_ack(timeout=0.5)
    t.ok(a is None, "nothing else arrives", repr(a))
    c.close()


def test_dedupe(t, srv):
    before = len(srv.stored_control_ids())
    c = srv.client()
    a1 = c.roundtrip(adt("DUP1"))
    a2 = c.roundtrip(adt("DUP1"))
    a3 = c.roundtrip(adt("DUP1", sender="OTHERAPP"))
    c.close()
    t.ok(a1.code == "AA" and a2.code == "AA" and a3.code == "AA",
         "a retransmission is ACKed AA again", "%r %r %r" % (a1, a2, a3))
    ids = [r[2] for r in srv.stored_control_ids()]
    t.eq(ids.count("DUP1"), 2, "stored once per sender (same MSH-10 from another sender kept)")
    t.eq(len(ids) - before, 2, "the retransmission added nothing")


def test_dedupe_error_resend(t, srv):
    c = srv.client()
    bad = adt("FIX1", version="2.5").replace(b"EVN|A01|20250101120000\r", b"")
    a1 = c.roundtrip(bad)
    a2 = c.roundtrip(bad)
    good = adt("FIX1")
    a3 = c.roundtrip(good)
    c.close()
    t.ok(a1.code == "AE" and a2.code == "AE", "a resent bad message gets the same AE",
         "%r %r" % (a1, a2))
    t.eq(a3.code, "AA", "the corrected message with the same MSH-10 is accepted")
    rows = [r for r in srv.stored_control_ids() if r[2] == "FIX1"]
    t.eq([r[1] for r in rows], ["E", "A"], "bad one stored once, corrected one stored")


def test_concurrent_connections(t, srv):
    n_conn, per = 100, 10
    results = {}

    def worker(k):
        try:
            c = srv.client(timeout=30)
            codes = []
            for i in range(per):
                a = c.roundtrip(adt("C%03d-%d" % (k, i)))
                codes.append(a.code if a else None)
            c.close()
            results[k] = codes
        except Exception as e:  # noqa: BLE001
            results[k] = [repr(e)]

    before = len(srv.stored_control_ids())
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_conn)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    bad = {k: v for k, v in results.items() if v != ["AA"] * per}
    t.ok(len(results) == n_conn and not bad, "100 concurrent connections x 10 messages: all AA",
         repr(list(bad.items())[:3]))
    t.eq(len(srv.stored_control_ids()) - before, n_conn * per, "1000 messages stored")


def test_oversize(t):
    with Server("mllp.max_frame_bytes=2K") as srv:
        c = srv.client()
        big = adt("BIG1").replace(b"DOE^JOHN", b"X" * 5000)
        ack = c.roundtrip(big)
        t.ok(ack is not None and ack.code == "AR" and ack.control_id == "BIG1",
             "a frame over mllp.max_frame_bytes: AR mirroring its MSH", repr(ack))
        ack = c.roundtrip(adt("AFTERBIG"))
        t.ok(ack is not None and ack.code == "AA", "the connection goes on after it", repr(ack))
        c.close()
        rc, out, _ = srv.fhirgate("store", "dead")
        t.ok("frame" in out, "the oversize frame is a dead letter (stage frame)", out)


def test_timeouts(t):
    with Server("mllp.idle_timeout=300ms", "mllp.read_timeout=300ms") as srv:
        c = srv.client()
        time.sleep(1.0)
        c.sock.settimeout(2)
        try:
            closed = c.sock.recv(10) == b""
        except OSError:
            closed = True
        t.ok(closed, "an idle connection is closed after mllp.idle_timeout")
        c.close()
        c = srv.client()
        c.send_raw(b"\x0bMSH|^~\\&|half")
        time.sleep(1.0)
        try:
            closed = c.sock.recv(10) == b""
        except OSError:
            closed = True
        t.ok(closed, "a stalled frame is closed after mllp.read_timeout")
        c.close()


def test_emfile(t):
    """Out of file descriptors: the server pauses accept instead of spinning, and recovers."""
    with Server(threads=1, nofile=32) as srv:
        socks = []
        for _ in range(60):
            try:
                socks.append(socket.create_connection(("127.0.0.1", srv.port), timeout=2))
            except OSError:
                break
        time.sleep(0.5)
        cpu0 = srv.cpu_seconds()
        time.sleep(1.5)
        used = srv.cpu_seconds() - cpu0
        t.ok(used < 0.5, "at the descriptor limit the server does not spin (%.2fs CPU in 1.5s)"
             % used)
        t.ok("pausing accept" in srv.read_log(), "the pause is logged", srv.read_log()[-1000:])
        for s in socks:
            s.close()
        time.sleep(0.5)
        c = srv.client()
        ack = c.roundtrip(adt("AFTEREMFILE"))
        c.close()
        t.ok(ack is not None and ack.code == "AA", "accepting resumes once descriptors are free",
             repr(ack))


def test_drain(t):
    srv = Server()
    srv.start()
    try:
        c = srv.client()
        n = 200
        c.send_raw(b"".join(frame(adt("DRAIN%d" % i)) for i in range(n)))
        first = c.recv_ack()
        srv.signal(signal.SIGTERM)
        acks = [first] + [c.recv_ack(timeout=10) for _ in range(n - 1)]
        got = [a.control_id for a in acks if a is not None]
        rc = srv.proc.wait(30)
        t.eq(rc, 0, "SIGTERM: the server drains and exits 0")
        stored = [r[2] for r in srv.stored_control_ids()]
        t.ok(all(g in stored for g in got), "every message ACKed during the drain is stored",
             "acked %d stored %d" % (len(got), len(stored)))
        t.ok(all(a.code == "AA" for a in acks if a is not None), "ACKs during drain are AA")
        t.ok("stopped" in srv.read_log(), "the log says it stopped", srv.read_log()[-2000:])
        c.close()
    finally:
        srv.cleanup()


def test_reload(t):
    with Server() as srv:
        with open(srv.conf, "a") as f:
            f.write("log.level = debug\n")
        srv.signal(signal.SIGHUP)
        time.sleep(0.5)
        t.ok("configuration reloaded" in srv.read_log(), "SIGHUP reloads the config",
             srv.read_log()[-1500:])
        with open(srv.conf, "a") as f:
            f.write("no.such.key = 1\n")
        srv.signal(signal.SIGHUP)
        time.sleep(0.5)
        log = srv.read_log()
        t.ok("unknown key 'no.such.key'" in log and "stays in force" in log,
             "a bad reload is refused with file:line and the old config stays", log[-1500:])
        c = srv.client()
        ack = c.roundtrip(adt("AFTERHUP"))
        c.close()
        t.ok(ack is not None and ack.code == "AA", "the server still works after a bad reload")


def test_config_errors(t):
    srv = Server()
    with open(srv.conf) as f:
        bad_line = len(f.readlines()) + 1
    with open(srv.conf, "a") as f:
        f.write("mllp.max_inflight = lots\n")
    p = subprocess.run([FHIRGATE, "serve", "-c", srv.conf], capture_output=True, timeout=20)
    err = p.stderr.decode()
    t.ok(p.returncode == 2 and ("%s:%d:" % (srv.conf, bad_line)) in err and "mllp.max_inflight" in err,
         "a bad value is an error with file:line", err)
    p = subprocess.run([FHIRGATE, "serve", "-c", srv.conf, "--set", "mllp.max_inflight=4",
                        "--print-config"], capture_output=True, timeout=20)
    t.ok(p.returncode == 2, "--set does not hide a bad line in the file")
    srv.cleanup()
    p = subprocess.run([FHIRGATE, "serve", "--set", "bogus=1"], capture_output=True, timeout=20)
    t.ok(p.returncode == 2 and "unknown key 'bogus'" in p.stderr.decode(),
         "--set with an unknown key is refused", p.stderr.decode())


def test_send_command(t, srv):
    corpus = os.path.join(DATA, "synthetic")
    n = len([f for f in os.listdir(corpus) if f.endswith(".hl7")])
    rc, out, err = srv.fhirgate("send", "--port", str(srv.port), corpus)
    last = out.strip().splitlines()[-1] if out.strip() else ""
    t.ok(n >= 12 and rc == 0 and "AA=%d" % n in last and "errors=0" in last,
         "fhirgate send of the synthetic corpus: %d AA" % n, out[-1500:] + err)
    t.ok(out.count("MSA|") >= n, "fhirgate send prints the ACKs", out[:1000])
    rc, out, err = srv.fhirgate("send", "--port", str(srv.port), "-q", "-n", "4", "-d", "8",
                                "-N", "400", "-u", corpus)
    t.ok(rc == 0 and "AA=400" in out and "p99=" in out,
         "fhirgate send -n 4 -d 8 -N 400 -u: 400 AA with latency figures", out + err)
    rc, out, err = srv.fhirgate("send", "--port", str(srv.port), "-q", "-", input=b"garbage")
    t.ok(rc == 1 and ("AE=1" in out or "AR=1" in out), "send exits 1 when an ACK is not AA",
         out + err)


def main():
    t = Tap()
    srv = Server()
    srv.start()
    try:
        for fn in (test_basic_ack, test_split_frames, test_frames_in_one_write,
                   test_pipelining, test_garbage_before_start, test_garbage_frame,
                   test_validation_errors, test_custom_delimiters, test_enhanced_mode,
                   test_dedupe, test_dedupe_error_resend, test_concurrent_connections,
                   test_send_command):
            t.run(fn, srv)
        t.eq(srv.stop(), 0, "server exits 0 on SIGTERM")
        log = srv.read_log()
        t.ok("garbage_bytes=0" not in log.split("final")[-1],
             "garbage bytes are counted in the final stats", log[-1000:])
    finally:
        srv.cleanup()
    for fn in (test_oversize, test_timeouts, test_emfile, test_drain, test_reload, test_config_errors):
        t.run(fn)
    t.done()


if __name__ == "__main__":
    main()
