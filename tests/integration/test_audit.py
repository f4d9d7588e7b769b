#!/usr/bin/env python3
"""The audit trail against the real binary: an AuditEvent for every message received over MLLP
(accepted, rejected, resent) and for every FHIR REST request, written by the writer after the
answer, searchable with every documented parameter, paged without gaps or repeats, read by id
and in history, refused for writes, valid R4 (the XML form against the official XSD with
xmllint); an event for every AA'd message; no event dropped under a burst of reads; the
audit.rest and audit.messages options; `store verify` clean. TAP on stdout."""

import base64
import http.client
import threading
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import DATA, Server, Tap, adt, free_port  # noqa: E402

XSD = os.path.join(DATA, "fhir", "xsd", "fhir-single.xsd")


def req(port, method, path, body=None, accept="application/fhir+json"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Accept": accept}
    if body is not None:
        headers["Content-Type"] = "application/fhir+json"
        body = json.dumps(body)
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    c.close()
    doc = json.loads(data) if data and "json" in (r.getheader("Content-Type") or "") else None
    return r.status, doc, data


def audit_events(port, query=""):
    """Every AuditEvent matching query (one page of up to 1000)."""
    st, doc, _ = req(port, "GET", "/fhir/AuditEvent?_count=1000" + ("&" + query if query else ""))
    if st != 200:
        raise RuntimeError("AuditEvent search: %d" % st)
    return [e["resource"] for e in doc.get("entry", [])]


def settle(port, want, query="", timeout=10):
    """Waits until at least `want` events match (the writer stores them after the answer; each
    search adds one more event of its own, so this counts only the ones before it)."""
    deadline = time.time() + timeout
    evs = []
    while time.time() < deadline:
        evs = audit_events(port, query)
        if len(evs) >= want:
            return evs
        time.sleep(0.05)
    return evs


def subtype(ev):
    return (ev.get("subtype") or [{}])[0].get("code")


def t_messages_and_rest(t):
    port = free_port()
    with Server("http.listen=127.0.0.1:%d" % port) as srv:
        c = srv.client()
        first = c.roundtrip(adt("AUD1"))
        bad = c.roundtrip(b"MSH|^~\\&|SENDAPP|SENDFAC|R|F|20250101||ADT^A01|AUD2|P|9.9\r"
                          b"PID|1||7^^^H^MR||X^Y\r")
        again = c.roundtrip(adt("AUD1"))
        c.close()
        t.eq((first.code, again.code), ("AA", "AA"), "accepted, and the resend answered AA")
        t.ok(bad.code in ("AE", "AR"), "bad version refused")

        msg_evs = settle(port, 3, "type=110107")
        t.eq(len(msg_evs), 3, "one AuditEvent per message received (resend included)")
        by_id = {}
        for ev in msg_evs:
            detail = ev["entity"][0].get("detail", [{}])[0].get("valueString")
            by_id.setdefault(detail, []).append(ev)
        ok_evs = sorted(by_id.get("AUD1", []), key=lambda e: e["outcomeDesc"])
        t.eq([e["outcome"] for e in ok_evs], ["0", "0"], "AUD1: outcome 0 twice")
        t.ok(any("resent" in e["outcomeDesc"] for e in ok_evs), "the resend is marked as such",
             [e["outcomeDesc"] for e in ok_evs])
        t.eq(by_id.get("AUD2", [{}])[0].get("outcome"), "4" if bad.code == "AE" else "8",
             "the refused message: outcome 4 (AE) or 8 (AR)")
        stored = [e for e in ok_evs if "resent" not in e["outcomeDesc"]][0]
        agent = stored["agent"][0]
        t.eq((agent.get("name"), agent["network"]["address"], agent["requestor"]),
             ("SENDAPP|SENDFAC", "127.0.0.1", True), "message agent: sender and address")
        t.eq((stored["type"]["code"], stored["action"], subtype(stored)), ("110107", "C", "A01"),
             "message event: DCM Import, action C, trigger A01")
        refs = [e["what"].get("reference") for e in stored["entity"][1:]]
        pat = [r for r in refs if r and r.startswith("Patient/")]
        t.ok(len(pat) == 1, "the event names the resources the message wrote", refs)

        # REST: a read, a 404, a search, a create.
        pid = pat[0].split("/")[1] if pat else "x"
        st, _, _ = req(port, "GET", "/fhir/Patient/" + pid)
        t.eq(st, 200, "read the mapped patient")
        req(port, "GET", "/fhir/Patient/nobody-here")
        req(port, "GET", "/fhir/Observation?code=http://loinc.org|8867-4&_count=3")
        st, created, _ = req(port, "POST", "/fhir/Practitioner",
                             {"resourceType": "Practitioner", "name": [{"family": "Au"}]})
        t.eq(st, 201, "create")
        settle(port, 1, "subtype=create")
        rest = audit_events(port, "type=rest&subtype=read,create,search-type")
        kinds = sorted((subtype(e), e["outcome"], e["action"]) for e in rest
                       if subtype(e) != "search-type" or "Observation" in
                       json.dumps(e.get("entity", "")))
        t.ok(("read", "0", "R") in kinds and ("read", "4", "R") in kinds and
             ("create", "0", "C") in kinds and ("search-type", "0", "E") in kinds,
             "REST events: read 200, read 404, search, create", kinds)
        read_ev = [e for e in rest if subtype(e) == "read" and e["outcome"] == "0"][0]
        t.eq(read_ev["entity"][0]["what"]["reference"], "Patient/" + pid,
             "read event names the resource")
        t.eq(read_ev["agent"][0]["name"], "anonymous", "without authorization: anonymous")
        search_ev = [e for e in rest if subtype(e) == "search-type" and
                     e["entity"][0].get("name") == "Observation"]
        q = base64.b64decode(search_ev[0]["entity"][0]["query"]).decode() if search_ev else ""
        t.eq(urllib.parse.unquote(q), "code=http://loinc.org|8867-4&_count=3",
             "search event carries the query (base64)")

        # Searchable like any resource.
        t.ok(len(audit_events(port, "outcome=4&subtype=read")) >= 1, "search by outcome")
        t.ok(len(audit_events(port, "entity=Patient/" + pid)) >= 2,
             "search by entity: the message and the read")
        t.ok(len(audit_events(port, "address=127.0.0.1")) >= 7, "search by agent address")
        t.ok(len(audit_events(port, "date=ge2020-01-01")) >= 7, "search by date")
        t.eq(audit_events(port, "date=lt2000-01-01"), [], "date in the past: none")

        # Valid R4: the XML form against the official XSD.
        if shutil.which("xmllint") and os.path.exists(XSD):
            tmp = tempfile.mkdtemp()
            try:
                for i, ev in enumerate([stored, read_ev] + search_ev[:1]):
                    st, _, xml = req(port, "GET", "/fhir/AuditEvent/%s" % ev["id"],
                                     accept="application/fhir+xml")
                    path = os.path.join(tmp, "ae%d.xml" % i)
                    with open(path, "wb") as f:
                        f.write(xml)
                    p = subprocess.run(["xmllint", "--noout", "--schema", XSD, path],
                                       capture_output=True)
                    t.ok(st == 200 and p.returncode == 0, "AuditEvent %d is valid R4 (XSD)" % i,
                         p.stderr.decode()[-2000:])
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            t.ok(True, "R4 XSD check # SKIP xmllint or the R4 XSD not available")
        t.ok("DOE" not in srv.read_log(), "no patient data in the log")


def get_url(port, url):
    """GET of an absolute link the server handed out (the next/previous of a Bundle)."""
    u = urllib.parse.urlsplit(url)
    return req(port, "GET", u.path + ("?" + u.query if u.query else ""))


def link(doc, rel):
    return next((ln["url"] for ln in doc.get("link", []) if ln["relation"] == rel), None)


def pages(port, query):
    """Every page of a search, following next links: ([ids per page], last bundle)."""
    st, doc, _ = req(port, "GET", "/fhir/AuditEvent?" + query)
    out = []
    while True:
        if st != 200:
            raise RuntimeError("page: %d" % st)
        out.append([e["resource"]["id"] for e in doc.get("entry", [])
                    if e["search"]["mode"] == "match"])
        nxt = link(doc, "next")
        if nxt is None or len(out) > 50:
            return out, doc
        st, doc, _ = get_url(port, nxt)


def metric(port, name):
    st, _, data = req(port, "GET", "/metrics", accept="text/plain")
    for line in data.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def t_trail(t):
    port = free_port()
    with Server("http.listen=127.0.0.1:%d" % port) as srv:
        # Messages: every AA'd message has its event, naming its sequence in the log.
        c = srv.client()
        acks = [c.roundtrip(adt("TR%03d" % i)) for i in range(40)]
        c.close()
        t.eq(sorted(set(a.code for a in acks)), ["AA"], "40 messages accepted")
        evs = settle(port, 40, "type=110107")
        by_ctl = {}
        for ev in evs:
            by_ctl[ev["entity"][0]["detail"][0]["valueString"]] = ev
        t.eq(sorted(by_ctl), ["TR%03d" % i for i in range(40)],
             "every AA'd message has its AuditEvent")
        seqs = [int(ev["entity"][0]["what"]["identifier"]["value"]) for ev in evs]
        t.eq(len(set(seqs)), 40, "each names its own message sequence")
        rc, out, _ = srv.fhirgate("store", "show", str(seqs[0]))
        t.ok(rc == 0 and "MSH|" in out, "the sequence is the message's in the log")

        # 250 REST events of one kind, paged 100 at a time both ways, nothing lost or twice.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(250):
            conn.request("GET", "/fhir/metadata")
            conn.getresponse().read()
        conn.close()
        settle(port, 250, "subtype=capabilities")
        asc, last = pages(port, "subtype=capabilities&_count=100")
        t.eq([len(p) for p in asc], [100, 100, 50], "250 events: pages of 100, 100, 50")
        flat = [i for p in asc for i in p]
        t.eq(len(set(flat)), 250, "paging forward: no event missing or repeated")
        t.eq(flat, sorted(flat), "oldest first by default (ids follow the key)")
        t.ok("total" not in last or last["total"] == 250, "no wrong total")
        desc, _ = pages(port, "subtype=capabilities&_count=100&_sort=-date")
        t.eq([i for p in desc for i in p], list(reversed(flat)), "_sort=-date: newest first")
        st, doc, _ = req(port, "GET", "/fhir/AuditEvent?subtype=capabilities&_count=100")
        st, doc2, _ = get_url(port, link(doc, "next"))
        st, back, _ = get_url(port, link(doc2, "previous"))
        t.eq([e["resource"]["id"] for e in back.get("entry", [])], asc[0],
             "the previous link of page 2 is page 1")
        st, doc, _ = req(port, "GET", "/fhir/AuditEvent?subtype=capabilities&_summary=count")
        t.eq(doc.get("total"), 250, "_summary=count counts the matches")

        # Every documented search, on the new storage.
        recs = audit_events(port, "subtype=capabilities&_count=3")
        mid = recs[1]
        t.eq([e["id"] for e in audit_events(port, "_id=" + mid["id"])], [mid["id"]], "_id")
        t.eq(audit_events(port, "_id=nosuchid"), [], "_id of no event: none")
        # recorded is to the millisecond: other events may share mid's.
        same = audit_events(port, "subtype=capabilities&date=" + mid["recorded"])
        t.ok(mid["id"] in [e["id"] for e in same] and
             all(e["recorded"] == mid["recorded"] for e in same), "date=eq an instant",
             "%r: %r" % (mid, [(e["id"], e["recorded"]) for e in same]))
        later = audit_events(port, "subtype=capabilities&date=gt" + mid["recorded"])
        t.ok(mid["id"] not in [e["id"] for e in later] and
             all(e["recorded"] > mid["recorded"] for e in later) and len(later) >= 200,
             "date=gt: later events only")
        earlier = audit_events(port, "subtype=capabilities&date=le" + mid["recorded"])
        t.ok(mid["id"] in [e["id"] for e in earlier] and
             all(e["recorded"] <= mid["recorded"] for e in earlier), "date=le")
        t.eq(audit_events(port, "date=lt2000-01-01&_lastUpdated=ge2000-01-01"), [],
             "date and _lastUpdated together")
        t.ok(len(audit_events(port, "_lastUpdated=ge2020-01-01&type=110107")) == 40,
             "_lastUpdated")
        t.eq(len(audit_events(port, "agent-name=SENDAPP|SENDFAC")), 40, "agent-name")
        t.ok(len(audit_events(port, "action=C&type=110107")) == 40, "action")
        t.ok(len(audit_events(port, "action=D")) == 0, "action with no match")
        t.eq(len(audit_events(port, "type=rest&outcome=0&subtype=capabilities")), 250,
             "type, outcome and subtype together")
        t.eq(len(audit_events(port, "outcome=4,8&type=110107")), 0, "outcome list")
        pat = [w["what"]["reference"] for w in evs[0]["entity"][1:]
               if w["what"].get("reference", "").startswith("Patient/")][0]
        st, _, _ = req(port, "GET", "/fhir/" + pat)
        ent = settle(port, 41, "entity=" + pat)
        t.eq(sorted(subtype(e) for e in ent), ["A01"] * 40 + ["read"],
             "entity=Patient/id: the 40 messages that wrote it and the read (reference index)")
        base_url = "http://127.0.0.1:%d/fhir/" % port
        t.eq(len(audit_events(port, "entity=" + base_url + pat)), len(ent),
             "entity= with an absolute URL under the base")
        t.eq(len(audit_events(port, "entity=" + pat.split("/")[1])), len(ent),
             "entity= with a bare id (scanned)")
        t.eq(len(audit_events(port, "patient=" + pat)), len(ent), "patient=")
        t.eq(len(audit_events(port, "entity=" + pat + "&subtype=read")), 1,
             "entity with another parameter")
        t.eq(len(audit_events(port, "entity=Patient/nobody")), 0, "entity of nobody")
        newest = audit_events(port, "entity=%s&_sort=-date&_count=1" % pat)
        t.eq(subtype(newest[0]) if newest else None, "read", "entity, newest first")
        st, doc, _ = req(port, "GET", "/fhir/AuditEvent?_sort=outcome")
        t.eq(st, 400, "_sort by anything but date: 400")
        st, doc, _ = req(port, "GET", "/fhir/AuditEvent?_cursor=zz")
        t.eq(st, 400, "a bad cursor: 400")
        st, doc, _ = req(port, "POST", "/fhir/AuditEvent/_search", None)
        t.eq(st, 200, "POST _search works")

        # Read, vread, history: one version each.
        st, doc, _ = req(port, "GET", "/fhir/AuditEvent/" + mid["id"])
        t.eq((st, doc["id"], doc["meta"]["versionId"]), (200, mid["id"], "1"), "read by id")
        st, _, _ = req(port, "GET", "/fhir/AuditEvent/%s/_history/1" % mid["id"])
        st2, _, _ = req(port, "GET", "/fhir/AuditEvent/%s/_history/2" % mid["id"])
        t.eq((st, st2), (200, 404), "vread: version 1 only")
        st, doc, _ = req(port, "GET", "/fhir/AuditEvent/%s/_history" % mid["id"])
        t.eq((st, len(doc.get("entry", []))), (200, 1), "instance history: one entry")
        st, doc, _ = req(port, "GET", "/fhir/AuditEvent/_history?_count=5")
        t.ok(st == 200 and len(doc.get("entry", [])) == 5 and link(doc, "next"),
             "type history, newest first, paged")
        st, _, _ = req(port, "GET", "/fhir/AuditEvent/00000000000000ff")
        t.eq(st, 404, "an id not in the trail: 404")

        # Append-only: no client writes.
        body = {"resourceType": "AuditEvent", "type": {"code": "x"}, "recorded":
                "2026-01-01T00:00:00Z", "agent": [{"requestor": True}],
                "source": {"observer": {"display": "x"}}}
        refused = [req(port, "POST", "/fhir/AuditEvent", body),
                   req(port, "PUT", "/fhir/AuditEvent/" + mid["id"], dict(body, id=mid["id"])),
                   req(port, "DELETE", "/fhir/AuditEvent/" + mid["id"]),
                   req(port, "PATCH", "/fhir/AuditEvent/" + mid["id"], [])]
        t.eq([r[0] for r in refused], [405] * 4, "create, update, delete, patch: 405")
        t.ok(all(r[1] and r[1]["resourceType"] == "OperationOutcome" and
                 "append-only" in json.dumps(r[1]) for r in refused),
             "with an OperationOutcome that says why")
        st, doc, _ = req(port, "POST", "/fhir", {
            "resourceType": "Bundle", "type": "batch", "entry": [
                {"resource": body, "request": {"method": "POST", "url": "AuditEvent"}}]})
        t.eq((st, doc["entry"][0]["response"]["status"][:3]), (200, "405"),
             "a batch entry writing an AuditEvent: 405")
        st, doc, _ = req(port, "GET", "/fhir/AuditEvent/" + mid["id"])
        t.eq(doc.get("type", {}).get("code"), "rest", "the event is unchanged")

        # A burst of reads: every one audited, none dropped.
        before = metric(port, "fhirgate_audit_dropped_total")

        def burst(n):
            cn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            for _ in range(n):
                cn.request("GET", "/fhir/" + pat)
                cn.getresponse().read()
            cn.close()

        ths = [threading.Thread(target=burst, args=(5000,)) for _ in range(4)]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        deadline = time.time() + 20
        total = 0
        while time.time() < deadline:
            st, doc, _ = req(port, "GET", "/fhir/AuditEvent?entity=%s&subtype=read"
                             "&_summary=count" % pat)
            total = doc.get("total", 0)
            if total >= 20001:
                break
            time.sleep(0.2)
        t.eq((before, metric(port, "fhirgate_audit_dropped_total")), (0.0, 0.0),
             "no AuditEvent dropped under 20,000 reads")
        t.eq(total, 20001, "20,000 reads: 20,000 more read events for the patient")

        rc, out, err = srv.fhirgate("store", "verify")
        t.ok(rc == 0, "store verify: no problem", out + err)
        rc, out, _ = srv.fhirgate("store", "stats")
        t.ok(rc == 0 and "audit events" in out, "store stats counts the trail", out)


def t_options(t):
    port = free_port()
    with Server("http.listen=127.0.0.1:%d" % port, "audit.rest=writes",
                "audit.messages=off") as srv:
        c = srv.client()
        t.eq(c.roundtrip(adt("OPT1")).code, "AA", "message accepted")
        c.close()
        req(port, "GET", "/fhir/Patient?_count=1")
        req(port, "POST", "/fhir/Practitioner", {"resourceType": "Practitioner"})
        evs = settle(port, 1)
        time.sleep(0.3)
        evs = audit_events(port)
        t.eq(sorted(subtype(e) for e in evs), ["create"],
             "audit.rest=writes, audit.messages=off: only the create")
    port = free_port()
    with Server("http.listen=127.0.0.1:%d" % port, "audit.rest=off") as srv:
        req(port, "GET", "/fhir/metadata")
        req(port, "POST", "/fhir/Practitioner", {"resourceType": "Practitioner"})
        time.sleep(0.3)
        t.eq(audit_events(port), [], "audit.rest=off: no REST events")


def main():
    t = Tap()
    t.run(t_messages_and_rest)
    t.run(t_trail)
    t.run(t_options)
    t.done()


if __name__ == "__main__":
    main()
