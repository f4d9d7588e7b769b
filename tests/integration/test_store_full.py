#!/usr/bin/env python3
"""A full disk: the store on a small tmpfs is filled by MLLP messages. The server must answer
with errors (AE with an ERR segment over MLLP, an OperationOutcome over HTTP), never crash
(with store.writemap = on, LMDB writes into a sparse file's mapping, where a page without a
disk block would be a SIGBUS), and keep every message it AA'd; a bulk import stops with a clear
error and leaves a store that verifies. Both store.writemap modes. And converted messages whose
resources wait for the deferred apply: none of them is lost when the apply cannot be made.
Needs root to mount the tmpfs; skipped otherwise."""

import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request

from harness import FHIRGATE, TOP_SRCDIR, Server, Tap, free_port, hl7

FS_MB = 64
BIG = 256 * 1024  # bytes of text per message


def mount_tmpfs(path):
    if os.geteuid() != 0:
        return "not root"
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm" % FS_MB, "tmpfs", path],
                       capture_output=True, text=True)
    return None if p.returncode == 0 else (p.stderr.strip() or "mount failed")


def small_fs():
    """A new folder with a FS_MB tmpfs mounted on it: (path, None), or (None, why not)."""
    mnt = tempfile.mkdtemp(prefix="fhirgate-full-")
    why = mount_tmpfs(mnt)
    if why is not None:
        os.rmdir(mnt)
        return None, why
    return mnt, None


def drop_fs(mnt):
    subprocess.run(["umount", mnt], capture_output=True)
    shutil.rmtree(mnt, ignore_errors=True)


def big_message(i):
    text = ("%06d" % i) * (BIG // 6)
    return hl7("MSH|^~\\&|APP|FAC|RECV|RFAC|20250101120000||ADT^A08^ADT_A01|FULL%05d|P|2.5" % i,
               "EVN|A08|20250101120000", "PID|1||%d^^^HOSP^MR||DOE^JOHN" % i,
               "PV1|1|I|WARD^101^1", "NTE|1||" + text)


def http_get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def send_until_full(srv, message):
    """Sends message(0), message(1), ... until the third answer with the same error code (or
    no answer); returns the numbers ACKed AA, every code, and the last error ACK."""
    c = srv.client(timeout=30)
    acked, codes, err = [], [], None
    for i in range(4 * FS_MB * 1024 * 1024 // BIG):
        ack = c.roundtrip(message(i))
        if ack is None:
            break
        codes.append(ack.code)
        if ack.code == "AA":
            acked.append(i)
        else:
            err = ack
            if codes.count(ack.code) >= 3:
                break
    c.close()
    return acked, codes, err


def fill(t, writemap):
    mnt, why = small_fs()
    if why is not None:
        return why
    hport = free_port()
    srv = Server("store.writemap=" + writemap, "mappings.dir=", "audit.messages=off",
                 "http.listen=127.0.0.1:%d" % hport, data_dir=os.path.join(mnt, "data"))
    try:
        srv.start()
        acked, codes, err = send_until_full(srv, big_message)
        acked = ["FULL%05d" % i for i in acked]
        mode = "writemap=%s: " % writemap
        t.ok(srv.proc.poll() is None, mode + "the server is alive after the disk filled up",
             "exit %s\n%s" % (srv.proc.poll(), srv.read_log()[-3000:]))
        t.ok(len(acked) > 10, mode + "messages were stored before the disk was full",
             "codes: %r" % codes[:20])
        t.ok(err is not None and err.code in ("AE", "AR") and err.seg("ERR") is not None,
             mode + "then the answer is an error ACK with an ERR segment",
             "last ack: %r" % (err,))
        # HTTP writes get an OperationOutcome, not a dropped connection.
        body = json.dumps({"resourceType": "Patient", "name": [{"family": "X" * 200000}]})
        req = urllib.request.Request("http://127.0.0.1:%d/fhir/Patient" % hport,
                                     data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/fhir+json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, out = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, out = e.code, e.read()
        t.ok(status >= 500 and b"OperationOutcome" in out,
             mode + "an HTTP write on the full disk gets an OperationOutcome",
             "status %d: %r" % (status, out[:300]))
        t.ok(srv.proc.poll() is None, mode + "the server is still alive after that",
             srv.read_log()[-2000:])
        srv.stop()
        stored = set(cid for _, _, cid in srv_list(srv))
        missing = [cid for cid in acked if cid not in stored]
        t.ok(not missing, mode + "every AA'd message is in the store (%d)" % len(acked),
             "missing: %r" % missing[:10])
    finally:
        srv.cleanup()
        drop_fs(mnt)
    return None


def big_patient(i):
    """An ADT whose Patient carries a 256 KiB address line: its resources fill the disk."""
    street = ("%06d" % i) * (BIG // 6)
    return hl7("MSH|^~\\&|APP|FAC|RECV|RFAC|20250101120000||ADT^A08^ADT_A01|DEF%05d|P|2.5" % i,
               "EVN|A08|20250101120000",
               "PID|1||DEF%05d^^^HOSP^MR||DOE^JANE||19800101|F|||%s^^CITY" % (i, street),
               "PV1|1|I|WARD^101^1")


def deferred_full(t):
    """Converted messages whose resources wait for the deferred apply (writer.apply_delay) fill
    the disk: the server answers errors and stays up, the apply at SIGTERM fails for want of
    space and keeps them in pend, and after the file system grows the next start applies every
    AA'd message's resources."""
    mnt, why = small_fs()
    if why is not None:
        return why
    hport = free_port()
    srv = Server("writer.apply_delay=60s", "audit.messages=off",
                 "http.listen=127.0.0.1:%d" % hport, data_dir=os.path.join(mnt, "data"))
    try:
        srv.start()
        acked, codes, _ = send_until_full(srv, big_patient)
        mode = "deferred apply: "
        t.ok(srv.proc.poll() is None and len(acked) > 10 and codes[-1] in ("AE", "AR"),
             mode + "messages were AA'd, then the full disk gave error ACKs; the server is up",
             "codes: %r\n%s" % (codes[-5:], srv.read_log()[-2000:]))
        # A read asks for the load, which cannot be made: the read still answers from what is
        # applied, and /readyz says the store fails.
        st, body = http_get(hport, "/fhir/Patient?identifier=DEF00000")
        t.eq(st, 200, mode + "a read while the load fails answers from what is applied")
        st, body = http_get(hport, "/readyz")
        t.ok(st == 503 and b"store:commit" in body, mode + "/readyz: 503, the store fails",
             "%d %r" % (st, body[:400]))
        t.eq(srv.stop(), 0, mode + "SIGTERM: exit 0")
        t.ok("deferred apply failed" in srv.read_log(),
             mode + "the apply at the stop failed for want of space and said so",
             srv.read_log()[-2000:])
        rc = subprocess.run(["mount", "-o", "remount,size=%dm" % (8 * FS_MB), mnt],
                            capture_output=True, text=True)
        t.ok(rc.returncode == 0, mode + "the file system grows", rc.stderr)
        srv.start()
        t.ok(srv.wait_applied(60), mode + "the next start applies what waited")
        rc, out, _ = srv.fhirgate("store", "resources")
        counts = dict(l.split() for l in out.splitlines() if len(l.split()) == 2)
        t.eq(int(counts.get("Patient", 0)), len(acked),
             mode + "one Patient for each AA'd message (%d)" % len(acked))
        rc, out, err = srv.fhirgate("store", "verify")
        t.ok(rc == 0, mode + "the store verifies", out + err)
    finally:
        srv.cleanup()
        drop_fs(mnt)
    return None


def srv_list(srv):
    return srv.stored_control_ids()


def import_full(t, writemap):
    """A bulk import into a store on the small file system: once with its run files filling the
    disk (8 MiB of sort memory), once with everything in memory so that the load's own pages do.
    It must stop with a clear error, not a crash, and leave a store that opens and verifies."""
    mnt, why = small_fs()
    if why is not None:
        return why
    work = tempfile.mkdtemp(prefix="fhirgate-full-csv-")
    try:
        csv = os.path.join(work, "patients.csv")
        with open(csv, "wb") as f:
            subprocess.run(["python3", os.path.join(TOP_SRCDIR, "tests", "bench",
                                                    "gen-patients.py"), "60000"],
                           stdout=f, check=True)
        for case, extra in (("run files", ["--bulk-memory", "8"]), ("the load", [])):
            data = os.path.join(mnt, "data-" + case.replace(" ", "-"))
            cfg = ["-c", "/dev/null", "--set", "store.data_dir=" + data,
                   "--set", "store.writemap=" + writemap,
                   "--set", "mappings.dir=" + os.path.join(TOP_SRCDIR, "mappings", "hl7v2")]
            p = subprocess.run([FHIRGATE, "import", "-q", "--mapping",
                                os.path.join(TOP_SRCDIR, "mappings", "legacy", "patients.map"),
                                csv] + extra + cfg, capture_output=True, text=True, timeout=600)
            mode = "writemap=%s, bulk import, %s fill the disk: " % (writemap, case)
            t.ok(p.returncode == 1 and re.search(r"full|No space left", p.stderr),
                 mode + "it stops with exit status 1 and says the disk is full",
                 "exit %d\n%s" % (p.returncode, p.stderr[-1500:]))
            v = subprocess.run([FHIRGATE, "store", "verify"] + cfg, capture_output=True,
                               text=True, timeout=300)
            t.ok(v.returncode == 0, mode + "the store opens and verifies afterwards",
                 v.stdout[-800:] + v.stderr[-800:])
            shutil.rmtree(data, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        drop_fs(mnt)
    return None


def main():
    t = Tap()
    for mode in ("on", "off"):
        why = fill(t, mode) or import_full(t, mode)
        if why is not None:
            print("1..0 # SKIP cannot mount a tmpfs (%s)" % why)
            return
    deferred_full(t)
    t.done()


if __name__ == "__main__":
    main()
