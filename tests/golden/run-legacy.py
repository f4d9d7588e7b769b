#!/usr/bin/env python3
"""Golden tests of the legacy record maps shipped in mappings/legacy/: each sample file converts
(`fhirgate import --dry-run`, every record) to exactly the committed expected output
(tests/golden/expected/legacy/NAME.out: one Bundle per record, rejects on stderr), and every
Bundle and resource validates against the official R4 JSON schema (ajv, as run-golden.py).
GOLDEN_UPDATE=1 rewrites the expected files (review the diff!)."""

import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import DATA, FHIRGATE, TOP_SRCDIR, Tap  # noqa: E402

FHIRGATE = os.path.abspath(FHIRGATE)
TOP_SRCDIR = os.path.abspath(TOP_SRCDIR)
DATA = os.path.abspath(DATA)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import importlib.util  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "run_golden", os.path.join(os.path.dirname(os.path.abspath(__file__)), "run-golden.py"))
run_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_golden)

LEGACY = os.path.join(TOP_SRCDIR, "mappings", "legacy")
EXPECTED = os.path.join(TOP_SRCDIR, "tests", "golden", "expected", "legacy")
SCHEMA = os.path.join(DATA, "fhir", "fhir.schema.json")
BUILD = os.environ.get("top_builddir", ".")
# Its own folder: run-golden.py empties tests/golden-out when it starts, maybe while this runs.
WORK = os.path.join(os.path.abspath(BUILD), "tests", "golden-legacy-out")

# (record map, sample file, rejected records the sample has on purpose)
CASES = [("patients.map", "patients.csv", 1),
         ("lab-results.map", "lab-results.csv", 2),
         ("visits.map", "visits.xml", 1)]


def main():
    t = Tap()
    update = os.environ.get("GOLDEN_UPDATE") == "1"
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    produced = []
    for mapping, sample, nrejects in CASES:
        p = subprocess.run([FHIRGATE, "import", "--mapping", mapping, "--dry-run", "--records",
                            "0", sample, "-c", "/dev/null", "--set",
                            "mappings.dir=" + os.path.join(TOP_SRCDIR, "mappings", "hl7v2"),
                            "--set", "mappings.timezone=+0100"],
                           cwd=LEGACY, capture_output=True, timeout=60)
        err = p.stderr.decode("utf-8", "replace")
        out = p.stdout
        t.eq(p.returncode, 1 if nrejects else 0, "%s: exit status" % sample)
        t.eq(err.count(": rejected: "), nrejects, "%s: %d records rejected" % (sample, nrejects))
        expected = os.path.join(EXPECTED, sample + ".out")
        run_golden.compare_expected(t, expected, out, "%s: output" % sample, update)
        docs = run_golden.bundles(out.decode("utf-8"))
        t.ok(len(docs) > 0, "%s: Bundles produced" % sample, err)
        for k, doc in enumerate(docs):
            path = os.path.join(WORK, "%s.%d.json" % (sample, k))
            with open(path, "w") as f:
                json.dump(doc, f)
            produced.append(("%s#%d" % (sample, k + 1), path))
    if produced:
        prefix = run_golden.npm_setup()
        p = subprocess.run(["node", os.path.join(TOP_SRCDIR, "tests", "golden", "validate.js"),
                            SCHEMA] + [x for _, x in produced], capture_output=True,
                           env=dict(os.environ, NODE_PATH=os.path.join(prefix, "node_modules")),
                           timeout=600)
        verdict = {}
        for line in p.stdout.decode().splitlines():
            status, _, rest = line.partition(" ")
            verdict[rest.split(":")[0]] = (status, line)
        for name, path in produced:
            status, line = verdict.get(path, ("missing", "no verdict: " + p.stderr.decode()))
            t.ok(status == "ok", "%s: valid against the R4 JSON schema" % name, line)
    t.done()


if __name__ == "__main__":
    main()
