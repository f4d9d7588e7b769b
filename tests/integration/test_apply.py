#!/usr/bin/env python3
"""The writer's deferred apply (writer.apply_delay, docs/store.md): an MLLP message's resources
are kept durably in pend with it before its AA and made readable in a later bulk load. What this
checks, on the real binary with a real LMDB directory:
  - a REST read or search right after an AA sees the message's resources (rest.consistent_reads),
    and does not with consistent_reads off until the apply;
  - a REST write after an AA is ordered after the message's deferred puts (If-Match sees them);
  - kill -9 with puts waiting loses none: the restart applies them, `store verify` is clean;
  - SIGTERM applies what waits before the process ends;
  - resending the same content under a new control id writes no new version;
  - the unapplied gauge and the apply counters are on /metrics.
Emits TAP."""

import http.client
import json
import re
import time

from harness import Server, Tap, free_port, hl7

LONG = "writer.apply_delay=60s"  # nothing is applied by the timer during a test


def adt(control_id, mrn, family, event="A01"):
    return hl7("MSH|^~\\&|APP|FAC|FHIRGATE|FAC|20250101120000||ADT^%s^ADT_A01|%s|P|2.5"
               % (event, control_id),
               "EVN|%s|20250101120000" % event,
               "PID|1||%s^^^HOSP^MR||%s^JO||19800101|F" % (mrn, family),
               "PV1|1|I|WARD^101^1")


def req(port, method, path, body=None, headers=None):
    h = dict(headers or {})
    if body is not None:
        body = json.dumps(body)
        h["Content-Type"] = "application/fhir+json"
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    c.close()
    doc = json.loads(data) if data and "json" in hdrs.get("content-type", "") else None
    return r.status, hdrs, doc


def find(port, mrn):
    """The Patient with identifier mrn, or None."""
    st, _, doc = req(port, "GET", "/fhir/Patient?identifier=" + mrn)
    entries = (doc or {}).get("entry") or []
    return entries[0]["resource"] if st == 200 and entries else None


def metric(port, name):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/metrics")
    data = c.getresponse().read().decode()
    c.close()
    m = re.search(r"^%s (\d+)" % re.escape(name), data, re.M)
    return int(m.group(1)) if m else None


def stats(srv):
    rc, out, _ = srv.fhirgate("store", "stats")
    m = re.search(r"^unapplied\s+(\d+)", out, re.M)
    return int(m.group(1)) if m else None


def resources(srv, rtype):
    rc, out, _ = srv.fhirgate("store", "resources")
    counts = dict(l.split() for l in out.splitlines() if len(l.split()) == 2)
    return int(counts.get(rtype, 0))


def http_server(*sets, data_dir=None):
    port = free_port()
    srv = Server("http.listen=127.0.0.1:%d" % port, *sets, data_dir=data_dir)
    srv.http = port
    return srv


def t_consistent_reads(t):
    with http_server(LONG) as srv:
        port = srv.http
        ack = srv.client().roundtrip(adt("CR-1", "MRN-CR1", "CONSISTENT"))
        t.eq(ack.code, "AA", "an ADT is ACKed AA")
        t.ok(metric(port, "fhirgate_writer_unapplied_puts") > 0,
             "its puts wait for the apply (fhirgate_writer_unapplied_puts > 0)")
        t.eq(stats(srv), 1, "`store stats`: one message unapplied")
        t.eq(resources(srv, "Patient"), 0, "the store itself does not hold the Patient yet")
        p = find(port, "MRN-CR1")
        t.ok(p is not None and p["name"][0]["family"] == "CONSISTENT",
             "a search right after the AA finds the Patient (it waits for the apply)")
        t.eq(metric(port, "fhirgate_writer_unapplied_puts"), 0, "nothing waits after it")
        t.ok(metric(port, "fhirgate_writer_applies_total") >= 1, "the apply is counted")
        t.eq(stats(srv), 0, "`store stats`: nothing unapplied")

        # A write after an AA comes after that message's puts: the A08 makes version 2, so an
        # update that expects version 1 is refused.
        ack = srv.client().roundtrip(adt("CR-2", "MRN-CR1", "UPDATED", event="A08"))
        t.eq(ack.code, "AA", "an A08 for the patient is ACKed AA")
        body = dict(p, name=[{"family": "FROMREST"}])
        body.pop("meta", None)
        st, _, doc = req(port, "PUT", "/fhir/Patient/" + p["id"], body,
                         {"If-Match": 'W/"%s"' % p["meta"]["versionId"]})
        t.eq(st, 412, "a REST update with If-Match of the version before the A08: 412")
        st, h, doc = req(port, "GET", "/fhir/Patient/" + p["id"])
        t.ok(st == 200 and doc["name"][0]["family"] == "UPDATED" and
             doc["meta"]["versionId"] == "2", "the read shows the A08's version 2", doc)
        st, _, doc = req(port, "PUT", "/fhir/Patient/" + p["id"], body, {"If-Match": h["etag"]})
        t.eq(st, 200, "an update with the current ETag: 200")

        # The same content again under new control ids: the first makes version 4 (the REST
        # update changed the Patient), the others, waiting in the same load and after it,
        # nothing.
        for cid in ("CR-3", "CR-4"):
            ack = srv.client().roundtrip(adt(cid, "MRN-CR1", "AGAIN", event="A08"))
            t.eq(ack.code, "AA", "the same A08 under control id %s: AA" % cid)
        st, _, doc = req(port, "GET", "/fhir/Patient/%s/_history" % p["id"])
        versions = sorted(int(e["resource"]["meta"]["versionId"]) for e in doc["entry"])
        t.eq(versions, [1, 2, 3, 4], "one new Patient version for the two")
        ack = srv.client().roundtrip(adt("CR-5", "MRN-CR1", "AGAIN", event="A08"))
        st, _, doc = req(port, "GET", "/fhir/Patient/%s/_history" % p["id"])
        t.eq(len(doc["entry"]), 4, "and none for the same content after the apply")


def t_reads_off(t):
    with http_server(LONG, "rest.consistent_reads=off") as srv:
        port = srv.http
        ack = srv.client().roundtrip(adt("OFF-1", "MRN-OFF", "LATER"))
        t.eq(ack.code, "AA", "consistent_reads off: an ADT is ACKed AA")
        t.eq(find(port, "MRN-OFF"), None, "a search before the apply does not see it yet")
        # A REST write is ordered after the deferred puts: it makes them.
        st, _, _ = req(port, "POST", "/fhir/Basic", {"resourceType": "Basic",
                                                     "code": {"text": "x"}})
        t.eq(st, 201, "a REST create")
        t.ok(find(port, "MRN-OFF") is not None, "after a REST write the Patient is there")


def t_crash(t):
    srv = http_server(LONG)
    try:
        srv.start()
        c = srv.client()
        for i in range(20):
            ack = c.roundtrip(adt("K-%d" % i, "MRN-K%d" % i, "KILLED"))
            if ack.code != "AA":
                break
        c.close()
        t.eq(ack.code, "AA", "20 ADTs ACKed AA")
        srv.kill9()
        t.eq(stats(srv), 20, "after kill -9: 20 messages with unapplied puts in pend")
        t.eq(resources(srv, "Patient"), 0, "and no Patient made yet")
        srv.start()
        t.ok(srv.wait_applied(), "the restart applies them")
        t.eq(resources(srv, "Patient"), 20, "all 20 Patients are there")
        rc, out, err = srv.fhirgate("store", "verify")
        t.ok(rc == 0, "store verify is clean", out + err)

        # SIGTERM makes what waits.
        ack = srv.client().roundtrip(adt("T-1", "MRN-T1", "STOPPED"))
        t.eq(ack.code, "AA", "one more ADT")
        t.eq(srv.stop(), 0, "SIGTERM: exit 0")
        t.eq(stats(srv), 0, "nothing left unapplied after SIGTERM")
        t.eq(resources(srv, "Patient"), 21, "its Patient was made on the way out")
    finally:
        srv.stop()
        srv.cleanup()


def t_immediate(t):
    with Server("writer.apply_delay=0ms") as srv:
        ack = srv.client().roundtrip(adt("IM-1", "MRN-IM", "NOW"))
        t.eq(ack.code, "AA", "writer.apply_delay=0ms: ACKed AA")
        t.eq(stats(srv), 0, "nothing kept in pend")
        t.eq(resources(srv, "Patient"), 1, "the Patient is stored with the message")


def main():
    t = Tap()
    t.run(t_consistent_reads)
    t.run(t_reads_off)
    t.run(t_crash)
    t.run(t_immediate)
    t.done()


if __name__ == "__main__":
    main()
