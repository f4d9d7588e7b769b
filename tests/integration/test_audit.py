#!/usr/bin/env python3
"""The audit trail against the real binary: an AuditEvent for every message received over MLLP
(accepted, rejected, resent) and for every FHIR REST request, written by the writer after the
answer, searchable, and valid R4 (the XML form against the official XSD with xmllint); the
audit.rest and audit.messages options. TAP on stdout."""

import base64
import http.client
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
    t.run(t_options)
    t.done()


if __name__ == "__main__":
    main()
