#!/usr/bin/env python3
"""The RiskAssessment, Device and Provenance that scoring/risk.c builds for the PCE fixture
(tests/unit/test_risk --emit) validate against the official R4 JSON schema (ajv, as the golden
tests), and their XML form against the R4 XSD is left to the golden tests' converter."""

import importlib.util
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("run_golden", os.path.join(HERE, "run-golden.py"))
golden = importlib.util.module_from_spec(spec)
spec.loader.exec_module(golden)


def main():
    t = golden.Tap()
    out = os.path.join(golden.BUILD, "tests", "risk-out")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    emitter = os.path.join(golden.BUILD, "tests", "unit", "test_risk")
    p = subprocess.run([emitter, "--emit", out], capture_output=True, timeout=60)
    files = p.stdout.decode().split()
    if not t.ok(p.returncode == 0 and len(files) == 3, "test_risk --emit writes 3 resources",
                p.stderr.decode("utf-8", "replace")):
        t.done()
        return
    prefix = golden.npm_setup("node-risk")
    p = subprocess.run(["node", os.path.join(HERE, "validate.js"), golden.SCHEMA] + files,
                       capture_output=True, timeout=300,
                       env=dict(os.environ, NODE_PATH=os.path.join(prefix, "node_modules")))
    verdicts = {}
    for line in p.stdout.decode().splitlines():
        status, _, rest = line.partition(" ")
        verdicts[rest.split(":")[0]] = (status, line)
    for f in files:
        status, line = verdicts.get(f, ("missing", "no verdict: " + p.stderr.decode()))
        t.ok(status == "ok", "%s valid against the R4 JSON schema" % os.path.basename(f), line)
    t.done()


if __name__ == "__main__":
    sys.exit(main())
