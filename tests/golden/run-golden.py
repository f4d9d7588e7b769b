#!/usr/bin/env python3
"""Golden tests: every corpus message converts with the shipped mappings to exactly the
committed expected Bundle (tests/golden/expected/...), every produced resource validates against
the official R4 JSON schema (ajv, installed from npm into the build directory), and the XML form
of every Bundle validates against the R4 XSD (xmllint). Messages whose type has no shipped map
yet are reported as TAP skips. GOLDEN_UPDATE=1 rewrites the expected files (review the diff!)."""

import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import DATA, FHIRGATE, TOP_SRCDIR, Tap  # noqa: E402

GOLDEN = os.path.join(TOP_SRCDIR, "tests", "golden")
EXPECTED = os.path.join(GOLDEN, "expected")
SCHEMA = os.path.join(DATA, "fhir", "fhir.schema.json")
XSD = os.path.join(DATA, "fhir", "xsd", "fhir-single.xsd")
BUILD = os.environ.get("top_builddir", ".")
WORK = os.path.join(BUILD, "tests", "golden-out")


def corpus():
    """(name, path) of every valid message file, in a stable order."""
    out = []
    for sub in ("hl7v2", "synthetic"):
        root = os.path.join(DATA, sub)
        for dirpath, dirnames, files in os.walk(root):
            dirnames.sort()
            if "MALFORMED" in dirpath:
                continue
            for f in sorted(files):
                if f.endswith(".hl7"):
                    path = os.path.join(dirpath, f)
                    out.append((os.path.relpath(path, DATA), path))
    return out


def compare_expected(t, expected, out, label, update):
    """One check: out equals the committed file expected (GOLDEN_UPDATE=1 writes it first)."""
    if update:
        os.makedirs(os.path.dirname(expected), exist_ok=True)
        with open(expected, "wb") as f:
            f.write(out)
    try:
        with open(expected, "rb") as f:
            want = f.read()
    except OSError:
        want = None
    t.ok(want == out, "%s equals %s" % (label, os.path.relpath(expected, TOP_SRCDIR)),
         "missing expected file (GOLDEN_UPDATE=1 writes it)" if want is None else
         diff_hint(want, out))


def bundles(text):
    """The JSON documents of text, one after another (blank and # comment lines between)."""
    out, dec, pos = [], json.JSONDecoder(), 0
    while pos < len(text):
        while pos < len(text) and (text[pos].isspace() or text[pos] == "#"):
            if text[pos] == "#":
                pos = text.find("\n", pos) + 1 or len(text)
            else:
                pos += 1
        if pos < len(text):
            doc, pos = dec.raw_decode(text, pos)
            out.append(doc)
    return out


def npm_setup(name="node"):
    """ajv from npm, installed once into the build directory (the test setup), in
    tests/<name> (tests that may run at the same time use different names)."""
    prefix = os.path.join(BUILD, "tests", name)
    if not os.path.isdir(os.path.join(prefix, "node_modules", "ajv")):
        os.makedirs(prefix, exist_ok=True)
        for f in ("package.json", "package-lock.json"):
            shutil.copy(os.path.join(GOLDEN, f), prefix)
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=prefix,
                       check=True, stdout=subprocess.DEVNULL)
    return prefix


def convert(path, fmt):
    cfg = ["-c", "/dev/null", "--set", "mappings.dir=" + os.path.join(TOP_SRCDIR, "mappings",
                                                                     "hl7v2")]
    p = subprocess.run([FHIRGATE, "convert", "--format", fmt, path] + cfg, capture_output=True,
                       timeout=60)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def main():
    t = Tap()
    update = os.environ.get("GOLDEN_UPDATE") == "1"
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    produced = []
    xml_files = []
    for name, path in corpus():
        rc, out, err = convert(path, "json")
        if rc != 0 and ("no map" in err or "code 200" in err or "code 201" in err):
            print("ok %d - %s # SKIP no shipped map yet: %s" % (t.n + 1, name,
                                                               err.strip().splitlines()[-1]))
            t.n += 1
            continue
        if not t.ok(rc == 0, "%s converts" % name, err):
            continue
        expected = os.path.join(EXPECTED, name[:-4] + ".json")
        compare_expected(t, expected, out, "%s: Bundle" % name, update)
        # A batch file gives one Bundle per message: validate each on its own.
        docs = bundles(out.decode("utf-8"))
        for k, doc in enumerate(docs):
            out_path = os.path.join(WORK, name.replace("/", "__")[:-4] + ".%d.json" % k)
            with open(out_path, "w") as f:
                json.dump(doc, f)
            produced.append(("%s#%d" % (name, k + 1) if len(docs) > 1 else name, out_path))
        out_path = os.path.join(WORK, name.replace("/", "__")[:-4] + ".json")
        rc, xml, err = convert(path, "xml")
        if t.ok(rc == 0, "%s converts to XML" % name, err):
            import re
            parts = [x for x in re.split(rb"(?=<(?:\?xml|Bundle[ >]))", xml) if x.strip()]
            # an XML declaration belongs to the Bundle after it
            merged = []
            for x in parts:
                if merged and merged[-1].lstrip().startswith(b"<?xml") and b"<Bundle" not in merged[-1]:
                    merged[-1] += x
                else:
                    merged.append(x)
            for k, x in enumerate(merged):
                xp = out_path[:-5] + ".%d.xml" % k
                with open(xp, "wb") as f:
                    f.write(x)
                xml_files.append(("%s#%d" % (name, k + 1) if len(merged) > 1 else name, xp))

    if produced:
        prefix = npm_setup()
        p = subprocess.run(["node", os.path.join(GOLDEN, "validate.js"), SCHEMA] +
                           [p for _, p in produced], capture_output=True,
                           env=dict(os.environ, NODE_PATH=os.path.join(prefix, "node_modules")),
                           timeout=600)
        lines = {}
        for line in p.stdout.decode().splitlines():
            status, _, rest = line.partition(" ")
            lines[rest.split(":")[0]] = (status, line)
        for name, out_path in produced:
            status, line = lines.get(out_path, ("missing", "no verdict: " + p.stderr.decode()))
            t.ok(status == "ok", "%s: every resource valid against the R4 JSON schema" % name,
                 line)
    if xml_files:
        p = subprocess.run(["xmllint", "--noout", "--nonet", "--schema", XSD] +
                           [x for _, x in xml_files], capture_output=True, timeout=600)
        err = p.stderr.decode("utf-8", "replace")
        for name, xp in xml_files:
            t.ok((xp + " validates") in err, "%s: XML Bundle valid against the R4 XSD" % name,
                 "\n".join(l for l in err.splitlines() if xp in l)[:2000])
    t.done()


def diff_hint(want, got):
    import difflib
    d = difflib.unified_diff(want.decode("utf-8", "replace").splitlines(),
                             got.decode("utf-8", "replace").splitlines(), "expected", "got",
                             lineterm="", n=2)
    return "\n".join(list(d)[:40])


if __name__ == "__main__":
    main()
