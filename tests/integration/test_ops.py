#!/usr/bin/env python3
"""Operator operations over REST: the message log ($messages), dead letters ($dead-letters) and
$replay with the mappings in force, against the real binary."""

import http.client
import json
import os
import shutil

from harness import DATA, Server, Tap, free_port, hl7

SYN = os.path.join(DATA, "synthetic")


def api(port, method, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path, headers={"Accept": "application/fhir+json"})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, json.loads(body) if body else None


def params(doc, name):
    """[{part name: value}] for every parameter called name."""
    out = []
    for p in (doc or {}).get("parameter", []):
        if p.get("name") != name:
            continue
        d = {}
        for part in p.get("part", []):
            d[part["name"]] = next(v for k, v in part.items() if k.startswith("value"))
        out.append(d)
    return out


def main():
    t = Tap()
    hport = free_port()
    # hl7.max_segments=3: the synthetic ADT (many segments) becomes a dead letter at first.
    srv = Server("http.listen=127.0.0.1:%d" % hport, "hl7.max_segments=3")
    srv.start()
    data_dir = srv.data_dir
    try:
        rc, out, err = srv.fhirgate("send", "--port", str(srv.port), "-q",
                                    os.path.join(SYN, "01_adt_a01_admit.hl7"))
        c = srv.client()
        ack = c.roundtrip(hl7("MSH|^~\\&|A|B|C|D|20250101||ADT^A01^ADT_A01|OK1|P|2.5",
                              "EVN|A01|20250101", "PID|1||7^^^H^MR||ROE^RAY"))
        c.close()
        t.ok(ack.code == "AE", "a message missing PV1 is refused (AE)", repr(ack))
        st, doc = api(hport, "GET", "/fhir/$messages")
        msgs = params(doc, "message")
        t.ok(st == 200 and len(msgs) == 2 and msgs[1]["controlId"] == "OK1",
             "$messages lists the message log (seq, status, MSH-9, MSH-10)", json.dumps(doc)[:800])
        t.ok(all("raw" not in m and "EVERYMAN" not in json.dumps(m) for m in msgs),
             "... without message bodies")
        st, doc = api(hport, "GET", "/fhir/$dead-letters")
        dead = params(doc, "deadLetter")
        t.ok(st == 200 and len(dead) == 2 and dead[0]["stage"] == "parse"
             and "segments" in dead[0]["reason"],
             "$dead-letters lists both with stage and reason", json.dumps(doc)[:800])
        st, doc = api(hport, "GET", "/fhir/$dead-letters?_count=1")
        t.eq(len(params(doc, "deadLetter")), 1, "$dead-letters honours _count")
        st, doc = api(hport, "POST", "/fhir/$replay")
        t.eq(st, 400, "$replay without seq or all: 400")
        t.eq(srv.stop(), 0, "server stopped")
    finally:
        pass
    # Same store, default limits: the ADT now passes, the one without PV1 still fails.
    srv2 = Server("http.listen=127.0.0.1:%d" % hport, data_dir=data_dir)
    srv2.start()
    try:
        st, doc = api(hport, "POST", "/fhir/$replay?all=true")
        res = {r["seq"]: r for r in params(doc, "result")}
        t.ok(st == 200 and res.get("1", {}).get("outcome") == "replayed"
             and int(res["1"].get("resources", 0)) > 5,
             "$replay all: the ADT is replayed with its resources", json.dumps(doc)[:800])
        t.ok(res.get("2", {}).get("outcome") == "still-failing"
             and "PV1" in res["2"].get("reason", ""),
             "... the message without PV1 still fails, with the reason", json.dumps(doc)[:800])
        st, doc = api(hport, "GET", "/fhir/Patient?family=everyman")
        t.ok(st == 200 and doc.get("total") == 1, "the replayed Patient is searchable",
             json.dumps(doc)[:500])
        st, doc = api(hport, "GET", "/fhir/$dead-letters")
        t.eq([d["seq"] for d in params(doc, "deadLetter")], ["2"], "one dead letter is left")
        st, doc = api(hport, "POST", "/fhir/$replay?seq=1")
        t.eq(params(doc, "result")[0]["outcome"], "not-found",
             "replaying it again: not-found (nothing to do)")
        rc, out, err = srv2.fhirgate("store", "verify")
        t.eq(rc, 0, "store verify clean after replays")
    finally:
        srv2.cleanup()
        shutil.rmtree(srv.tmp, ignore_errors=True)
    t.done()


if __name__ == "__main__":
    main()
