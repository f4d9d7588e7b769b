#!/usr/bin/env python3
"""HL7 v2 -> FHIR through the real binary: `fhirgate convert` (JSON, XML, --explain),
`fhirgate mappings check`, conversion on ingest (resources stored with the message, one Patient
and one Encounter across A01/A08/A03, no new version for a resend), unmapped messages, and
mapping reload (site overrides, a broken file keeps the old mappings)."""

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

from harness import DATA, FHIRGATE, TOP_SRCDIR, Server, Tap, hl7

MAPS = os.path.join(TOP_SRCDIR, "mappings", "hl7v2")
SYN = os.path.join(DATA, "synthetic")
CFG = ["-c", "/dev/null", "--set", "mappings.dir=" + MAPS]


def run(*args, input=None):
    p = subprocess.run([FHIRGATE] + list(args) + CFG, capture_output=True, input=input,
                       timeout=60)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def resources(bundle, rtype):
    return [e["resource"] for e in bundle.get("entry", []) if e["resource"]["resourceType"] == rtype]


def test_convert(t):
    rc, out, err = run("convert", os.path.join(SYN, "01_adt_a01_admit.hl7"))
    t.eq(rc, 0, "convert exits 0")
    b = json.loads(out)
    t.eq((b["resourceType"], b["type"]), ("Bundle", "transaction"), "a transaction Bundle")
    pats = resources(b, "Patient")
    t.eq(len(pats), 1, "one Patient")
    p = pats[0]
    t.eq(p["name"][0]["family"], "EVERYMAN", "Patient.name.family from PID-5.1")
    t.eq(p["birthDate"], "1980-06-15", "Patient.birthDate from PID-7")
    t.eq(p["gender"], "male", "Patient.gender via AdministrativeSex")
    t.ok(any(i.get("value") == "100234567" for i in p.get("identifier", [])),
         "Patient.identifier from PID-3", json.dumps(p.get("identifier")))
    t.ok(all(e["request"]["method"] == "PUT" and e["request"]["url"] ==
             "%s/%s" % (e["resource"]["resourceType"], e["resource"]["id"]) for e in b["entry"]),
         "every entry is an idempotent PUT to Type/id")
    encs = resources(b, "Encounter")
    t.ok(len(encs) == 1 and encs[0]["subject"]["reference"] == "Patient/" + p["id"],
         "the Encounter refers to the Patient", json.dumps(encs)[:500])
    rc2, out2, _ = run("convert", os.path.join(SYN, "01_adt_a01_admit.hl7"))
    t.ok(rc2 == 0 and out2 == out, "conversion is deterministic (same bytes twice)")

    rc, out, err = run("convert", "--explain", os.path.join(SYN, "01_adt_a01_admit.hl7"))
    t.ok(rc == 0 and re.search(r"^Patient/\S+ name\S* <- PID-5.*PID-Patient\.map:\d+", out, re.M),
         "--explain names the mapping line of each element", out[-3000:])
    t.ok("# source fields with a value that no mapping line used" in out,
         "--explain lists unused source fields", out[-1500:])

    rc, out, err = run("convert", "--format", "xml", os.path.join(SYN, "01_adt_a01_admit.hl7"))
    t.ok(rc == 0 and out.lstrip().startswith("<Bundle") and 'xmlns="http://hl7.org/fhir"' in out,
         "--format xml writes FHIR XML", out[:300] + err)

    rc, out, err = run("convert", "-", input=hl7(
        "MSH|^~\\&|A|B|C|D|20250101||ZZZ^Z99^ZZZ_Z99|X1|P|2.5", "PID|1||1^^^H^MR"))
    t.ok(rc == 1 and "no map" in err, "a message type without a map fails clearly", err)


def test_mappings_check(t):
    rc, out, err = run("mappings", "check")
    t.ok(rc == 0 and "no errors" in out, "the shipped mappings check clean", out + err)
    tmp = tempfile.mkdtemp()
    try:
        os.makedirs(os.path.join(tmp, "segments"))
        with open(os.path.join(MAPS, "segments", "PID-Patient.map")) as f:
            text = f.read()
        with open(os.path.join(tmp, "segments", "PID-Patient.map"), "w") as f:
            f.write(text + "nmae <- PID-5 as XPN[HumanName]\nbirthDate <- PID-7 as NOPE[date]\n")
        rc, out, err = run("mappings", "check", MAPS, tmp)
        n = text.count("\n") + 1
        t.ok(rc == 1 and re.search(r"PID-Patient\.map:%d:\d+: error: .*nmae" % n, out),
             "an unknown target path: file:line:col", out + err)
        t.ok(re.search(r"PID-Patient\.map:%d:\d+: error: .*NOPE" % (n + 1), out),
             "an unknown datatype map: file:line:col", out)
    finally:
        shutil.rmtree(tmp)


def store(srv, *args):
    return srv.fhirgate("store", *args)


def history(srv, ref):
    rc, out, err = store(srv, "resource", "--history", ref)
    return [l for l in out.splitlines() if " version " in l]


def test_ingest(t):
    rc, out, _ = run("convert", os.path.join(SYN, "01_adt_a01_admit.hl7"))
    b = json.loads(out)
    pid = resources(b, "Patient")[0]["id"]
    eid = resources(b, "Encounter")[0]["id"]
    with Server() as srv:
        files = [os.path.join(SYN, f) for f in
                 ("01_adt_a01_admit.hl7", "03_adt_a08_update.hl7", "04_adt_a03_discharge.hl7")]
        for f in files:
            rc, out, err = srv.fhirgate("send", "--port", str(srv.port), "-q", f)
            t.ok(rc == 0 and "AA=1" in out, "%s ACKed AA" % os.path.basename(f), out + err)
        t.ok(srv.wait_applied(), "their resources are applied (writer.apply_delay)")
        rc, out, _ = store(srv, "resources")
        counts = dict(l.split() for l in out.splitlines())
        t.eq((counts.get("Patient"), counts.get("Encounter")), ("1", "1"),
             "A01, A08, A03 of one patient: one Patient and one Encounter")
        t.eq(len(history(srv, "Patient/" + pid)), 3, "the Patient has three versions")
        t.eq(len(history(srv, "Encounter/" + eid)), 3, "the Encounter has three versions")
        rc, out, _ = store(srv, "resource", "Encounter/" + eid)
        enc = json.loads(out.split("\n", 1)[1])
        t.eq(enc.get("status"), "finished", "after the A03 the Encounter is finished")
        # The same A03 again, under a new MSH-10 so it is not a retransmission: no new versions.
        with open(files[2], "rb") as f:
            again = f.read().replace(b"|MSG00003|", b"|MSG00003B|")
        c = srv.client()
        ack = c.roundtrip(again)
        c.close()
        t.ok(ack.code in ("AA", "CA"), "a repeat of the A03 is accepted", repr(ack))
        # its new MessageHeader and Provenance wait for the deferred apply: made before the
        # versions are counted and before the index entries are (they raced the stats below)
        t.ok(srv.wait_applied(), "the repeat's resources are applied")
        t.eq(len(history(srv, "Patient/" + pid)), 3, "an unchanged Patient gets no new version")
        t.eq(len(history(srv, "Encounter/" + eid)), 3, "an unchanged Encounter gets no new version")

        c = srv.client()
        ack = c.roundtrip(hl7("MSH|^~\\&|A|B|C|D|20250101||ZZZ^Z99^ZZZ_Z99|NOMAP1|P|2.5",
                              "PID|1||1^^^H^MR"))
        c.close()
        t.ok(ack.code == "AE" and "200" in (ack.field("ERR", 3) or ""),
             "a message type without a map: AE with code 200", repr(ack))
        rc, out, _ = store(srv, "dead")
        t.ok(" map " in out and "no map" in out, "... and a dead letter at stage map", out)
        rc, out, _ = srv.fhirgate("store", "verify")
        t.eq(rc, 0, "store verify is clean after ingest with resources")
        rc, before, _ = store(srv, "stats")
        rc, out, err = store(srv, "reindex")
        t.ok(rc == 0 and re.search(r"^\d+ resources reindexed$", out, re.M),
             "store reindex rebuilds every resource's index entries", out + err)
        rc, after, _ = store(srv, "stats")
        entries = lambda s: re.search(r"^index entries\s+(\d+)", s, re.M).group(1)
        t.eq(entries(after), entries(before), "... to the same entries as ingest wrote")
        t.eq(re.search(r"^(\d+) resources reindexed$", out, re.M).group(1) if rc == 0 else None,
             re.search(r"^resources\s+(\d+)", before, re.M).group(1),
             "... every current resource once")
        rc, out, _ = srv.fhirgate("store", "verify")
        t.eq(rc, 0, "store verify is clean after reindex")


def test_unmapped_accept(t):
    with Server("mappings.unmapped=accept") as srv:
        c = srv.client()
        ack = c.roundtrip(hl7("MSH|^~\\&|A|B|C|D|20250101||ZZZ^Z99^ZZZ_Z99|NOMAP2|P|2.5",
                              "PID|1||1^^^H^MR"))
        c.close()
        t.eq(ack.code, "AA", "mappings.unmapped=accept: AA")
        rc, out, _ = store(srv, "dead")
        t.ok("no map" in out, "... still with a dead letter for replay", out)


def test_store_and_forward(t):
    with Server("mappings.dir=", "audit.messages=off") as srv:
        rc, out, err = srv.fhirgate("send", "--port", str(srv.port), "-q",
                                    os.path.join(SYN, "06_oru_r01_vitals.hl7"))
        t.ok(rc == 0 and "errors=0" in out, "mappings.dir empty: messages are accepted",
             out + err)
        rc, out, _ = store(srv, "stats")
        t.ok(re.search(r"^messages\s+1$", out, re.M) and re.search(r"^resources\s+0$", out, re.M),
             "... stored raw, without resources", out)


def test_reload(t):
    site = tempfile.mkdtemp()
    os.makedirs(os.path.join(site, "segments"))
    pid_map = os.path.join(site, "segments", "PID-Patient.map")
    with open(os.path.join(MAPS, "segments", "PID-Patient.map")) as f:
        shipped = f.read()
    try:
        with Server("mappings.site_dir=" + site, "mappings.watch_interval=100ms") as srv:
            msg = open(os.path.join(SYN, "01_adt_a01_admit.hl7"), "rb").read()

            def patient_after(control_id):
                c = srv.client()
                ack = c.roundtrip(msg.replace(b"|MSG00001|", ("|%s|" % control_id).encode()))
                c.close()
                rc, out, _ = run("convert", os.path.join(SYN, "01_adt_a01_admit.hl7"))
                pid = resources(json.loads(out), "Patient")[0]["id"]
                srv.wait_applied()
                rc, out, _ = store(srv, "resource", "Patient/" + pid)
                return ack, json.loads(out.split("\n", 1)[1])

            ack, p = patient_after("R1")
            t.ok(ack.code in ("AA", "CA") and "language" not in p,
                 "before the override: no Patient.language", json.dumps(p)[:300])
            with open(pid_map, "w") as f:
                f.write(shipped + "language = \"nl\"\n")
            time.sleep(1.0)
            ack, p = patient_after("R2")
            t.ok(p.get("language") == "nl", "a site override is picked up without a restart",
                 srv.read_log()[-1500:])
            with open(pid_map, "w") as f:
                f.write(shipped + "language = \"nl\"\nthis is not a mapping line\n")
            time.sleep(1.0)
            log = srv.read_log()
            t.ok("reload failed" in log and re.search(r"PID-Patient\.map:\d+:\d+", log),
                 "a broken mapping file is logged with file:line:col", log[-1500:])
            ack, p = patient_after("R3")
            t.ok(ack.code in ("AA", "CA") and p.get("language") == "nl",
                 "after a failed reload the previous mappings stay in force", repr(ack))
    finally:
        shutil.rmtree(site)


def main():
    t = Tap()
    for fn in (test_convert, test_mappings_check, test_ingest, test_unmapped_accept,
               test_store_and_forward, test_reload):
        t.run(fn)
    t.done()


if __name__ == "__main__":
    main()
