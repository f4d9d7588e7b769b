#!/usr/bin/env python3
"""The import drop folder (import.watch_dir) of a running server: a CSV dropped there is
imported through import.mapping and moved to done/, an HL7 v2 file through the v2 maps, a file
with a bad row goes to failed/ with its reject file, a file still being written (*.part) waits,
a non-HL7 file without import.mapping is refused, and an import interrupted by a server stop
resumes after the restart to exactly every row once.
TAP on stdout."""

import http.client
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import TOP_SRCDIR, Server, Tap, adt, free_port  # noqa: E402

LEGACY = os.path.join(TOP_SRCDIR, "mappings", "legacy")


def get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", path, headers={"Accept": "application/fhir+json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, json.loads(data) if data else None


def wait_for(fn, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    return None


def drop(folder, name, data):
    """Writes name.part, then renames it: how a pushing system should deliver."""
    tmp = os.path.join(folder, name + ".part")
    with open(tmp, "wb") as f:
        f.write(data)
    past = time.time() - 5
    os.utime(tmp, (past, past))
    os.rename(tmp, os.path.join(folder, name))


def t_drop_folder(t):
    port = free_port()
    with Server("http.listen=127.0.0.1:%d" % port, "scoring.models_dir=") as srv:
        folder = os.path.join(srv.tmp, "drop")
        os.makedirs(folder)
        srv.stop()
        srv.sets += ["import.watch_dir=" + folder,
                     "import.mapping=" + os.path.join(LEGACY, "patients.map"),
                     "mappings.timezone=+0100"]
        srv.start()
        for sub in ("processing", "done", "failed", "logs"):
            # made by the watcher's thread, which may start after the listeners
            t.ok(wait_for(lambda: os.path.isdir(os.path.join(folder, sub)), 10.0),
                 "drop folder: %s/ created" % sub)

        # a file still being written waits
        part = os.path.join(folder, "late.csv.part")
        with open(part, "wb") as f:
            f.write(b"mrn;authority;family\n")
        with open(os.path.join(LEGACY, "patients.csv"), "rb") as f:
            csv = f.read()
        drop(folder, "patients.csv", csv)
        done = wait_for(lambda: os.path.exists(os.path.join(folder, "failed", "patients.csv"))
                        or os.path.exists(os.path.join(folder, "done", "patients.csv")))
        t.ok(done, "the dropped CSV is taken and moved on")
        # the sample has a bad date row on purpose: failed/ with the reject file
        t.ok(os.path.exists(os.path.join(folder, "failed", "patients.csv")),
             "a file with a rejected record goes to failed/", os.listdir(folder))
        rejected = [n for n in os.listdir(os.path.join(folder, "failed")) if "rejected" in n]
        t.ok(rejected, "its reject file is beside it in failed/", os.listdir(
            os.path.join(folder, "failed")))
        log = os.path.join(folder, "logs", "patients.csv.log")
        t.ok(os.path.exists(log), "the import's output is in logs/")
        st, doc = get(port, "/fhir/Patient?identifier=1001&_summary=count")
        t.eq((st, doc.get("total")), (200, 1), "the good rows are stored: Patient 1001")
        t.ok(os.path.exists(part), "a *.part file is left alone")

        # a good CSV: done/
        lines = csv.split(b"\n")
        good = b"\n".join([lines[0], lines[1]]) + b"\n"
        drop(folder, "one.csv", good.replace(b"1001;", b"2001;"))
        t.ok(wait_for(lambda: os.path.exists(os.path.join(folder, "done", "one.csv"))),
             "a clean CSV goes to done/", os.listdir(folder))
        st, doc = get(port, "/fhir/Patient?identifier=2001&_summary=count")
        t.eq(doc.get("total"), 1, "... and its Patient is stored")

        # HL7 v2 through the v2 maps
        drop(folder, "feed.hl7", adt("DROP1", pid_name="DROP^HL7").replace(
            b"12345^^^HOSP^MR", b"77777^^^HOSP^MR"))
        t.ok(wait_for(lambda: os.path.exists(os.path.join(folder, "done", "feed.hl7"))),
             "an .hl7 file is imported through the v2 maps", os.listdir(folder))
        st, doc = get(port, "/fhir/Patient?identifier=77777&_summary=count")
        t.eq(doc.get("total"), 1, "... and its Patient is stored")
        t.ok("level=error" not in srv.read_log(), "no error in the server log",
             srv.read_log()[-2000:])

        # stopped mid-import: the file goes back in line and resumes after a restart
        rows = 30000
        big = [lines[0]] + [b"%d;HOSP;Big;Row;01/01/1970;F;;;;;" % (500000 + i)
                            for i in range(rows)]
        drop(folder, "big.csv", b"\n".join(big) + b"\n")
        t.ok(wait_for(lambda: os.path.exists(os.path.join(folder, "processing", "big.csv"))),
             "the big file is being imported")

        def some_committed():
            # a batch's rows are searchable once its transaction, which holds the file's
            # checkpoint, has committed (a fixed wait failed on a loaded machine: nothing
            # committed yet, so the second run started over)
            st, doc = get(port, "/fhir/Patient?family=Big&_summary=count")
            return st == 200 and (doc.get("total") or 0) > 0

        t.ok(wait_for(some_committed, 60), "a first batch of it is committed")
        t.eq(srv.stop(), 0, "the server stops cleanly while an import runs")
        t.ok(os.path.exists(os.path.join(folder, "big.csv")),
             "the interrupted file is back in the drop folder", os.listdir(folder))
        srv.start()
        t.ok(wait_for(lambda: os.path.exists(os.path.join(folder, "done", "big.csv")), 120),
             "after a restart it is imported to the end", os.listdir(folder))
        st, doc = get(port, "/fhir/Patient?family=Big&_summary=count")
        t.eq(doc.get("total"), rows, "exactly every row once")
        with open(os.path.join(folder, "logs", "big.csv.log")) as f:
            t.ok("resumed" in f.read(), "the second run resumed from the checkpoint")
        t.eq(srv.stop(), 0, "the server stops cleanly")

    # without import.mapping, a CSV is refused
    port = free_port()
    with Server("http.listen=127.0.0.1:%d" % port) as srv:
        folder = os.path.join(srv.tmp, "drop")
        os.makedirs(folder)
        srv.stop()
        srv.sets += ["import.watch_dir=" + folder]
        srv.start()
        drop(folder, "x.csv", b"a;b\n1;2\n")
        t.ok(wait_for(lambda: os.path.exists(os.path.join(folder, "failed", "x.csv"))),
             "no import.mapping: a CSV goes to failed/")
        t.ok("import.mapping" in srv.read_log(), "... and the log says why")


def main():
    t = Tap()
    t.run(t_drop_folder)
    t.done()


if __name__ == "__main__":
    main()
