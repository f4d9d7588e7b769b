#!/usr/bin/env python3
"""Risk scoring against the real binary (docs/scoring.md § The hook): an ORU^R01 over MLLP gives
the patient a RiskAssessment (Pooled Cohort Equations, white/other woman of 55, total
cholesterol 213, HDL 50, SBP 120, non-smoker: 2.05%) with a versioned basis and a Provenance;
the same data again writes nothing; a new HDL value gives a new version. Also REST writes,
$score, `fhirgate score` offline, CDS Hooks (discovery, cards, feedback), a bad model dropped
into the folder at runtime, metrics, and a kill -9 between the commit and the scoring. TAP on
stdout."""

import datetime
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import FHIRGATE, TOP_SRCDIR, Server, Tap, free_port  # noqa: E402

MODELS = os.path.join(TOP_SRCDIR, "etc", "models")
TODAY = datetime.date.today()


def birth_for_age(age):
    """A birth date that makes someone `age` today (and for a while: not near a birthday)."""
    born = datetime.date(TODAY.year - age, 1, 1)
    if (TODAY.month, TODAY.day) < (1, 15):
        born = datetime.date(TODAY.year - age - 1, 6, 1)
    return born


def req(port, method, path, body=None, ctype="application/fhir+json"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Accept": "application/fhir+json"}
    if body is not None:
        headers["Content-Type"] = ctype
        body = json.dumps(body)
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    c.close()
    try:
        doc = json.loads(data) if data else None
    except ValueError:
        doc = None
    return r.status, doc, data


def oru(control_id, mrn, born, chol=213, hdl=50, sbp=120, smoker="266919005^Never smoker^SCT",
        lipids=True):
    """An ORU^R01 with a lipid panel, a systolic blood pressure and the smoking status, taken
    yesterday (UTC, with an offset so the time is kept)."""
    when = (TODAY - datetime.timedelta(days=1)).strftime("%Y%m%d") + "080000+0000"
    segs = ["MSH|^~\\&|LAB|HOSP|FHIRGATE|HOSP|%s||ORU^R01^ORU_R01|%s|P|2.5.1" % (when, control_id),
            "PID|1||%s^^^HOSP^MR||Doe^Jane||%s|F" % (mrn, born.strftime("%Y%m%d")),
            "OBR|1|ORD-%s|FIL-%s|57698-3^Lipid panel^LN|||%s" % (mrn, mrn, when)]
    obx = []
    if lipids:
        obx.append("NM|2093-3^Cholesterol total^LN||%s|mg/dL^mg/dL^UCUM" % chol)
        obx.append("NM|2085-9^HDL cholesterol^LN||%s|mg/dL^mg/dL^UCUM" % hdl)
    obx.append("NM|8480-6^Systolic blood pressure^LN||%s|mm[Hg]^mm[Hg]^UCUM" % sbp)
    obx.append("CWE|72166-2^Tobacco smoking status^LN||%s|" % smoker)
    for i, o in enumerate(obx, 1):
        segs.append("OBX|%d|%s|||||F|||%s" % (i, o, when))
    return "\r".join(segs) + "\r"


def patient_id(port, mrn):
    st, doc, _ = req(port, "GET", "/fhir/Patient?identifier=" + mrn)
    if st != 200 or not doc.get("entry"):
        return None
    return doc["entry"][0]["resource"]["id"]


def risk(port, pid, model):
    """The patient's RiskAssessment by model, or None."""
    st, doc, _ = req(port, "GET", "/fhir/RiskAssessment?subject=Patient/%s&_count=100" % pid)
    for e in (doc or {}).get("entry", []):
        r = e["resource"]
        if r["method"]["coding"][0]["code"] == model:
            return r
    return None


def wait_for(fn, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    return None


def metric(port, name):
    st, _, data = req(port, "GET", "/metrics")
    m = re.search(r"^%s (\d+)" % re.escape(name), data.decode(), re.M)
    return int(m.group(1)) if m else None


def work_pending(port):
    return metric(port, "fhirgate_store_work_pending")


def idle(port):
    return wait_for(lambda: work_pending(port) == 0 and metric(port, "fhirgate_writer_queue_jobs") == 0)


def start(models, data_dir=None, env=None):
    http_port = free_port()
    srv = Server("http.listen=127.0.0.1:%d" % http_port, "scoring.models_dir=" + models,
                 "mappings.watch_interval=100ms", data_dir=data_dir)
    old = dict(os.environ)
    os.environ.update(env or {})
    try:
        srv.start()
    finally:
        os.environ.clear()
        os.environ.update(old)
    srv.http = http_port
    wait_for(lambda: req(http_port, "GET", "/readyz")[0] == 200)
    return srv


def test_end_to_end(t, srv):
    port = srv.http
    born = birth_for_age(55)
    ack = srv.client().roundtrip(oru("E2E-1", "PCE55", born))
    t.eq(ack.code, "AA", "the ORU^R01 is accepted")
    pid = patient_id(port, "PCE55")
    t.ok(pid is not None, "its Patient is stored")
    ra = wait_for(lambda: risk(port, pid, "pce"))
    t.ok(ra is not None, "a RiskAssessment (pce) appears for the patient")
    if ra is None:
        return None
    p = ra["prediction"][0]["probabilityDecimal"]
    t.ok(abs(p - 0.0205) <= 0.001, "PCE white/other woman of 55: probability %s ~ 0.0205 "
         "(guideline 2.1%% +-0.1 pp)" % p)
    t.eq(ra["prediction"][0]["qualitativeRisk"]["text"], "low", "band: low (< 5%)")
    t.eq(ra["subject"]["reference"], "Patient/" + pid, "subject is the patient")
    basis = [b["reference"] for b in ra["basis"]]
    obs = [b for b in basis if b.startswith("Observation/")]
    t.eq(len(obs), 4, "basis: the 4 Observations (cholesterol, HDL, SBP, smoking)")
    t.ok(all(re.match(r"^(Observation|Patient)/[^/]+/_history/\d+$", b) for b in basis),
         "basis references are versioned")
    codes = set()
    for b in obs:
        st, o, _ = req(port, "GET", "/fhir/" + b)
        if st == 200:
            codes.add(o["code"]["coding"][0]["code"])
    t.eq(codes, {"2093-3", "2085-9", "8480-6", "72166-2"}, "each basis version reads back")
    st, prov, _ = req(port, "GET", "/fhir/Provenance?target=RiskAssessment/" + ra["id"])
    t.ok(st == 200 and prov.get("total", 0) >= 1, "a Provenance targets the RiskAssessment")
    dev = ra["performer"]["reference"]
    st, _, _ = req(port, "GET", "/fhir/" + dev)
    t.eq(st, 200, "the model's Device is stored (%s)" % dev)
    t.ok(risk(port, pid, "framingham") is not None, "the Framingham model scores too")
    t.eq(ra["meta"]["versionId"], "1", "first version")

    # The same data again: a resent message (dedupe), and the same content under a new MSH-10.
    srv.client().roundtrip(oru("E2E-1", "PCE55", born))
    ack = srv.client().roundtrip(oru("E2E-2", "PCE55", born))
    t.eq(ack.code, "AA", "the same results under a new control id are accepted")
    idle(port)
    time.sleep(0.3)
    ra2 = risk(port, pid, "pce")
    t.eq(ra2["meta"]["versionId"], "1", "unchanged inputs: no new RiskAssessment version")
    st, hist, _ = req(port, "GET", "/fhir/RiskAssessment/%s/_history" % ra["id"])
    t.eq(len(hist.get("entry", [])), 1, "its history has one version")

    # A new HDL value: a new version with another probability.
    ack = srv.client().roundtrip(oru("E2E-3", "PCE55", born, hdl=40))
    t.eq(ack.code, "AA", "a new HDL value is accepted")
    ra3 = wait_for(lambda: (lambda r: r if r and r["meta"]["versionId"] == "2" else None)(
        risk(port, pid, "pce")))
    t.ok(ra3 is not None, "a new HDL: RiskAssessment version 2")
    if ra3:
        p3 = ra3["prediction"][0]["probabilityDecimal"]
        t.ok(p3 != p and p3 > p, "lower HDL, higher risk: %s > %s" % (p3, p))
        t.ok(any("/_history/2" in b["reference"] for b in ra3["basis"]),
             "the basis names the HDL Observation's version 2")
    return pid


def test_rest_write(t, srv):
    port = srv.http
    born = birth_for_age(55).isoformat()
    when = (TODAY - datetime.timedelta(days=3)).isoformat()

    def obs(code, value, unit):
        return {"resource": {"resourceType": "Observation", "status": "final",
                             "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                             "subject": {"reference": "Patient/rest-pce"},
                             "effectiveDateTime": when,
                             "valueQuantity": {"value": value, "unit": unit,
                                               "system": "http://unitsofmeasure.org",
                                               "code": unit}},
                "request": {"method": "POST", "url": "Observation"}}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "id": "rest-pce", "gender": "male",
                      "birthDate": born},
         "request": {"method": "PUT", "url": "Patient/rest-pce"}},
        obs("2093-3", 213, "mg/dL"), obs("2085-9", 50, "mg/dL"), obs("8480-6", 120, "mm[Hg]"),
        {"resource": {"resourceType": "Observation", "status": "final",
                      "code": {"coding": [{"system": "http://loinc.org", "code": "72166-2"}]},
                      "subject": {"reference": "Patient/rest-pce"}, "effectiveDateTime": when,
                      "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct",
                                                           "code": "8517006"}]}},
         "request": {"method": "POST", "url": "Observation"}}]}
    st, _, _ = req(port, "POST", "/fhir", bundle)
    t.eq(st, 200, "a REST transaction with a man's data is accepted")
    ra = wait_for(lambda: risk(port, "rest-pce", "pce"))
    t.ok(ra is not None, "REST writes queue scoring too")
    if ra:
        p = ra["prediction"][0]["probabilityDecimal"]
        t.ok(abs(p - 0.0538) <= 0.001, "PCE white/other man of 55: %s ~ 0.0538" % p)
        t.eq(ra["prediction"][0]["qualitativeRisk"]["text"], "borderline", "band: borderline")
    # A REST delete of an input: rescored, and now without total cholesterol nothing scores.
    st, doc, _ = req(port, "GET", "/fhir/Observation?subject=Patient/rest-pce&code=2093-3")
    oid = doc["entry"][0]["resource"]["id"]
    before = metric(port, 'fhirgate_scoring_refused_inputs_total{model="pce"}') or 0
    st, _, _ = req(port, "DELETE", "/fhir/Observation/" + oid)
    t.eq(st, 204, "deleting the cholesterol Observation")
    t.ok(wait_for(lambda: (metric(port, 'fhirgate_scoring_refused_inputs_total{model="pce"}')
                           or 0) > before),
         "the delete queued scoring, refused for the missing input (counted)")


def test_score_op(t, srv, pid):
    port = srv.http
    st, doc, _ = req(port, "POST", "/fhir/Patient/%s/$score" % pid)
    t.eq(st, 200, "$score: 200")
    t.eq(doc and doc["type"], "collection", "$score answers a Bundle of type collection")
    models = sorted(e["resource"]["method"]["coding"][0]["code"] for e in doc.get("entry", [])
                    if e["resource"]["resourceType"] == "RiskAssessment")
    t.eq(models, ["framingham", "pce"], "one RiskAssessment per model")
    ra = risk(port, pid, "pce")
    t.eq(ra["meta"]["versionId"], "2", "$score with unchanged inputs writes no new version")
    st, doc, _ = req(port, "POST", "/fhir/Patient/%s/$score?model=pce" % pid)
    t.eq([e["resource"]["method"]["coding"][0]["code"] for e in doc["entry"]], ["pce"],
         "model=pce (query) scores with pce only")
    params = {"resourceType": "Parameters",
              "parameter": [{"name": "model", "valueString": "framingham"}]}
    st, doc, _ = req(port, "POST", "/fhir/Patient/%s/$score" % pid, params)
    t.ok(st == 200 and [e["resource"]["method"]["coding"][0]["code"] for e in doc["entry"]] ==
         ["framingham"], "model=framingham (Parameters) scores with framingham only")
    st, doc, _ = req(port, "POST", "/fhir/Patient/%s/$score?model=nope" % pid)
    t.eq(st, 400, "an unknown model: 400")
    st, doc, _ = req(port, "POST", "/fhir/Patient/nobody/$score")
    t.eq(st, 404, "an unknown patient: 404")
    st, _, _ = req(port, "GET", "/fhir/Patient/%s/$score" % pid)
    t.eq(st, 405, "GET $score: 405")
    # A patient without lipids.
    srv.client().roundtrip(oru("NOLIP-1", "NOLIP", birth_for_age(60), lipids=False))
    pid2 = wait_for(lambda: patient_id(port, "NOLIP"))
    st, doc, _ = req(port, "POST", "/fhir/Patient/%s/$score?model=pce" % pid2)
    t.eq(st, 422, "no lipids: 422")
    t.eq(doc and doc["resourceType"], "OperationOutcome", "an OperationOutcome")
    issue = (doc or {"issue": [{}]})["issue"][0]
    t.ok("total_cholesterol" in issue.get("diagnostics", "") and
         issue.get("expression") == ["total_cholesterol"],
         "naming the missing input: %s" % issue.get("diagnostics"))
    t.ok(risk(port, pid2, "pce") is None, "nothing is written for a model that cannot score")


def bundle_file(path, born, hdl=50, lipids=True):
    entries = [{"resource": {"resourceType": "Patient", "id": "offline", "gender": "female",
                             "birthDate": born}}]

    def q(code, v, unit, oid):
        entries.append({"resource": {
            "resourceType": "Observation", "id": oid, "meta": {"versionId": "3"},
            "status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": "Patient/offline"}, "effectiveDateTime": "2025-11-01",
            "valueQuantity": {"value": v, "unit": unit, "system": "http://unitsofmeasure.org",
                              "code": unit}}})
    if lipids:
        q("2093-3", 213, "mg/dL", "chol")
        q("2085-9", hdl, "mg/dL", "hdl")
    q("8480-6", 120, "mm[Hg]", "sbp")
    entries.append({"resource": {
        "resourceType": "Observation", "id": "smk", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "72166-2"}]},
        "subject": {"reference": "Patient/offline"}, "effectiveDateTime": "2025-11-01",
        "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct",
                                             "code": "266919005"}]}}})
    with open(path, "w") as f:
        json.dump({"resourceType": "Bundle", "type": "collection", "entry": entries}, f)
    return entries


def test_offline(t, models, tmp):
    path = os.path.join(tmp, "patient.json")
    bundle_file(path, "1970-06-15")
    base = [FHIRGATE, "score", "-c", "/dev/null", "--set", "scoring.models_dir=" + models]
    p = subprocess.run(base + ["--at", "2025-12-01", path], capture_output=True, timeout=60)
    t.eq(p.returncode, 0, "fhirgate score FILE: exit 0")
    doc = json.loads(p.stdout) if p.returncode == 0 else {"entry": []}
    ras = {e["resource"]["method"]["coding"][0]["code"]: e["resource"] for e in doc["entry"]}
    t.eq(sorted(ras), ["framingham", "pce"], "prints one RiskAssessment per model")
    pce = ras.get("pce", {"prediction": [{}], "basis": []})
    t.eq(pce["prediction"][0].get("probabilityDecimal"), 0.0205, "offline: 0.0205 at --at 2025-12-01")
    t.ok("Observation/hdl/_history/3" in [b["reference"] for b in pce["basis"]],
         "versions come from meta.versionId")
    p = subprocess.run(base + ["--model", "pce", "--at", "2025-12-01", path],
                       capture_output=True, timeout=60)
    t.ok(p.returncode == 0 and len(json.loads(p.stdout)["entry"]) == 1, "--model pce: one")
    p = subprocess.run(base + ["--at", "2031-12-01", path], capture_output=True, timeout=60)
    t.eq(p.returncode, 1, "data older than the look-back windows at --at: exit 1")
    t.ok(b"no score" in p.stderr and b"missing input" in p.stderr,
         "stderr says which input: %r" % p.stderr[:120])
    d = os.path.join(tmp, "folder")
    os.mkdir(d)
    for i, e in enumerate(bundle_file(os.path.join(tmp, "x.json"), "1970-06-15")):
        with open(os.path.join(d, "r%d.json" % i), "w") as f:
            json.dump(e["resource"], f)
    p = subprocess.run(base + ["--model", "pce", "--at", "2025-12-01", d], capture_output=True,
                       timeout=60)
    t.ok(p.returncode == 0 and
         json.loads(p.stdout)["entry"][0]["resource"]["prediction"][0]["probabilityDecimal"] ==
         0.0205, "a folder of resources scores the same")
    p = subprocess.run(base + ["--model", "nope", path], capture_output=True, timeout=60)
    t.eq(p.returncode, 2, "an unknown model: exit 2")


def test_cds(t, srv, pid, tmp):
    port = srv.http
    st, doc, _ = req(port, "GET", "/cds-services")
    t.eq(st, 200, "GET /cds-services: 200")
    svcs = {s["id"]: s for s in (doc or {}).get("services", [])}
    t.eq(sorted(svcs), ["framingham", "pce"], "one service per model in force (saps2 waits "
         "for its site code)")
    s = svcs.get("pce", {})
    t.eq(s.get("hook"), "patient-view", "hook patient-view")
    t.ok(s.get("prefetch", {}).get("patient") == "Patient/{{context.patientId}}" and
         "observations" in s.get("prefetch", {}), "prefetch templates")
    hook = {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "context": {"userId": "Practitioner/1", "patientId": pid}}
    st, doc, _ = req(port, "POST", "/cds-services/pce", hook, "application/json")
    t.eq(st, 200, "patient-view: 200")
    cards = (doc or {}).get("cards", [])
    t.eq(len(cards), 1, "one card")
    c = cards[0] if cards else {}
    t.ok(re.match(r"^10-year ASCVD risk \d+\.\d% \((low|borderline)\)$", c.get("summary", "")),
         "summary with the risk: %s" % c.get("summary"))
    t.ok(c.get("indicator") in ("info", "warning") and c.get("source", {}).get("label") ==
         "fhirgate" and "HDL cholesterol" in c.get("detail", ""), "indicator, source, detail")
    t.ok(len(c.get("summary", "")) < 140, "summary under 140 characters")
    # Prefetch: a patient the store does not have.
    entries = bundle_file(os.path.join(tmp, "pf.json"), birth_for_age(55).isoformat())
    obs = [e for e in entries if e["resource"]["resourceType"] == "Observation"]
    for e in obs:
        e["resource"]["effectiveDateTime"] = (TODAY - datetime.timedelta(days=2)).isoformat()
    pf = dict(hook, context={"patientId": "offline"},
              prefetch={"patient": entries[0]["resource"],
                        "observations": {"resourceType": "Bundle", "type": "searchset",
                                         "entry": obs},
                        "conditions": None})
    st, doc, _ = req(port, "POST", "/cds-services/pce", pf, "application/json")
    t.ok(st == 200 and doc["cards"][0]["summary"] == "10-year ASCVD risk 2.1% (low)",
         "prefetch is used: %s" % (doc or {}).get("cards"))
    pf["prefetch"]["observations"]["entry"] = [e for e in obs if e["resource"]["id"] != "hdl"]
    st, doc, _ = req(port, "POST", "/cds-services/pce", pf, "application/json")
    t.ok(st == 200 and "no score" in doc["cards"][0]["summary"] and
         "hdl" in doc["cards"][0]["summary"], "no HDL: a card naming the missing input")
    st, _, _ = req(port, "POST", "/cds-services/nope", hook, "application/json")
    t.eq(st, 404, "unknown service: 404")
    st, _, _ = req(port, "POST", "/cds-services/pce", {"hook": "order-sign", "context": {}},
                   "application/json")
    t.eq(st, 400, "another hook: 400")
    fb = {"feedback": [{"card": c.get("uuid", "x"), "outcome": "accepted",
                        "outcomeTimestamp": "2026-01-01T00:00:00Z"}]}
    st, _, _ = req(port, "POST", "/cds-services/pce/feedback", fb, "application/json")
    t.eq(st, 200, "feedback: 200")
    t.ok("feedback service=pce" in srv.read_log() and "Doe" not in srv.read_log(),
         "feedback is logged without patient data")


def test_bad_model(t, srv, models, pid):
    port = srv.http
    with open(os.path.join(models, "bad.pmml"), "w") as f:
        f.write('<PMML version="4.4" xmlns="http://www.dmg.org/PMML-4_4">\n<Header/>\n'
                '<TreeModel functionName="regression"/>\n</PMML>\n')
    shutil.copy(os.path.join(models, "pce.bind"), os.path.join(models, "bad.bind"))
    t.ok(wait_for(lambda: "bad.pmml:3" in srv.read_log()),
         "a bad model dropped in at runtime is refused with file:line")
    t.eq(metric(port, "fhirgate_scoring_models_loaded"), 2, "the good models stay in force")
    # A broken new version of a good model keeps the old one.
    with open(os.path.join(models, "pce.pmml"), "a") as f:
        f.write("<broken")
    t.ok(wait_for(lambda: "model pce: the previous version stays in force" in srv.read_log()),
         "a broken pce.pmml keeps the previous pce")
    ack = srv.client().roundtrip(oru("E2E-4", "PCE55", birth_for_age(55), hdl=60))
    ra = wait_for(lambda: (lambda r: r if r and r["meta"]["versionId"] == "3" else None)(
        risk(port, pid, "pce")))
    t.ok(ack.code == "AA" and ra is not None, "and the good models keep scoring")
    st, doc, _ = req(port, "GET", "/cds-services")
    t.eq(sorted(s["id"] for s in doc["services"]), ["framingham", "pce"], "CDS services too")


def test_metrics(t, srv):
    port = srv.http
    t.ok((metric(port, 'fhirgate_scoring_scores_written_total{model="pce"}') or 0) >= 3,
         "scores written by model in /metrics")
    t.ok((metric(port, 'fhirgate_scoring_refused_inputs_total{model="pce"}') or 0) >= 1,
         "refused inputs by model in /metrics")


def test_crash(t, models):
    srv = start(models, env={"FHIRGATE_TEST_SCORING_PAUSE": "1"})
    data_dir = srv.data_dir
    try:
        ack = srv.client().roundtrip(oru("CRASH-1", "CRASH55", birth_for_age(55)))
        t.eq(ack.code, "AA", "crash: the ORU is ACKed (scoring held back)")
        pid = patient_id(srv.http, "CRASH55")
        t.eq(work_pending(srv.http), 1, "one work item for the patient, committed with it")
        t.ok(risk(srv.http, pid, "pce") is None, "not scored yet")
        srv.kill9()
        srv2 = start(models, data_dir=data_dir)
        try:
            ra = wait_for(lambda: risk(srv2.http, pid, "pce"))
            t.ok(ra is not None and abs(ra["prediction"][0]["probabilityDecimal"] - 0.0205) <=
                 0.001, "after kill -9 and a restart the pending work item is scored")
            t.ok(wait_for(lambda: work_pending(srv2.http) == 0), "and the work item is gone")
        finally:
            srv2.cleanup()
    finally:
        srv.cleanup()


def test_import(t, srv, tmp):
    """Inputs that arrive by `fhirgate import` (another process, on the live server's store)
    are scored too: the import leaves work items, the server finds them."""
    born = birth_for_age(55)
    path = os.path.join(tmp, "lipids.hl7")
    with open(path, "w") as f:
        f.write(oru("IMP-1", "MRN-IMP", born))
    rc, out, err = srv.fhirgate("import", "-q", path)
    t.ok(rc == 0, "fhirgate import of an ORU with lipids into the live store", out + err)
    pid = wait_for(lambda: patient_id(srv.http, "MRN-IMP"))
    ra = wait_for(lambda: risk(srv.http, pid, "pce")) if pid else None
    p = ra["prediction"][0]["probabilityDecimal"] if ra else None
    t.ok(p is not None and abs(p - 0.0205) <= 0.001,
         "the imported patient gets its PCE RiskAssessment (p=%s)" % p)


def main():
    t = Tap()
    tmp = tempfile.mkdtemp(prefix="fhirgate-score-")
    models = os.path.join(tmp, "models")
    shutil.copytree(MODELS, models)
    srv = start(models)
    try:
        pid = test_end_to_end(t, srv)
        test_import(t, srv, tmp)
        test_rest_write(t, srv)
        if pid:
            test_score_op(t, srv, pid)
            test_cds(t, srv, pid, tmp)
        test_offline(t, MODELS, tmp)
        if pid:
            test_bad_model(t, srv, models, pid)
        test_metrics(t, srv)
        t.ok("saps2" in srv.read_log() and srv.proc.poll() is None,
             "saps2.bind (site code '?') only warns; the server runs")
    finally:
        srv.cleanup()
    fresh = os.path.join(tmp, "models2")
    shutil.copytree(MODELS, fresh)
    test_crash(t, fresh)
    shutil.rmtree(tmp, ignore_errors=True)
    t.done()


if __name__ == "__main__":
    main()
