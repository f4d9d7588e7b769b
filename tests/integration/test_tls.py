#!/usr/bin/env python3
"""TLS on the MLLP and HTTP listeners against the real binary: TLS 1.2 and 1.3, old versions
refused, wrong CAs, mutual TLS (required, optional, expired and foreign client certificates),
the address and certificate-subject allow-lists, reload of the certificate on SIGHUP while a
connection stays up, `fhirgate send --tls`, and bad TLS material at start. The certificates come
from etc/make-demo-certs, run into a temporary folder. Python 3 standard library only."""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

from harness import DATA, FHIRGATE, TOP_SRCDIR, Client, Server, Tap, adt, free_port

CERTS = None  # the folder of demo certificates, made in main()


def cert(name):
    return os.path.join(CERTS, name)


def context(ca="ca.pem", client=None, version=None):
    """A verifying client context (host name checked), optionally with a client certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cert(ca))
    if client:
        ctx.load_cert_chain(cert(client + ".pem"), cert(client + ".key"))
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


class TlsClient(Client):
    """harness.Client over TLS."""

    def __init__(self, port, ctx, timeout=10.0):
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        self.buf = b""


def tls_roundtrip(port, ctx, control_id):
    """(ack or None, error text or None): one message over a new TLS connection. Refusals show
    as a failed handshake, or (TLS 1.3 client certificates) as an alert or close on read."""
    c = None
    try:
        c = TlsClient(port, ctx, timeout=5.0)
        return c.roundtrip(adt(control_id)), None
    except (ssl.SSLError, OSError) as e:
        return None, "%s: %s" % (type(e).__name__, e)
    finally:
        if c is not None:
            c.close()


def is_aa(ack, control_id):
    return ack is not None and ack.code == "AA" and ack.control_id == control_id


class TlsServer(Server):
    """A server with a plain MLLP listener (for wait_ready), a TLS MLLP listener, an HTTPS
    listener and no plain HTTP; lines are added to its config file."""

    def __init__(self, *lines, **kw):
        super().__init__("http.listen=", **kw)
        self.tls_port = free_port()
        self.https_port = free_port()
        self.lines = ["mllp.tls.listen = 127.0.0.1:%d" % self.tls_port,
                      "http.tls.listen = 127.0.0.1:%d" % self.https_port,
                      "mllp.tls.cert = %s" % cert("server.pem"),
                      "mllp.tls.key = %s" % cert("server.key"),
                      "http.tls.cert = %s" % cert("server.pem"),
                      "http.tls.key = %s" % cert("server.key")] + list(lines)
        with open(self.conf) as f:
            self.base_conf = f.read()
        self.write_conf()

    def wait_ready(self, timeout=15.0):
        """The plain port, then the TLS listeners of the config (they open one after
        another)."""
        super().wait_ready(timeout)
        deadline = time.time() + timeout
        listen = {}
        for line in self.lines:
            key, _, value = line.partition("=")
            if key.strip() in ("mllp.tls.listen", "http.tls.listen") and value.strip():
                listen[key.strip()] = value.strip().split(",")[0]
        for addr in listen.values():
            host, _, port = addr.rpartition(":")
            host = host.strip("[]")
            while True:
                try:
                    socket.create_connection((host, int(port)), timeout=0.2).close()
                    break
                except OSError:
                    if time.time() > deadline or self.proc.poll() is not None:
                        raise RuntimeError("%s not listening:\n%s" % (addr, self.read_log()))
                    time.sleep(0.05)

    def write_conf(self, *more):
        with open(self.conf, "w") as f:
            f.write(self.base_conf + "\n".join(self.lines + list(more)) + "\n")

    def reload(self, *more, expect="configuration reloaded"):
        """Rewrites the config with more lines, sends SIGHUP, waits for the log line."""
        before = self.read_log().count(expect)
        self.write_conf(*more)
        self.signal(signal.SIGHUP)
        deadline = time.time() + 10
        while time.time() < deadline and self.read_log().count(expect) <= before:
            time.sleep(0.05)
        return self.read_log().count(expect) > before


def https_get(port, ctx, path):
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request("GET", path, headers={"Accept": "application/fhir+json"})
        r = conn.getresponse()
        return r.status, r.read(), conn.sock.version()
    finally:
        conn.close()


# ---- one server: no client certificates ----

def test_versions(t, srv):
    for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        c = TlsClient(srv.tls_port, context(version=version))
        got = c.sock.version()
        cipher = c.sock.cipher()[0]
        ack = c.roundtrip(adt("TLSVER-" + name))
        c.close()
        t.eq(got, name, "MLLP handshake with %s" % name)
        t.ok(is_aa(ack, "TLSVER-" + name), "a message over %s is ACKed AA" % name, repr(ack))
        t.ok("CBC" not in cipher and "RC4" not in cipher and "DES" not in cipher,
             "%s cipher is an AEAD suite (%s)" % (name, cipher))
        status, body, hv = https_get(srv.https_port, context(version=version),
                                     "/fhir/Patient?identifier=12345")
        t.ok(status == 200 and json.loads(body).get("resourceType") == "Bundle" and hv == name,
             "FHIR search over HTTPS with %s: 200 and a Bundle" % name, (status, body[:300], hv))
    status, body, _ = https_get(srv.https_port, context(), "/fhir/metadata")
    t.ok(status == 200 and b"CapabilityStatement" in body, "GET /fhir/metadata over HTTPS",
         (status, body[:300]))


def test_old_versions_refused(t, srv):
    for version, name in ((ssl.TLSVersion.TLSv1_1, "TLS 1.1"), (ssl.TLSVersion.TLSv1, "TLS 1.0")):
        ctx = context()
        try:
            ctx.minimum_version = ctx.maximum_version = version
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        except (ValueError, ssl.SSLError) as e:
            print("ok %d - # SKIP the local OpenSSL cannot offer %s (%s)" % (t.n + 1, name, e))
            t.n += 1
            continue
        for port, what in ((srv.tls_port, "MLLP"), (srv.https_port, "HTTPS")):
            raw = socket.create_connection(("127.0.0.1", port), timeout=5)
            try:
                ctx.wrap_socket(raw, server_hostname="127.0.0.1").close()
                t.ok(False, "%s: a %s handshake is refused" % (what, name))
            except ssl.SSLError as e:
                if "NO_PROTOCOLS_AVAILABLE" in str(e) or "no protocols available" in str(e):
                    print("ok %d - # SKIP the local OpenSSL will not try %s" % (t.n + 1, name))
                    t.n += 1
                else:
                    t.ok(True, "%s: a %s handshake is refused (%s)" % (what, name, e.reason))
            finally:
                raw.close()


def test_wrong_ca(t, srv):
    ack, err = tls_roundtrip(srv.tls_port, context(ca="other-ca.pem"), "WRONGCA")
    t.ok(ack is None and err and "CERTIFICATE_VERIFY_FAILED" in err,
         "a client trusting another CA refuses the server's certificate", err)
    ctx = context()
    try:
        raw = socket.create_connection(("127.0.0.1", srv.tls_port), timeout=5)
        ctx.wrap_socket(raw, server_hostname="fhirgate.example.org").close()
        t.ok(False, "a certificate for localhost does not pass for another host name")
    except ssl.SSLCertVerificationError:
        t.ok(True, "a certificate for localhost does not pass for another host name")


def test_plain_and_tls_coexist(t, srv):
    c = srv.client()
    ack = c.roundtrip(adt("PLAIN1"))
    c.close()
    t.ok(is_aa(ack, "PLAIN1"), "the plain MLLP listener still works next to the TLS one")
    # A plain client on the TLS port gets no ACK.
    c = Client(srv.tls_port, timeout=3)
    try:
        c.send(adt("PLAINONTLS"))
        ack = c.recv_ack(timeout=3)
    except OSError:
        ack = None
    c.close()
    t.ok(ack is None, "plain MLLP on the TLS port gets no ACK")


def test_send_tls(t, srv):
    f = os.path.join(DATA, "synthetic", "01_adt_a01_admit.hl7")
    rc, out, err = srv.fhirgate("send", "--tls", "--ca", cert("ca.pem"), "-p", str(srv.tls_port),
                                "-q", f)
    t.ok(rc == 0 and "AA=1" in out, "fhirgate send --tls --ca sends a file and gets AA", out + err)
    rc, out, err = srv.fhirgate("send", "--tls", "--ca", cert("ca.pem"), "-q", f)
    t.ok(rc == 0 and "AA=1" in out, "fhirgate send --tls defaults to the mllp.tls.listen address",
         out + err)
    rc, out, err = srv.fhirgate("send", "--tls", "--ca", cert("other-ca.pem"), "-p",
                                str(srv.tls_port), "-q", f)
    t.ok(rc == 2 and "certificate verify failed" in err,
         "fhirgate send --tls refuses a server its CA did not sign", out + err)
    rc, out, err = srv.fhirgate("send", "--tls", "--ca", cert("ca.pem"), "-H", "localhost", "-p",
                                str(srv.tls_port), "-q", f)
    t.ok(rc == 0, "fhirgate send --tls checks the host name (localhost is in the certificate)",
         out + err)
    rc, out, err = srv.fhirgate("send", "--tls", "--insecure", "-p", str(srv.tls_port), "-q", f)
    t.ok(rc == 0 and "warning" in err and "--insecure" in err,
         "fhirgate send --tls --insecure sends, with a warning", out + err)


# ---- mutual TLS ----

def test_client_auth_require(t):
    with TlsServer("mllp.tls.ca = %s" % cert("ca.pem"), "mllp.tls.client_auth = require",
                   "http.tls.ca = %s" % cert("ca.pem"), "http.tls.client_auth = require") as srv:
        for version, vname in ((ssl.TLSVersion.TLSv1_2, "TLS 1.2"),
                               (ssl.TLSVersion.TLSv1_3, "TLS 1.3")):
            ack, err = tls_roundtrip(srv.tls_port, context(client="client", version=version),
                                     "MTLS-OK")
            t.ok(is_aa(ack, "MTLS-OK"), "required client certificate from the CA (%s): AA" % vname,
                 err)
            for client, what in ((None, "no client certificate"),
                                 ("other-client", "a client certificate from another CA"),
                                 ("expired", "an expired client certificate")):
                ack, err = tls_roundtrip(srv.tls_port, context(client=client, version=version),
                                         "MTLS-BAD")
                t.ok(ack is None, "client certificate required, %s (%s): refused" % (what, vname),
                     repr(ack))
        status, _, _ = https_get(srv.https_port, context(client="client"), "/fhir/metadata")
        t.eq(status, 200, "HTTPS with a required client certificate: 200")
        try:
            https_get(srv.https_port, context(), "/fhir/metadata")
            t.ok(False, "HTTPS without the required client certificate is refused")
        except (ssl.SSLError, OSError, http.client.HTTPException):
            t.ok(True, "HTTPS without the required client certificate is refused")
        rc, out, err = srv.fhirgate("send", "--tls", "--ca", cert("ca.pem"), "--cert",
                                    cert("client.pem"), "--key", cert("client.key"), "-q",
                                    os.path.join(DATA, "synthetic", "01_adt_a01_admit.hl7"))
        t.ok(rc == 0 and "AA=1" in out, "fhirgate send --cert --key: mutual TLS, AA", out + err)
        log = srv.read_log()
        t.ok("TLS handshake failed" in log, "failed handshakes are logged", log[-2000:])


def test_client_auth_optional(t):
    with TlsServer("mllp.tls.ca = %s" % cert("ca.pem"), "mllp.tls.client_auth = optional") as srv:
        ack, err = tls_roundtrip(srv.tls_port, context(), "OPT-NONE")
        t.ok(is_aa(ack, "OPT-NONE"), "optional client certificate, none sent: AA", err)
        ack, err = tls_roundtrip(srv.tls_port, context(client="client"), "OPT-GOOD")
        t.ok(is_aa(ack, "OPT-GOOD"), "optional client certificate, a good one: AA", err)
        ack, err = tls_roundtrip(srv.tls_port, context(client="other-client"), "OPT-BAD")
        t.ok(ack is None, "optional client certificate, one from another CA: refused", repr(ack))


# ---- allow-lists ----

def test_cidr_allow(t):
    with TlsServer("mllp.allow = 10.0.0.0/8") as srv:
        c = srv.client(timeout=3)
        try:
            c.send(adt("CIDR-REFUSED"))
            ack = c.recv_ack(timeout=3)
        except OSError:
            ack = None
        c.close()
        t.ok(ack is None, "mllp.allow = 10.0.0.0/8 refuses 127.0.0.1 (plain MLLP)", repr(ack))
        ack, err = tls_roundtrip(srv.tls_port, context(), "CIDR-REFUSED-TLS")
        t.ok(ack is None, "... and on the TLS listener", repr(ack))
        deadline = time.time() + 5
        while time.time() < deadline and srv.read_log().count("not in mllp.allow") < 2:
            time.sleep(0.05)
        log = srv.read_log()
        t.ok(log.count("refused: address not in mllp.allow") >= 2 and "CIDR-REFUSED" not in log,
             "refusals are logged (without message data)", log[-2000:])
        status, _, _ = https_get(srv.https_port, context(), "/fhir/metadata")
        t.eq(status, 200, "mllp.allow does not apply to HTTP")
        t.ok(srv.reload("mllp.allow = 10.0.0.0/8, 127.0.0.0/8, ::1"), "reload with 127.0.0.0/8")
        c = srv.client()
        ack = c.roundtrip(adt("CIDR-OK"))
        c.close()
        t.ok(is_aa(ack, "CIDR-OK"), "after the reload 127.0.0.1 is allowed", repr(ack))
        t.eq(srv.stop(), 0, "server exits 0")
        # Two refusals here, and the harness's readiness probes.
        m = re.search(r"refused=(\d+)", srv.read_log().split("final")[-1])
        t.ok(m is not None and int(m.group(1)) >= 2, "refusals are counted in the stats",
             srv.read_log()[-1500:])


def test_subject_allow(t):
    with TlsServer("mllp.tls.ca = %s" % cert("ca.pem"), "mllp.tls.client_auth = require",
                   "mllp.tls.allow_subjects = pharmacy-system") as srv:
        ack, err = tls_roundtrip(srv.tls_port, context(client="client2"), "SUBJ-CN")
        t.ok(is_aa(ack, "SUBJ-CN"), "allow_subjects by common name: allowed", err)
        ack, err = tls_roundtrip(srv.tls_port, context(client="client"), "SUBJ-NO")
        t.ok(ack is None, "a certificate whose subject is not listed is refused", repr(ack))
        deadline = time.time() + 5
        while time.time() < deadline and "not in mllp.tls.allow_subjects" not in srv.read_log():
            time.sleep(0.05)
        t.ok("certificate subject 'CN=lab-analyzer,O=fhirgate demo' not in "
             "mllp.tls.allow_subjects" in srv.read_log(), "the refused subject is logged",
             srv.read_log()[-2000:])
        t.ok(srv.reload("mllp.tls.allow_subjects = cn=LAB-ANALYZER,o=fhirgate demo",
                        expect="mllp.tls: certificate, key and CA reloaded"),
             "reload with a whole DN")
        ack, err = tls_roundtrip(srv.tls_port, context(client="client"), "SUBJ-DN")
        t.ok(is_aa(ack, "SUBJ-DN"), "allow_subjects by whole DN (case-insensitive): allowed", err)
        ack, err = tls_roundtrip(srv.tls_port, context(client="client2"), "SUBJ-CN2")
        t.ok(ack is None, "... and the common name no longer listed is refused", repr(ack))


def test_ipv6(t):
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError as e:
        print("ok %d - # SKIP no IPv6 loopback (%s)" % (t.n + 1, e))
        t.n += 1
        return
    port6 = free_port()
    with TlsServer("mllp.tls.listen = [::1]:%d" % port6, "mllp.allow = ::1") as srv:
        raw = socket.create_connection(("::1", port6), timeout=5)
        c = TlsClient.__new__(TlsClient)
        c.sock = context().wrap_socket(raw, server_hostname="::1")
        c.buf = b""
        ack = c.roundtrip(adt("V6-OK"))
        c.close()
        t.ok(is_aa(ack, "V6-OK"), "TLS over IPv6 ([::1], certificate names ::1), allowed by "
             "mllp.allow = ::1: AA", repr(ack))
        c = srv.client(timeout=3)
        try:
            c.send(adt("V6-REFUSED"))
            ack = c.recv_ack(timeout=3)
        except OSError:
            ack = None
        c.close()
        t.ok(ack is None, "... while 127.0.0.1 is refused", repr(ack))


def test_handshake_timeout(t):
    with TlsServer("mllp.read_timeout = 1s") as srv:
        raw = socket.create_connection(("127.0.0.1", srv.tls_port), timeout=10)
        start = time.time()
        try:
            got = raw.recv(100)
        except OSError:
            got = b""
        took = time.time() - start
        raw.close()
        t.ok(got == b"" and 0.5 < took < 8,
             "a client that never starts the handshake is closed after mllp.read_timeout",
             "got %r after %.1fs" % (got, took))
        deadline = time.time() + 5
        while time.time() < deadline and "TLS handshake timeout" not in srv.read_log():
            time.sleep(0.05)
        t.ok("TLS handshake timeout" in srv.read_log(), "the handshake timeout is logged",
             srv.read_log()[-1500:])


# ---- reload ----

def test_reload_certificate(t):
    tmp = tempfile.mkdtemp(prefix="fhirgate-tls-reload-")
    live_cert, live_key = os.path.join(tmp, "live.pem"), os.path.join(tmp, "live.key")
    shutil.copy(cert("server.pem"), live_cert)
    shutil.copy(cert("server.key"), live_key)
    der = {n: ssl.PEM_cert_to_DER_cert(open(cert(n + ".pem")).read())
           for n in ("server", "server2")}
    srv = TlsServer()
    srv.lines = [x for x in srv.lines if not x.startswith(("mllp.tls.cert", "mllp.tls.key"))] + [
        "mllp.tls.cert = %s" % live_cert, "mllp.tls.key = %s" % live_key]
    srv.write_conf()
    try:
        srv.start()
        old = TlsClient(srv.tls_port, context())
        t.ok(old.sock.getpeercert(binary_form=True) == der["server"], "served: the first cert")
        t.ok(is_aa(old.roundtrip(adt("RELOAD-1")), "RELOAD-1"), "first connection: AA")
        shutil.copy(cert("server2.pem"), live_cert)
        shutil.copy(cert("server2.key"), live_key)
        t.ok(srv.reload(expect="mllp.tls: certificate, key and CA reloaded"),
             "SIGHUP reloads the certificate", srv.read_log()[-1500:])
        new = TlsClient(srv.tls_port, context())
        t.ok(new.sock.getpeercert(binary_form=True) == der["server2"],
             "a new connection gets the new certificate")
        t.ok(is_aa(new.roundtrip(adt("RELOAD-2")), "RELOAD-2"), "new connection: AA")
        t.ok(is_aa(old.roundtrip(adt("RELOAD-3")), "RELOAD-3"),
             "the connection opened before the reload keeps working")
        new.close()
        # A broken reload (the first key with the second certificate) keeps the context.
        shutil.copy(cert("server.key"), live_key)
        t.ok(srv.reload(expect="the previous certificate stays in force"),
             "a reload with a key that does not match is refused and logged",
             srv.read_log()[-1500:])
        t.ok("does not match the certificate" in srv.read_log() and live_key in srv.read_log(),
             "the error names the key file", srv.read_log()[-1500:])
        new = TlsClient(srv.tls_port, context())
        t.ok(new.sock.getpeercert(binary_form=True) == der["server2"] and
             is_aa(new.roundtrip(adt("RELOAD-4")), "RELOAD-4"),
             "after the failed reload the last good certificate is still served")
        new.close()
        t.ok(is_aa(old.roundtrip(adt("RELOAD-5")), "RELOAD-5"), "and the old connection too")
        old.close()
        t.eq(srv.stop(), 0, "server exits 0")
    finally:
        srv.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


# ---- start-up errors ----

def test_bad_material_at_start(t):
    cases = (
        ("mllp.tls.cert", "/nonexistent/fhirgate/server.pem", "/nonexistent/fhirgate/server.pem"),
        ("mllp.tls.key", cert("server2.key"), cert("server2.key")),  # does not match server.pem
        ("http.tls.cert", cert("ca.key"), cert("ca.key")),  # not a certificate
        ("mllp.tls.client_auth", "require", "mllp.tls.ca"),  # without a CA
    )
    for key, value, named in cases:
        srv = TlsServer("%s = %s" % (key, value))
        try:
            p = subprocess.run([FHIRGATE, "serve"] + srv.args(), capture_output=True, timeout=30)
            err = p.stderr.decode("utf-8", "replace")
            t.ok(p.returncode != 0 and named in err,
                 "start with %s = %s: exits non-zero naming %s" % (key, os.path.basename(value),
                                                                   named), err)
        finally:
            srv.cleanup()
    srv = TlsServer("mllp.allow = 10.1.0.0/8")
    try:
        p = subprocess.run([FHIRGATE, "serve"] + srv.args(), capture_output=True, timeout=30)
        err = p.stderr.decode("utf-8", "replace")
        t.ok(p.returncode != 0 and "mllp.allow" in err and "10.1.0.0/8" in err,
             "a bad mllp.allow is a config error", err)
    finally:
        srv.cleanup()


def main():
    global CERTS
    t = Tap()
    tmp = tempfile.mkdtemp(prefix="fhirgate-certs-")
    try:
        CERTS = os.path.join(tmp, "certs")
        p = subprocess.run(["sh", os.path.join(TOP_SRCDIR, "etc", "make-demo-certs"), CERTS],
                           capture_output=True, timeout=120)
        if not t.ok(p.returncode == 0, "etc/make-demo-certs makes the demo certificates",
                    p.stderr.decode("utf-8", "replace")):
            t.done()
        srv = TlsServer()
        srv.start()
        try:
            for fn in (test_versions, test_old_versions_refused, test_wrong_ca,
                       test_plain_and_tls_coexist, test_send_tls):
                t.run(fn, srv)
            t.eq(srv.stop(), 0, "server exits 0 on SIGTERM")
        finally:
            srv.cleanup()
        for fn in (test_client_auth_require, test_client_auth_optional, test_cidr_allow,
                   test_subject_allow, test_ipv6, test_handshake_timeout, test_reload_certificate,
                   test_bad_material_at_start):
            t.run(fn)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    t.done()


if __name__ == "__main__":
    main()
