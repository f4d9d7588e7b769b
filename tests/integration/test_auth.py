#!/usr/bin/env python3
"""SMART Backend Services authorization against the real binary: the token endpoint with
assertions signed by keys this test makes (ES384 and RS384, through tests/integration/jwt_sign
and the openssl CLI), every way an assertion or a bearer token can be wrong, scope enforcement
(v1 and v2), the patient compartment, operator scopes, Bundles, protected mode and the
production example config. TAP on stdout."""

import base64
import hashlib
import hmac
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import FHIRGATE, TOP_SRCDIR, Server, Tap, free_port  # noqa: E402

BUILDDIR = os.environ.get("top_builddir", ".")
JWT_SIGN = os.path.join(BUILDDIR, "tests", "integration", "jwt_sign")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def b64url(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_dec(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def genkey(path, kind):
    args = (["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"] if kind == "ec" else
            ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
    subprocess.run(["openssl", "genpkey"] + args + ["-out", path], check=True,
                   capture_output=True)


def jwk(path, kid):
    out = subprocess.run([JWT_SIGN, "--jwk", path, kid], check=True, capture_output=True)
    return json.loads(out.stdout)


def sign(path, claims, kid=None):
    """A JWS of claims signed with the PEM key (RS384 or ES384) by jwt_sign."""
    args = [JWT_SIGN, path] + ([kid] if kid else [])
    out = subprocess.run(args, input=json.dumps(claims).encode(), check=True,
                         capture_output=True)
    return out.stdout.decode().strip()


def sign_openssl_es384(path, claims, kid):
    """The same with the openssl CLI: DER ECDSA signature converted to raw r||s here."""
    head = b64url(json.dumps({"alg": "ES384", "typ": "JWT", "kid": kid}))
    body = b64url(json.dumps(claims))
    der = subprocess.run(["openssl", "dgst", "-sha384", "-sign", path],
                         input=("%s.%s" % (head, body)).encode(), check=True,
                         capture_output=True).stdout
    # SEQUENCE { INTEGER r, INTEGER s }, short or long form length.
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7f)
    ints = []
    for _ in range(2):
        assert der[i] == 2
        n = der[i + 1]
        ints.append(int.from_bytes(der[i + 2:i + 2 + n], "big"))
        i += 2 + n
    raw = ints[0].to_bytes(48, "big") + ints[1].to_bytes(48, "big")
    return "%s.%s.%s" % (head, body, b64url(raw))


class Api:
    def __init__(self, port):
        self.port = port
        self.host = "127.0.0.1:%d" % port
        self.token_url = "http://%s/auth/token" % self.host

    def req(self, method, path, body=None, token=None, headers=None, ctype="application/fhir+json"):
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Bearer " + token
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if body is not None and "Content-Type" not in h:
            h["Content-Type"] = ctype
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        c.close()
        doc = None
        if data and "json" in hdrs.get("content-type", ""):
            doc = json.loads(data)
        return r.status, hdrs, doc

    def token_raw(self, form):
        return self.req("POST", "/auth/token", urllib.parse.urlencode(form),
                        ctype="application/x-www-form-urlencoded")

    def assertion_claims(self, client_id, **over):
        now = int(time.time())
        c = {"iss": client_id, "sub": client_id, "aud": self.token_url, "exp": now + 240,
             "iat": now, "jti": str(uuid.uuid4())}
        c.update(over)
        return {k: v for k, v in c.items() if v is not None}

    def token(self, assertion, scope):
        return self.token_raw({"grant_type": "client_credentials",
                               "client_assertion_type": ASSERTION_TYPE,
                               "client_assertion": assertion, "scope": scope})


class Env:
    """Keys, the clients file and a server with authorization on."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="fhirgate-auth-")
        p = lambda n: os.path.join(self.dir, n)  # noqa: E731
        self.ec, self.rsa, self.pat, self.other, self.server_key = (
            p("ec.pem"), p("rsa.pem"), p("pat.pem"), p("other.pem"), p("server.pem"))
        for path, kind in ((self.ec, "ec"), (self.rsa, "rsa"), (self.pat, "ec"),
                           (self.other, "ec"), (self.server_key, "ec")):
            genkey(path, kind)
        with open(p("rsa-jwks.json"), "w") as f:
            json.dump({"keys": [jwk(self.rsa, "rsa1")]}, f)
        clients = {"clients": [
            {"client_id": "sys-ec", "jwks": {"keys": [jwk(self.ec, "ec1")]},
             "scope": "system/*.read system/*.write system/fhirgate.admin"},
            {"client_id": "obs-rsa", "jwks_file": "rsa-jwks.json",
             "scope": "system/Observation.rs system/Observation.c"},
            {"client_id": "pat-app", "jwks": {"keys": [jwk(self.pat, "pat1")]},
             "scope": "patient/*.rs", "patient": "p1"},
            {"client_id": "auditor", "jwks": {"keys": [jwk(self.other, "aud1")]},
             "scope": "system/AuditEvent.rs"},
        ]}
        self.clients = p("clients.json")
        with open(self.clients, "w") as f:
            json.dump(clients, f)
        self.port = free_port()
        self.srv = Server("http.listen=127.0.0.1:%d" % self.port, "auth.enabled=true",
                          "auth.clients=" + self.clients, "auth.signing_key=" + self.server_key,
                          "scoring.models_dir=" + os.path.join(TOP_SRCDIR, "etc", "models"))
        self.api = Api(self.port)

    def token_for(self, key, client, kid, scope):
        st, _, doc = self.api.token(sign(key, self.api.assertion_claims(client), kid), scope)
        if st != 200:
            raise RuntimeError("token for %s: %s %r" % (client, st, doc))
        return doc


def t_discovery(t, env):
    api = env.api
    for path in ("/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"):
        st, _, doc = api.req("GET", path)
        t.ok(st == 200 and doc["token_endpoint"] == api.token_url and
             "private_key_jwt" in doc["token_endpoint_auth_methods_supported"] and
             set(doc["token_endpoint_auth_signing_alg_values_supported"]) == {"RS384", "ES384"} and
             "client_credentials" in doc["grant_types_supported"] and
             "permission-v2" in doc["capabilities"], "smart-configuration at " + path, doc)
    st, _, doc = api.req("GET", "/fhir/metadata")
    sec = doc["rest"][0].get("security", {}) if doc else {}
    t.ok(st == 200 and sec.get("service", [{}])[0]["coding"][0]["code"] == "SMART-on-FHIR",
         "metadata without a token, with rest.security SMART-on-FHIR", sec)


def t_no_token(t, env):
    api = env.api
    st, h, doc = api.req("GET", "/fhir/Patient")
    t.eq((st, h.get("www-authenticate")), (401, 'Bearer realm="fhirgate"'),
         "no token: 401 with a bare Bearer challenge")
    t.ok(doc and doc["resourceType"] == "OperationOutcome", "401 carries an OperationOutcome", doc)
    for bad, name in (("garbage", "garbage"), ("a.b.c", "three junk parts"),
                      ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "alg none")):
        st, h, _ = api.req("GET", "/fhir/Patient", token=bad)
        t.ok(st == 401 and 'error="invalid_token"' in h.get("www-authenticate", ""),
             "bearer %s: 401 invalid_token" % name, (st, h))
    st, h, _ = api.req("GET", "/fhir/Patient", headers={"Authorization": "Basic dXNlcjpwdw=="})
    t.eq(st, 401, "Basic credentials: 401")


def t_token_flow(t, env):
    api = env.api
    claims = api.assertion_claims("sys-ec")
    st, h, doc = api.token(sign(env.ec, claims, "ec1"), "system/*.read system/*.write")
    t.ok(st == 200 and doc["token_type"] == "bearer" and doc["expires_in"] == 300 and
         doc["access_token"].count(".") == 2, "ES384 assertion: access token", doc)
    t.eq(h.get("cache-control"), "no-store", "token answer: Cache-Control no-store")
    t.eq(sorted(doc["scope"].split()), ["system/*.read", "system/*.write"], "granted scopes")
    tok = doc["access_token"]
    head = json.loads(b64url_dec(tok.split(".")[0]))
    body = json.loads(b64url_dec(tok.split(".")[1]))
    t.ok(head["alg"] == "ES384" and body["sub"] == "sys-ec" and body["client_id"] == "sys-ec" and
         body["aud"] == "http://%s/fhir" % api.host, "access token claims", (head, body))
    env.sys_token = tok
    for pid in ("p1", "p2"):
        st, _, _ = api.req("PUT", "/fhir/Patient/" + pid,
                           {"resourceType": "Patient", "id": pid, "gender": "other"}, token=tok)
        t.ok(st in (200, 201), "system token writes Patient/" + pid, st)
        st, _, doc = api.req("PUT", "/fhir/Observation/obs-" + pid, {
            "resourceType": "Observation", "id": "obs-" + pid, "status": "final",
            "code": {"text": "x"}, "subject": {"reference": "Patient/" + pid}}, token=tok)
        t.ok(st in (200, 201), "system token writes Observation/obs-" + pid, (st, doc))
    st, _, doc = api.req("GET", "/fhir/Patient/p1", token=tok)
    t.eq(st, 200, "system token reads")
    # The same flow with an assertion signed by the openssl CLI (DER -> r||s in Python).
    st, _, doc = api.token(sign_openssl_es384(env.ec, api.assertion_claims("sys-ec"), "ec1"),
                           "system/Patient.rs")
    t.ok(st == 200 and doc["scope"] == "system/Patient.rs",
         "openssl-signed ES384 assertion, v2 scope narrowed", doc)
    # RS384 with the key from a jwks_file, and requested * narrowed to what is allowed.
    st, _, doc = api.token(sign(env.rsa, api.assertion_claims("obs-rsa"), "rsa1"),
                           "system/*.rs system/Observation.c")
    t.ok(st == 200 and doc["scope"] == "system/Observation.rs system/Observation.c",
         "RS384 assertion; system/*.rs narrowed to system/Observation.rs", doc)
    env.obs_token = doc.get("access_token") if doc else None


def t_assertion_errors(t, env):
    api = env.api
    now = int(time.time())

    def refused(assertion, name, want=("invalid_client",), scope="system/*.read", status=401):
        st, _, doc = api.token(assertion, scope)
        t.ok(st == status and doc and doc.get("error") in want, name, (st, doc))

    refused(sign(env.ec, api.assertion_claims("sys-ec", exp=now - 3600), "ec1"),
            "expired assertion refused")
    refused(sign(env.ec, api.assertion_claims("sys-ec", exp=now + 3600), "ec1"),
            "assertion exp more than 5 minutes ahead refused")
    refused(sign(env.ec, api.assertion_claims("sys-ec", exp=2**63 - 1), "ec1"),
            "assertion exp at the int64 limit refused")
    refused(sign(env.ec, api.assertion_claims("sys-ec", exp=2**70), "ec1"),
            "assertion exp past int64 refused")
    refused(sign(env.ec, api.assertion_claims("sys-ec", exp="soon"), "ec1"),
            "assertion exp not a number refused")
    refused(sign(env.ec, api.assertion_claims("sys-ec", aud="http://elsewhere/auth/token"), "ec1"),
            "wrong audience refused")
    refused(sign(env.other, api.assertion_claims("sys-ec"), "ec1"),
            "signature by another key refused")
    refused(sign(env.ec, api.assertion_claims("nobody"), "ec1"), "unknown client refused")
    refused(sign(env.ec, api.assertion_claims("sys-ec", sub="obs-rsa"), "ec1"),
            "iss != sub refused")
    refused(sign(env.ec, api.assertion_claims("sys-ec", jti=None), "ec1"), "missing jti refused")
    good = sign(env.ec, api.assertion_claims("sys-ec"), "ec1")
    head, body, sig = good.split(".")
    tampered = json.loads(b64url_dec(body))
    tampered["sub"] = tampered["iss"] = "sys-ec"
    tampered["exp"] += 1
    refused("%s.%s.%s" % (head, b64url(json.dumps(tampered)), sig), "tampered payload refused")
    none_head = b64url(json.dumps({"alg": "none", "typ": "JWT"}))
    refused("%s.%s." % (none_head, body), "alg=none refused")
    refused("%s.%s.%s" % (none_head, body, sig), "alg=none with a signature refused")
    # HS384 keyed with the client's public key (the classic alg confusion).
    hs_head = b64url(json.dumps({"alg": "HS384", "typ": "JWT", "kid": "ec1"}))
    with open(env.ec, "rb") as f:
        secret = f.read()
    mac = hmac.new(secret, ("%s.%s" % (hs_head, body)).encode(), hashlib.sha384).digest()
    refused("%s.%s.%s" % (hs_head, body, b64url(mac)), "HS384 (alg confusion) refused")
    # An RS384 header on an ES384 signature: the key type decides.
    rs_head = b64url(json.dumps({"alg": "RS384", "typ": "JWT", "kid": "ec1"}))
    refused("%s.%s.%s" % (rs_head, body, sig), "alg RS384 on an EC key refused")
    st, _, doc = api.token(good, "system/*.read")
    t.eq(st, 200, "a fresh assertion is accepted once")
    st, _, doc = api.token(good, "system/*.read")
    t.ok(st == 401 and doc["error"] == "invalid_client" and "replay" in doc["error_description"],
         "replayed jti refused", (st, doc))
    refused(sign(env.rsa, api.assertion_claims("obs-rsa"), "rsa1"),
            "scope not allowed for the client: invalid_scope", ("invalid_scope",),
            scope="system/Patient.rs", status=400)
    refused(sign(env.pat, api.assertion_claims("pat-app"), "pat1"),
            "constraint on a patient/ scope: invalid_scope", ("invalid_scope",),
            scope="patient/Observation.rs?category=laboratory", status=400)
    refused(sign(env.rsa, api.assertion_claims("obs-rsa"), "rsa1"),
            "constraint on a write scope: invalid_scope", ("invalid_scope",),
            scope="system/Observation.c?category=laboratory", status=400)
    refused(sign(env.rsa, api.assertion_claims("obs-rsa"), "rsa1"),
            "constraint on an unknown parameter: invalid_scope", ("invalid_scope",),
            scope="system/Observation.rs?nope=1", status=400)
    refused(sign(env.rsa, api.assertion_claims("obs-rsa"), "rsa1"),
            "malformed scope: invalid_scope", ("invalid_scope",),
            scope="system/Observation.sr", status=400)
    st, _, doc = api.req("POST", "/auth/token",
                         b"grant_type=client_credentials&client_assertion_type=" +
                         ASSERTION_TYPE.encode() + b"&client_assertion=x.y.z&scope=%FF%FE%00",
                         ctype="application/x-www-form-urlencoded")
    t.ok(st in (400, 401) and doc and doc.get("error"),
         "invalid UTF-8 in the request: still a JSON error", (st, doc))
    st, _, doc = api.token(sign(env.rsa, api.assertion_claims("obs-rsa"), "rsa1"),
                           "system/Obs\u00e9rvation.rs \xff")
    t.ok(st == 400 and doc["error"] == "invalid_scope", "non-ASCII scope: invalid_scope JSON",
         (st, doc))
    st, _, doc = api.token_raw({"grant_type": "authorization_code", "code": "x"})
    t.ok(st == 400 and doc["error"] == "unsupported_grant_type", "other grant_type refused", doc)
    st, _, doc = api.token_raw({"grant_type": "client_credentials", "scope": "system/*.read",
                                "client_secret": "x"})
    t.ok(st == 400 and doc["error"] == "invalid_request", "no client_assertion: invalid_request",
         doc)
    st, _, _ = api.req("GET", "/auth/token")
    t.eq(st, 405, "GET /auth/token: 405")
    st, _, doc = api.req("POST", "/auth/token", json.dumps({"grant_type": "client_credentials"}),
                         ctype="application/json")
    t.ok(st == 400 and doc["error"] == "invalid_request", "JSON token request: 400", doc)


def t_scopes(t, env):
    api = env.api
    tok = env.obs_token
    st, _, _ = api.req("GET", "/fhir/Observation/obs-p1", token=tok)
    t.eq(st, 200, "system/Observation.rs: read Observation")
    st, _, doc = api.req("GET", "/fhir/Observation?subject=Patient/p2", token=tok)
    t.ok(st == 200 and doc["total"] == 1, "system/Observation.rs: search Observation", doc)
    st, _, doc = api.req("GET", "/fhir/Patient/p1", token=tok)
    t.ok(st == 403 and doc["issue"][0]["code"] == "forbidden" and
         "system/Patient.r" in doc["issue"][0]["diagnostics"],
         "read Patient with Observation scope: 403 naming the scope", doc)
    st, _, doc = api.req("PUT", "/fhir/Observation/obs-p1", {
        "resourceType": "Observation", "id": "obs-p1", "status": "final", "code": {"text": "y"}},
        token=tok)
    t.ok(st == 403 and "system/Observation.u" in doc["issue"][0]["diagnostics"],
         "update without u: 403", doc)
    st, _, doc = api.req("POST", "/fhir/Observation", {
        "resourceType": "Observation", "status": "final", "code": {"text": "z"}}, token=tok)
    t.eq(st, 201, "create with system/Observation.c")
    st, _, doc = api.req("GET", "/fhir/Observation?_include=Observation:subject", token=tok)
    t.eq(st, 403, "_include needs a * scope")
    st, _, doc = api.req("GET", "/fhir/Observation?_include=Observation:subject",
                         token=env.sys_token)
    t.ok(st == 200 and any(e["search"]["mode"] == "include" for e in doc.get("entry", [])),
         "_include with system/*.read", (st, doc))
    st, _, _ = api.req("GET", "/fhir/_history", token=tok)
    t.eq(st, 403, "system history needs system/*.rs")
    st, _, doc = api.req("POST", "/fhir", {"resourceType": "Bundle", "type": "transaction",
                                           "entry": [{"request": {"method": "POST",
                                                                  "url": "Patient"},
                                                      "resource": {"resourceType": "Patient"}}]},
                         token=tok)
    t.eq(st, 403, "transaction entry without scope: 403")
    st, _, doc = api.req("POST", "/fhir", {"resourceType": "Bundle", "type": "batch",
                                           "entry": [{"request": {"method": "GET",
                                                                  "url": "Observation/obs-p1"}},
                                                     {"request": {"method": "GET",
                                                                  "url": "Patient/p1"}}]},
                         token=tok)
    statuses = [e["response"]["status"] for e in doc.get("entry", [])] if doc else []
    t.ok(st == 200 and statuses[0].startswith("200") and statuses[1].startswith("403"),
         "batch: each entry checked on its own", (st, statuses))
    st, _, _ = api.req("GET", "/fhir/$messages", token=tok)
    t.eq(st, 403, "$messages without system/fhirgate.admin: 403")
    st, _, _ = api.req("GET", "/fhir/$messages", token=env.sys_token)
    t.eq(st, 403, "$messages: the admin scope must be requested, not only allowed")
    adm = env.token_for(env.ec, "sys-ec", "ec1", "system/fhirgate.admin")["access_token"]
    st, _, _ = api.req("GET", "/fhir/$messages", token=adm)
    t.eq(st, 200, "$messages with system/fhirgate.admin")
    st, _, _ = api.req("GET", "/fhir/Patient/p1", token=adm)
    t.eq(st, 403, "the admin scope grants no FHIR data")


def t_constrained(t, env):
    api = env.api
    for oid, cat in (("obs-lab", "laboratory"), ("obs-vital", "vital-signs")):
        st, _, _ = api.req("PUT", "/fhir/Observation/" + oid, {
            "resourceType": "Observation", "id": oid, "status": "final", "code": {"text": "x"},
            "category": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": cat}]}]}, token=env.sys_token)
        t.ok(st in (200, 201), "system token writes Observation/" + oid, st)
    doc = env.token_for(env.rsa, "obs-rsa", "rsa1", "system/Observation.rs?category=laboratory")
    t.eq(doc["scope"], "system/Observation.rs?category=laboratory", "v2 constrained scope granted")
    tok = doc["access_token"]
    st, _, _ = api.req("GET", "/fhir/Observation/obs-lab", token=tok)
    t.eq(st, 200, "constrained scope: read a matching Observation")
    st, _, doc = api.req("GET", "/fhir/Observation/obs-vital", token=tok)
    t.ok(st == 403 and "constraints" in doc["issue"][0]["diagnostics"],
         "constrained scope: read of a non-matching Observation 403", doc)
    st, _, doc = api.req("GET", "/fhir/Observation", token=tok)
    ids = sorted(e["resource"]["id"] for e in doc.get("entry", [])) if doc else []
    t.eq((st, ids), (200, ["obs-lab"]), "constrained scope: search narrowed to the constraint")
    st, _, doc = api.req("POST", "/fhir/Observation/_search", "status=final", token=tok,
                         ctype="application/x-www-form-urlencoded")
    ids = sorted(e["resource"]["id"] for e in doc.get("entry", [])) if doc else []
    t.eq((st, ids), (200, ["obs-lab"]), "constrained scope: POST _search narrowed too")
    st, _, _ = api.req("GET", "/fhir/Observation?_include=Observation:subject", token=tok)
    t.eq(st, 403, "constrained scope: _include refused")
    st, _, _ = api.req("GET", "/fhir/Observation/obs-lab/_history", token=tok)
    t.eq(st, 403, "constrained scope: history not covered")


def t_patient(t, env):
    api = env.api
    doc = env.token_for(env.pat, "pat-app", "pat1", "patient/*.rs")
    tok = doc["access_token"]
    t.eq(doc.get("patient"), "p1", "patient token names its patient")
    st, _, _ = api.req("GET", "/fhir/Patient/p1", token=tok)
    t.eq(st, 200, "patient token reads its own Patient")
    st, _, doc = api.req("GET", "/fhir/Patient/p2", token=tok)
    t.ok(st == 403 and doc["issue"][0]["code"] == "forbidden", "patient token: other Patient 403",
         doc)
    st, _, _ = api.req("GET", "/fhir/Observation/obs-p1", token=tok)
    t.eq(st, 200, "patient token reads its own Observation")
    st, _, _ = api.req("GET", "/fhir/Observation/obs-p2", token=tok)
    t.eq(st, 403, "patient token: another patient's Observation 403")
    st, _, doc = api.req("GET", "/fhir/Observation", token=tok)
    ids = sorted(e["resource"]["id"] for e in doc.get("entry", []))
    t.ok(st == 200 and ids == ["obs-p1"], "patient token: search narrowed to the compartment",
         (st, ids))
    st, _, doc = api.req("GET", "/fhir/Observation?subject=Patient/p2", token=tok)
    t.ok(st == 200 and doc["total"] == 0, "patient token: searching another patient finds none",
         doc)
    st, _, doc = api.req("GET", "/fhir/Patient", token=tok)
    ids = sorted(e["resource"]["id"] for e in doc.get("entry", []))
    t.eq((st, ids), (200, ["p1"]), "patient token: Patient search finds only its patient")
    st, _, _ = api.req("GET", "/fhir/Patient/p1/$everything", token=tok)
    t.eq(st, 200, "patient token: its own $everything")
    st, _, _ = api.req("GET", "/fhir/Patient/p2/$everything", token=tok)
    t.eq(st, 403, "patient token: another patient's $everything 403")
    st, _, _ = api.req("PUT", "/fhir/Patient/p1", {"resourceType": "Patient", "id": "p1"},
                       token=tok)
    t.eq(st, 403, "patient token: no writes")
    st, _, _ = api.req("GET", "/fhir/Observation?_include=Observation:performer", token=tok)
    t.eq(st, 403, "patient token: _include refused (it could leave the compartment)")
    st, _, _ = api.req("GET", "/fhir/Organization", token=tok)
    t.eq(st, 403, "patient token: type outside the compartment 403")
    st, _, _ = api.req("GET", "/fhir/AuditEvent", token=env.sys_token)
    t.eq(st, 403, "system/*.read does not cover AuditEvent")


def t_bearer_errors(t, env):
    api = env.api
    now = int(time.time())
    base = "http://%s" % api.host

    def claims(**over):
        c = {"iss": base, "sub": "sys-ec", "aud": base + "/fhir", "exp": now + 60, "iat": now,
             "jti": "t", "scope": "system/*.read"}
        c.update(over)
        return c

    def check(tok, name):
        st, h, _ = api.req("GET", "/fhir/Patient/p1", token=tok)
        t.ok(st == 401 and 'error="invalid_token"' in h.get("www-authenticate", ""), name,
             (st, h.get("www-authenticate")))
        return h.get("www-authenticate", "")

    st, _, _ = api.req("GET", "/fhir/Patient/p1", token=sign(env.server_key, claims()))
    t.eq(st, 200, "a token signed with the server key (control)")
    h = check(sign(env.server_key, claims(exp=now - 600)), "expired bearer: 401")
    t.ok("expired" in h, "WWW-Authenticate says expired", h)
    check(sign(env.server_key, claims(aud="http://other/fhir")), "bearer for another aud: 401")
    check(sign(env.server_key, claims(iss="http://other")), "bearer from another iss: 401")
    check(sign(env.server_key, claims(nbf=now + 3600)), "bearer not valid yet: 401")
    check(sign(env.other, claims()), "bearer signed by another key: 401")
    check(sign(env.rsa, claims()), "bearer RS384 when the server signs ES384: 401")
    tok = sign(env.server_key, claims())
    head, body, sig = tok.split(".")
    check("%s.%s.%s" % (head, b64url(json.dumps(claims(scope="system/*.*"))), sig),
          "bearer with a tampered scope: 401")


def wait_log(srv, text, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in srv.read_log():
            return True
        time.sleep(0.05)
    return False


def t_reload(t, env):
    """SIGHUP reloads the clients file: a removed client's tokens stop at once; a broken file
    keeps the clients in force."""
    import signal
    api = env.api
    st, _, _ = api.req("GET", "/fhir/Observation/obs-p1", token=env.obs_token)
    t.eq(st, 200, "before reload: the obs-rsa token works")
    with open(env.clients) as f:
        clients = json.load(f)
    keep = dict(clients)
    keep["clients"] = [c for c in clients["clients"] if c["client_id"] != "obs-rsa"]
    with open(env.clients, "w") as f:
        json.dump(keep, f)
    env.srv.signal(signal.SIGHUP)
    t.ok(wait_log(env.srv, "clients reloaded"), "SIGHUP reloads the clients", env.srv.read_log())
    st, h, _ = api.req("GET", "/fhir/Observation/obs-p1", token=env.obs_token)
    t.ok(st == 401 and "unknown client" in h.get("www-authenticate", ""),
         "a removed client's token is refused at once", (st, h))
    st, _, doc = api.token(sign(env.rsa, api.assertion_claims("obs-rsa"), "rsa1"),
                           "system/Observation.rs")
    t.ok(st == 401 and doc["error"] == "invalid_client", "a removed client gets no token", doc)
    with open(env.clients, "w") as f:
        f.write("{ broken")
    env.srv.signal(signal.SIGHUP)
    t.ok(wait_log(env.srv, "clients not reloaded"), "a broken clients file is refused",
         env.srv.read_log())
    st, _, _ = api.req("GET", "/fhir/Patient/p1", token=env.sys_token)
    t.eq(st, 200, "... and the clients in force stay")


def t_protected_mode(t):
    tmp = tempfile.mkdtemp(prefix="fhirgate-pm-")
    p = subprocess.run([FHIRGATE, "serve", "-c", "/dev/null", "--set",
                        "store.data_dir=%s" % os.path.join(tmp, "d"), "--set",
                        "http.listen=0.0.0.0:%d" % free_port(), "--set", "mllp.listen=",
                        "--set", "mappings.dir="], capture_output=True, timeout=60)
    err = p.stderr.decode()
    t.ok(p.returncode != 0 and "0.0.0.0" in err and "auth.enabled" in err,
         "auth off on 0.0.0.0: refuses to start, naming the address and the fix",
         (p.returncode, err))
    t.ok(not os.path.exists(os.path.join(tmp, "d")), "... before creating the store")


def t_production_config(t):
    conf = os.path.join(TOP_SRCDIR, "etc", "fhirgate.production.conf")
    p = subprocess.run([FHIRGATE, "serve", "-c", conf, "--print-config"], capture_output=True,
                       timeout=60)
    err = p.stderr.decode()
    if p.returncode != 0 and "unknown key" in err and ".tls." in err:
        print("ok %d # SKIP etc/fhirgate.production.conf needs the TLS options (%s)" %
              (t.n + 1, err.strip().splitlines()[-1]))
        t.n += 1
        return
    out = p.stdout.decode()
    t.ok(p.returncode == 0 and "auth.enabled = true" in out, "production config loads", err)


def t_audit(t, env):
    """AuditEvents name the authenticated client; refused requests are audited too; reading
    them needs system/AuditEvent.rs."""
    api = env.api
    tok = env.token_for(env.other, "auditor", "aud1", "system/AuditEvent.rs")["access_token"]
    st, _, _ = api.req("GET", "/fhir/Patient/p2")
    t.eq(st, 401, "an unauthenticated read is refused")
    evs = []
    deadline = time.time() + 10
    while time.time() < deadline:
        st, _, doc = api.req("GET", "/fhir/AuditEvent?agent-name=sys-ec&subtype=read&_count=100",
                             token=tok)
        evs = [e["resource"] for e in (doc or {}).get("entry", [])]
        if st == 200 and evs:
            break
        time.sleep(0.1)
    t.ok(evs and evs[0]["agent"][0]["who"]["identifier"]["value"] == "sys-ec",
         "AuditEvent names the client of the token", evs[:1])
    st, _, doc = api.req("GET", "/fhir/AuditEvent?agent-name=anonymous&outcome=4&_count=100",
                         token=tok)
    refused = [e["resource"] for e in (doc or {}).get("entry", [])
               if e["resource"].get("outcomeDesc") == "HTTP 401"]
    t.ok(st == 200 and refused, "the refused (401) request is audited as anonymous", doc)
    st, _, _ = api.req("GET", "/fhir/AuditEvent", token=env.sys_token)
    t.eq(st, 403, "a system/*.read token cannot read the audit trail")


def t_score_and_cds(t, env):
    """$score needs to read the patient's record and write RiskAssessments; CDS service calls
    need a token that may read the patient's data."""
    api = env.api
    st, _, doc = api.req("POST", "/fhir/Patient/p1/$score")
    t.eq(st, 401, "$score without a token: 401")
    narrow = env.token_for(env.other, "auditor", "aud1", "system/AuditEvent.rs")["access_token"]
    st, _, doc = api.req("POST", "/fhir/Patient/p1/$score", token=narrow)
    t.eq(st, 403, "$score with an AuditEvent-only token: 403")
    st, _, doc = api.req("POST", "/fhir/Patient/p1/$score", token=env.sys_token)
    t.ok(st in (200, 422), "$score with system/*.read system/*.write: allowed", (st, doc))
    call = {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "context": {"userId": "Practitioner/x", "patientId": "p1"}}
    st, h, _ = api.req("POST", "/cds-services/pce", call, ctype="application/json")
    t.ok(st == 401 and h.get("www-authenticate", "").startswith("Bearer"),
         "CDS call without a token: 401 with WWW-Authenticate", (st, h))
    st, _, doc = api.req("POST", "/cds-services/pce", call, token=env.sys_token,
                         ctype="application/json")
    t.ok(st == 200 and "cards" in (doc or {}), "CDS call with a system token: cards", doc)
    pat = env.token_for(env.pat, "pat-app", "pat1", "patient/*.rs")["access_token"]
    st, _, doc = api.req("POST", "/cds-services/pce", call, token=pat, ctype="application/json")
    t.eq(st, 200, "CDS call with a patient token for its own patient: 200")
    other = dict(call, context={"userId": "Practitioner/x", "patientId": "p2"})
    st, _, doc = api.req("POST", "/cds-services/pce", other, token=pat, ctype="application/json")
    t.eq(st, 403, "CDS call with a patient token for another patient: 403")
    st, _, doc = api.req("GET", "/cds-services")
    t.ok(st == 200 and any(s["id"] == "pce" for s in doc.get("services", [])),
         "CDS discovery stays open", doc)


def main():
    t = Tap()
    env = Env()
    try:
        env.srv.start()
        for fn in (t_discovery, t_no_token, t_token_flow, t_assertion_errors, t_scopes,
                   t_constrained, t_patient, t_bearer_errors, t_reload, t_audit,
                   t_score_and_cds):
            t.run(fn, env)
        t.eq(env.srv.stop(), 0, "server stops cleanly")
        log = env.srv.read_log()
        t.ok("ERROR: AddressSanitizer" not in log and "runtime error" not in log,
             "no sanitizer report", log[-3000:])
    finally:
        env.srv.cleanup()
    t.run(t_protected_mode)
    t.run(t_production_config)
    t.done()


if __name__ == "__main__":
    main()
