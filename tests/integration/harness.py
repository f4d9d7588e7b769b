"""Test harness for fhirgate integration tests: TAP output, a real server on 127.0.0.1 with a
real LMDB directory, and a small MLLP client. Standard library only."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SB, EB, CR = b"\x0b", b"\x1c", b"\r"

FHIRGATE = os.environ.get("FHIRGATE") or os.path.join(
    os.environ.get("top_builddir", "."), "fhirgate")
TOP_SRCDIR = os.environ.get("top_srcdir") or os.path.join(os.path.dirname(__file__), "..", "..")
DATA = os.path.join(TOP_SRCDIR, "tests", "data")


class Tap:
    """Collects results and prints TAP; a failing check prints its diagnostics."""

    def __init__(self):
        self.n = 0
        self.failed = 0

    def ok(self, cond, name, diag=""):
        self.n += 1
        print(("ok %d - %s" if cond else "not ok %d - %s") % (self.n, name), flush=True)
        if not cond:
            self.failed += 1
            for line in str(diag).splitlines():
                print("# " + line, flush=True)
        return cond

    def eq(self, got, want, name):
        return self.ok(got == want, name, "got:  %r\nwant: %r" % (got, want))

    def done(self):
        print("1..%d" % self.n, flush=True)
        sys.exit(1 if self.failed else 0)

    def run(self, fn, *args):
        """Runs one test function; an exception counts as a failure, not a crash of the file."""
        try:
            fn(self, *args)
        except Exception as e:  # noqa: BLE001 - report and go on with the other tests
            import traceback
            self.ok(False, "%s raised %s" % (fn.__name__, type(e).__name__), traceback.format_exc())


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def frame(msg):
    if isinstance(msg, str):
        msg = msg.encode()
    return SB + msg + EB + CR


def hl7(*segments):
    """A message from segment strings, CR-terminated."""
    return ("\r".join(segments) + "\r").encode()


def adt(control_id="MSG00001", sender="SENDAPP", facility="SENDFAC", version="2.5",
        extra_msh="", pid_name="DOE^JOHN"):
    msh = "MSH|^~\\&|%s|%s|RECVAPP|RECVFAC|20250101120000||ADT^A01^ADT_A01|%s|P|%s%s" % (
        sender, facility, control_id, version, extra_msh)
    return hl7(msh, "EVN|A01|20250101120000", "PID|1||12345^^^HOSP^MR||%s||19800101|M" % pid_name,
               "PV1|1|I|WARD^101^1")


class Ack:
    """A parsed ACK: segments split on CR, fields on the ACK's own separator."""

    def __init__(self, raw):
        self.raw = raw
        text = raw.decode("utf-8", "replace")
        self.fs = text[3] if len(text) > 3 else "|"
        self.segments = [s for s in text.split("\r") if s]

    def seg(self, name):
        for s in self.segments:
            if s.startswith(name + self.fs):
                return s.split(self.fs)
        return None

    def field(self, name, n):
        s = self.seg(name)
        if s is None:
            return None
        if name == "MSH":  # MSH-1 is the separator itself
            return self.fs if n == 1 else (s[n - 1] if n - 1 < len(s) else "")
        return s[n] if n < len(s) else ""

    @property
    def code(self):
        return self.field("MSA", 1)

    @property
    def control_id(self):
        return self.field("MSA", 2)

    def __repr__(self):
        return "Ack(%r)" % self.raw


class Client:
    """A blocking MLLP client with a receive timeout."""

    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, msg):
        self.sock.sendall(frame(msg))

    def recv_ack(self, timeout=None):
        """The next framed ACK, or None on timeout / close."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        while True:
            start = self.buf.find(SB)
            end = self.buf.find(EB + CR, start + 1 if start >= 0 else 0)
            if start >= 0 and end > start:
                raw = self.buf[start + 1:end]
                self.buf = self.buf[end + 2:]
                return Ack(raw)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            if not chunk:
                return None
            self.buf += chunk

    def roundtrip(self, msg):
        self.send(msg)
        return self.recv_ack()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Server:
    """fhirgate serve on 127.0.0.1:<free port> with its own LMDB directory."""

    def __init__(self, *sets, data_dir=None, threads=2, nofile=None):
        self.nofile = nofile
        self.tmp = tempfile.mkdtemp(prefix="fhirgate-it-")
        self.data_dir = data_dir or os.path.join(self.tmp, "data")
        self.port = free_port()
        self.conf = os.path.join(self.tmp, "fhirgate.conf")
        with open(self.conf, "w") as f:
            # No HTTP unless a test asks (--set http.listen=...): the default port 8080
            # may be taken, or shared with the servers of tests running in parallel.
            f.write("store.data_dir = %s\nmllp.listen = 127.0.0.1:%d\nio.threads = %d\n"
                    "store.map_size = 1G\nmappings.dir = %s\nhttp.listen = \"\"\n" % (
                        self.data_dir, self.port, threads,
                        os.path.join(TOP_SRCDIR, "mappings", "hl7v2")))
        self.sets = list(sets)
        self.log_path = os.path.join(self.tmp, "server.log")
        self.proc = None

    def args(self):
        a = ["-c", self.conf]
        for s in self.sets:
            a += ["--set", s]
        return a

    def start(self, wait=True):
        self.log = open(self.log_path, "ab")
        preexec = None
        if self.nofile:
            import resource
            limit = self.nofile

            def preexec():
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
        self.proc = subprocess.Popen([FHIRGATE, "serve"] + self.args(), stdout=self.log,
                                     stderr=subprocess.STDOUT, preexec_fn=preexec)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=15.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited with %s:\n%s" % (self.proc.returncode,
                                                                   self.read_log()))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not listen within %ss:\n%s" % (timeout, self.read_log()))

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=20.0):
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def cpu_seconds(self):
        """User + system CPU time the server has used so far."""
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def client(self, timeout=10.0):
        return Client(self.port, timeout)

    def fhirgate(self, *args, input=None):
        """Runs `fhirgate ARGS` with this server's config; returns (rc, stdout, stderr)."""
        p = subprocess.run([FHIRGATE] + list(args) + self.args(),
                           input=input, capture_output=True, timeout=120)
        return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8",
                                                                                   "replace")

    def wait_applied(self, timeout=15.0):
        """Waits until the resources of every ACKed message are applied (the writer's deferred
        apply, writer.apply_delay): what `fhirgate store` reads directly includes them then.
        Returns False on timeout."""
        deadline = time.time() + timeout
        while True:
            rc, out, err = self.fhirgate("store", "stats")
            m = re.search(r"^unapplied\s+(\d+)", out, re.M)
            if rc == 0 and m and m.group(1) == "0":
                return True
            if time.time() > deadline:
                return False
            time.sleep(0.05)

    def stored_control_ids(self):
        """MSH-10 of every stored message, in order, from `fhirgate store list`."""
        rc, out, err = self.fhirgate("store", "list", "--limit", "100000000")
        if rc != 0:
            raise RuntimeError("store list failed: %s" % err)
        return parse_store_list(out)

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()


def parse_store_list(out):
    """[(seq, status, control_id)] from `fhirgate store list` lines:
    SEQ TIME STATUS PEER BYTES MSH-9 MSH-10 ("-" for empty)."""
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 7 or not parts[0].isdigit():
            continue
        rows.append((int(parts[0]), parts[2], None if parts[6] == "-" else parts[6]))
    return rows
