#!/usr/bin/env python3
"""fhir-kit-client (npm) against a running fhirgate, with R4 JSON-schema validation of every
resource it gets back. npm packages go into the build directory (npm ci), never the source."""

import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from harness import DATA, Server, free_port  # noqa: E402

BUILD = os.environ.get("top_builddir", ".")
SCHEMA = os.path.join(DATA, "fhir", "fhir.schema.json")


def npm_setup():
    prefix = os.path.join(BUILD, "tests", "conformance-node")
    if not os.path.isdir(os.path.join(prefix, "node_modules", "fhir-kit-client")):
        os.makedirs(prefix, exist_ok=True)
        for f in ("package.json", "package-lock.json"):
            shutil.copy(os.path.join(HERE, f), prefix)
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=prefix,
                       check=True, stdout=subprocess.DEVNULL)
    return prefix


def main():
    if shutil.which("node") is None or shutil.which("npm") is None:
        print("1..0 # SKIP node/npm not installed")
        return 0
    prefix = npm_setup()
    port = free_port()
    srv = Server("http.listen=127.0.0.1:%d" % port)
    try:
        srv.start()
        env = dict(os.environ, NODE_PATH=os.path.join(prefix, "node_modules"))
        p = subprocess.run(["node", os.path.join(HERE, "conformance.js"),
                            "http://127.0.0.1:%d/fhir" % port, SCHEMA], env=env, timeout=300)
        rc = p.returncode
    finally:
        srv.cleanup()
    return rc


if __name__ == "__main__":
    sys.exit(main())
