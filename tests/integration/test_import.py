#!/usr/bin/env python3
"""`fhirgate import` through the real binary into a real store: the shipped legacy samples,
reject files in the input's format that can be fixed and imported again, re-import without new
versions, a CSV patient and an ADT^A01 of the same MRN as one Patient, HL7 v2 batch files, XML
with a DOCTYPE refused, and an import killed with SIGKILL that resumes to exactly N patients
(IMPORT_ROWS, default 200000)."""

import json
import glob
import os
import re
import signal
import struct
import subprocess
import tempfile
import time
import xml.dom.minidom

from harness import FHIRGATE, TOP_SRCDIR, Tap

MAPS = os.path.join(TOP_SRCDIR, "mappings", "hl7v2")
LEGACY = os.path.join(TOP_SRCDIR, "mappings", "legacy")
ROWS = int(os.environ.get("IMPORT_ROWS", "200000"))


class Store:
    def __init__(self, root):
        self.dir = os.path.join(root, "store")
        self.cfg = ["-c", "/dev/null", "--set", "mappings.dir=" + MAPS, "--set",
                    "store.data_dir=" + self.dir, "--set", "mappings.timezone=+0100"]

    def run(self, *args, timeout=120):
        p = subprocess.run([FHIRGATE] + list(args) + self.cfg, capture_output=True,
                           timeout=timeout)
        return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8",
                                                                                   "replace")

    def imp(self, *args, timeout=120):
        return self.run("import", *args, timeout=timeout)

    def counts(self):
        rc, out, _ = self.run("store", "resources")
        return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", out, re.M)}

    def stats(self):
        rc, out, _ = self.run("store", "stats")
        return {k: v for k, v in re.findall(r"^\s*(\w[\w ]*?)\s+(\d+)", out, re.M)
                if k in ("resources", "versions", "changes", "index entries")}


def copy(src, dst):
    with open(src, "rb") as f, open(dst, "wb") as g:
        g.write(f.read())


def test_samples(t, root):
    s = Store(root)
    pat = os.path.join(root, "patients.csv")
    copy(os.path.join(LEGACY, "patients.csv"), pat)
    rc, _, err = s.imp("--mapping", os.path.join(LEGACY, "patients.map"), pat)
    t.eq(rc, 1, "an import with a rejected record exits 1")
    t.ok(re.search(r"patients\.csv:6: rejected: column birth_date: not a date in the format "
                   r"%d/%m/%Y", err), "the reject names file, line, column and reason", err)
    t.ok("4 stored, 1 rejected" in err, "the summary counts stored and rejected records", err)
    t.ok("patients.csv: loading 4 records into the store (one transaction)" in err,
         "the progress says when the bulk load runs", err)
    rej = os.path.join(root, "patients.rejected.csv")
    with open(rej, "rb") as f:
        data = f.read()
    with open(pat, "rb") as f:
        lines = f.read().split(b"\r\n")
    t.eq(data, lines[0] + b"\r\n" + lines[5] + b"\r\n",
         "the reject file is the header and the rejected row, bytes as in the input")
    t.eq(s.counts().get("Patient"), 4, "4 Patients stored")
    before = s.stats()
    rc, _, err = s.imp("--mapping", os.path.join(LEGACY, "patients.map"), pat)
    t.ok("4 unchanged" in err, "re-import: every resource unchanged", err)
    t.eq(s.stats(), before, "re-import: same resources, versions, changes and index entries")

    fixed = os.path.join(root, "fixed.csv")
    with open(fixed, "wb") as f:
        f.write(data.replace(b"31/02/1990", b"28/02/1990"))
    rc, _, err = s.imp("--mapping", os.path.join(LEGACY, "patients.map"), fixed)
    t.ok(rc == 0, "the fixed reject file imports", err)
    t.eq(s.counts().get("Patient"), 5, "5 Patients after importing the fixed rejects")

    rc, _, err = s.imp("--mapping", os.path.join(LEGACY, "lab-results.map"),
                       os.path.join(LEGACY, "lab-results.csv"),
                       "--rejects", os.path.join(root, "lab.rejected.csv"))
    c = s.counts()
    t.eq((c.get("Observation"), c.get("Patient")), (4, 5),
         "lab results: 4 Observations, no Patient replaced by a reference-only one")
    rc, out, _ = s.run("store", "resource", "Patient/9908372cf611b884a1361109cd41a234")
    t.ok('"family":"M\u00fcller"' in out, "Patient 1001 keeps its name (Latin-1 decoded)", out)

    vis = os.path.join(root, "visits.xml")
    copy(os.path.join(LEGACY, "visits.xml"), vis)
    rc, _, err = s.imp("--mapping", os.path.join(LEGACY, "visits.map"), vis)
    t.ok(re.search(r"visits\.xml:19 \(record 3\): rejected: xpath h:admitted: not a date", err),
         "an XML reject names line, record and XPath", err)
    t.eq((s.counts().get("Encounter"), s.counts().get("Practitioner")), (2, 2),
         "visits: 2 Encounters, 2 Practitioners")
    rej = os.path.join(root, "visits.rejected.xml")
    doc = xml.dom.minidom.parse(rej)
    visits = doc.getElementsByTagNameNS("urn:example:his:export", "visit")
    t.ok(len(visits) == 1 and visits[0].getAttribute("number") == "V-880003" and
         doc.documentElement.localName == "export",
         "the XML reject file is a document with the record inside its ancestors",
         open(rej).read())
    with open(rej) as f:
        text = f.read().replace(">yesterday<", ">2024-03-19T22:10<")
    with open(rej, "w") as f:
        f.write(text)
    rc, _, err = s.imp("--mapping", os.path.join(LEGACY, "visits.map"), rej,
                       "--rejects", os.path.join(root, "again.xml"))
    t.eq((rc, s.counts().get("Encounter")), (0, 3), "the fixed XML reject file imports")

    # The CSV patient and an ADT^A01 of the same MRN and authority are one Patient.
    adt = os.path.join(root, "adt.hl7")
    with open(adt, "wb") as f:
        f.write(b"FHS|^~\\&|ADT|HOSP\rBHS|^~\\&|ADT|HOSP\r"
                b"MSH|^~\\&|ADT|HOSP|FHIRGATE|HOSP|20240320080000||ADT^A01^ADT_A01|M1|P|2.5\r"
                b"EVN|A01|20240320080000\rPID|1||1001^^^HOSP^MR||M\xc3\xbcller^J\xc3\xbcrgen||"
                b"19610403|M\rPV1|1|I|W3^101^1\r"
                b"MSH|^~\\&|ADT|HOSP|FHIRGATE|HOSP|20240320080100||ADT^A08^ADT_A01|M2|P|2.5\r"
                b"EVN|A08|20240320080100\rPID|1||7777^^^HOSP^MR||Nouveau^Patient||19990101|F\r"
                b"PV1|1|O\r"
                b"BTS|2\rFTS|1\r")
    rc, _, err = s.imp(adt)
    t.ok(rc == 0, "an HL7 v2 batch file imports", err)
    t.eq(s.counts().get("Patient"), 6, "the ADT patient with MRN 1001 is the CSV's Patient")
    rc, out, _ = s.run("store", "resource", "--history",
                       "Patient/9908372cf611b884a1361109cd41a234")
    t.ok("version 2 " in out and "version 3" not in out,
         "Patient 1001: a second version, from the ADT message", out[:500])
    rc, out, _ = s.run("store", "list")
    t.eq(len(out.strip().splitlines()), 2, "the batch's 2 messages are in the message log")
    rc, _, err = s.imp(adt)
    t.ok("2 unchanged" in err or "unchanged" in err, "re-importing the batch stores nothing new",
         err)
    rc, out, _ = s.run("store", "verify")
    t.ok(rc == 0, "store verify: no problems after the imports", out)


def test_refused_xml(t, root):
    s = Store(root)
    cases = {
        "doctype": b'<?xml version="1.0"?>\n<!DOCTYPE export [<!ENTITY x "boom">]>\n'
                   b'<h:export xmlns:h="urn:example:his:export"><h:visits/></h:export>\n',
        "external entity": b'<?xml version="1.0"?>\n<!DOCTYPE export SYSTEM "file:///etc/passwd">'
                           b'\n<h:export xmlns:h="urn:example:his:export">&x;</h:export>\n',
    }
    for name, data in cases.items():
        path = os.path.join(root, name.replace(" ", "_") + ".xml")
        with open(path, "wb") as f:
            f.write(data)
        rc, _, err = s.imp("--mapping", os.path.join(LEGACY, "visits.map"), path)
        t.ok(rc != 0 and "DOCTYPE" in err and "passwd" not in err and "root:" not in err,
             "XML with a %s is refused with a clear error" % name, err)


def test_dry_run(t, root):
    s = Store(root)
    rc, out, err = s.imp("--mapping", os.path.join(LEGACY, "patients.map"), "--dry-run",
                         "--explain", os.path.join(LEGACY, "patients.csv"))
    t.ok(rc == 0, "dry run of the first record exits 0", err)
    t.ok('Patient/9908372cf611b884a1361109cd41a234 name[0].family <- column("family")' in out,
         "--explain names the column that made an element", out[-1500:])
    t.ok(not os.path.exists(s.dir), "a dry run does not create the store")


def test_errors(t, root):
    s = Store(root)
    bad = os.path.join(root, "bad.map")
    with open(bad, "w") as f:
        f.write('reader csv\nseparator ";;"\n\nresource Patient[1]\n'
                'nmae[1].family <- column("family")\n')
    rc, _, err = s.imp("--mapping", bad, os.path.join(LEGACY, "patients.csv"))
    t.eq(rc, 2, "a broken record map exits 2")
    t.ok(re.search(r"bad\.map:2:11: error: expected one character in quotes", err),
         "file:line:col of a header error", err)
    t.ok(re.search(r"bad\.map:5:1: error: Patient has no element 'nmae'.*did you mean 'name'",
                   err), "file:line:col and a hint for a bad target", err)
    rc, _, err = s.imp("--mapping", os.path.join(LEGACY, "patients.map"), "--batch", "10",
                       "--bulk", "10", os.path.join(LEGACY, "patients.csv"))
    t.ok(rc == 2 and "--batch and --bulk exclude each other" in err,
         "--batch with --bulk is a usage error", err)
    rc, _, err = s.imp("--mapping", os.path.join(LEGACY, "patients.map"), "--bulk-memory", "0",
                       os.path.join(LEGACY, "patients.csv"))
    t.ok(rc == 2 and "--bulk-memory takes" in err, "--bulk-memory 0 is a usage error", err)
    rc, _, err = s.imp("--mapping", os.path.join(LEGACY, "visits.map"),
                       os.path.join(LEGACY, "patients.csv"))
    t.ok(rc == 1 and "import stopped" in err, "a CSV given to an XML map stops with an error",
         err)


def new_runs(s, since):
    """The bulk loader's run files written after `since`."""
    found = []
    for f in glob.glob(os.path.join(s.dir, "bulk-*", "run-??????")):
        try:
            if os.stat(f).st_mtime > since:
                found.append(f)
        except FileNotFoundError:
            pass
    return found


def run_file_sorted(path):
    """Whether a bulk loader run file (store/bulk.c) is whole and in the order LMDB wants:
    puts by res key then ordinal, each put's index entries by code then value (bytewise,
    shorter first, as Python compares bytes), as many as the header says."""
    with open(path, "rb") as f:
        d = f.read()
    if d[:8] != b"FGBULK2\n" or len(d) < 40:
        return False
    nputs, nents, _, put_bytes = struct.unpack_from(">QQQQ", d, 8)
    p, prev, seen = 40, None, 0
    for _ in range(nputs):
        length, ordinal, kl = struct.unpack_from(">IQH", d, p)
        cur = (d[p + 14:p + 14 + kl], ordinal)
        if prev is not None and not prev < cur:
            return False
        q = p + 14 + kl
        (bl,) = struct.unpack_from(">I", d, q)
        q += 4 + bl
        (n,) = struct.unpack_from(">H", d, q)
        q += 2
        entries = []
        for _ in range(n):
            (cl,) = struct.unpack_from(">H", d, q)
            (vl,) = struct.unpack_from(">H", d, q + 2 + cl)
            entries.append((d[q + 2:q + 2 + cl], d[q + 4 + cl:q + 4 + cl + vl]))
            q += 4 + cl + vl
        if q != p + length or entries != sorted(set(entries)):
            return False
        seen += n
        prev, p = cur, p + length
    return p == 40 + put_bytes == len(d) and seen == nents


def kill_resume(t, root, mode, rows):
    """Kills an import with SIGKILL once a third of the rows are committed, resumes it, and
    checks that exactly `rows` Patients with one version each result. mode: the options that
    choose how it writes (bulk loads of a few runs each, or batches)."""
    s = Store(root)
    csv = os.path.join(root, "big.csv")
    with open(csv, "wb") as f:
        subprocess.run(["python3", os.path.join(TOP_SRCDIR, "tests", "bench", "gen-patients.py"),
                        str(rows)], stdout=f, check=True)
    args = [FHIRGATE, "import", "-q", "--mapping", os.path.join(LEGACY, "patients.map")] + mode
    start = time.time()
    p = subprocess.Popen(args + [csv] + s.cfg, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # kill -9 once a good part is committed
    killed_at = 0
    bulk = "--bulk" in mode
    seen = None
    while p.poll() is None and time.time() - start < 600:
        time.sleep(0.05 if bulk else 0.2)
        if seen is None:
            killed_at = s.counts().get("Patient", 0)
            if killed_at >= rows // 3:
                seen = time.time()
        # bulk: then wait for two run files of the next load (synced, in the checkpoint)
        if seen is not None and (not bulk or len(new_runs(s, seen)) >= 2):
            p.send_signal(signal.SIGKILL)
            break
    p.wait()
    killed_at = s.counts().get("Patient", 0)
    what = " ".join(mode)
    t.ok(p.returncode == -signal.SIGKILL and 0 < killed_at < rows,
         "%s: import killed with SIGKILL midway (%d of %d committed)" % (what, killed_at, rows),
         "rc %s" % p.returncode)
    runs = new_runs(s, seen or start)
    if bulk:
        bad = [f for f in runs if not run_file_sorted(f)]
        t.ok(runs and not bad, "bulk: the run files left are complete and sorted", bad)
    rc, _, err = s.imp("-q", "--mapping", os.path.join(LEGACY, "patients.map"), *mode, csv,
                       timeout=1200)
    m = re.search(r"resumed after record (\d+)", err)
    t.ok(rc == 0 and m and int(m.group(1)) >= killed_at,
         "%s: the second run resumes (%d run files were left)" % (what, len(runs)), err)
    if bulk:
        t.ok(len(runs) >= 2 and int(m.group(1)) > killed_at,
             "bulk: it resumed after the records in run files, not at the last load", err)
    t.eq(s.counts().get("Patient"), rows, "%s: exactly %d Patients after the resume" % (what, rows))
    st = s.stats()
    t.eq(int(st["versions"]), rows, "%s: no record stored twice (one version each)" % what)
    t.eq(int(st["index entries"]), 17 * rows, "%s: 17 index entries per Patient" % what)
    rc, out, _ = s.run("store", "verify", timeout=600)
    t.ok(rc == 0, "%s: store verify after kill and resume" % what, out[-500:])
    t.eq(glob.glob(os.path.join(s.dir, "bulk-*")), [], "%s: no run files left" % what)
    rc, _, err = s.imp("--mapping", os.path.join(LEGACY, "patients.map"), *mode, csv,
                       timeout=1200)
    t.ok(rc == 0 and "%d unchanged" % rows in err,
         "%s: importing the file again changes nothing" % what, err[-300:])
    t.eq(s.stats(), st, "%s: same resources, versions, changes and index entries" % what)
    # The disk the store holds: its pages and a margin for the next transactions (four times
    # the most one grew it), not four times the largest load: a bulk load reserves for itself
    # and does not count (it did: 1760 MiB held for 923 MiB of pages here).
    _, out, _ = s.run("store", "stats")
    used = int(re.search(r"^used\s+(\d+)", out, re.M).group(1))
    held = os.stat(os.path.join(s.dir, "data.mdb")).st_blocks * 512
    if "--bulk" in mode:
        t.ok(held < used * 3 // 2, "%s: the store file holds %d MiB of disk for %d MiB of pages"
             % (what, held >> 20, used >> 20))
    print("# %s, %d rows: kill, resume and checks took %.1f s" % (what, rows, time.time() - start))


def test_kill_resume_bulk(t, root):
    # loads of 40,000 records sorted in 8 MiB: each load has several run files, so the kill
    # comes while run files wait for their load, or during a load
    kill_resume(t, root, ["--bulk", str(max(ROWS // 5, 1)), "--bulk-memory", "8"], ROWS)


def test_kill_resume_batch(t, root):
    kill_resume(t, root, ["--batch", "20000"], ROWS // 2)


def main():
    t = Tap()
    for fn in (test_samples, test_refused_xml, test_dry_run, test_errors, test_kill_resume_bulk,
               test_kill_resume_batch):
        with tempfile.TemporaryDirectory(prefix="fhirgate-import-") as root:
            t.run(fn, root)
    t.done()


if __name__ == "__main__":
    main()
