"""clickd_harness - run the real clickd binary on loopback for the integration tests.

Every listener is opened on port 0 and the harness reads the ports clickd chose from its
log ("msg=listening key=http.listen ... port=N"), so tests never race for a port. Each
Clickd gets its own temporary directory (the file sink writes there) and is always
stopped: use it as a context manager, or call stop().

Environment (set by ctest, see tests/CMakeLists.txt):
  CLICKD_BIN                      the binary under test
  CLICKD_SOURCE_DIR               the source tree (conf/, tests/data/)
  CLICKD_KAFKA_STATE_DIR          the fixture broker's state dir (bootstrap file)
  CLICKD_TEST_TIMEOUT_MULTIPLIER  scales every wait
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

MULT = float(os.environ.get("CLICKD_TEST_TIMEOUT_MULTIPLIER", "1") or "1")


def scaled(seconds):
    return seconds * MULT


def binary():
    b = os.environ.get("CLICKD_BIN")
    if not b or not os.access(b, os.X_OK):
        raise RuntimeError("CLICKD_BIN is not set to an executable clickd (run through ctest)")
    return b


def source_dir():
    return os.environ.get("CLICKD_SOURCE_DIR",
                          os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))


def wait_for(predicate, timeout, what, interval=0.05):
    """Polls predicate until it returns a true value; fails the test with `what`."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (scaled(timeout), what))
        time.sleep(interval)


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # list of (name, value), names lowercased
        self.body = body

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def __repr__(self):
        return "Response(%d, %r, %r)" % (self.status, self.headers, self.body[:200])


class Clickd:
    """One clickd process. `settings` are --set overrides (dict of "section.key": value)."""

    def __init__(self, settings=None, args=None, listen_udp=True, listen_admin=True,
                 workdir=None, env=None):
        self.dir = workdir or tempfile.mkdtemp(prefix="clickd-it-")
        self.own_dir = workdir is None
        self.data_dir = os.path.join(self.dir, "data")
        s = {
            "http.listen": "127.0.0.1:0",
            "udp.listen": "127.0.0.1:0" if listen_udp else "",
            "admin.listen": "127.0.0.1:0" if listen_admin else "",
            "sink.file.dir": self.data_dir,
        }
        s.update(settings or {})
        self.settings = s
        self.args = list(args or [])
        self.env = env
        self.proc = None
        self.log_lines = []
        self.ports = {}
        self._log_lock = threading.Lock()
        self.exit_code = None

    # ---- lifecycle ----

    def start(self, wait=True):
        cmd = [binary()]
        for k, v in self.settings.items():
            cmd += ["--set", "%s=%s" % (k, v)]
        cmd += self.args
        env = dict(os.environ)
        env.update(self.env or {})
        self.proc = subprocess.Popen(cmd, cwd=self.dir, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        if wait:
            self.wait_started()
        return self

    def _read_log(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._log_lock:
                self.log_lines.append(line)
            m = re.search(r"msg=listening key=(\S+) .*port=(\d+)", line)
            if m:
                self.ports[m.group(1)] = int(m.group(2))

    def log(self):
        with self._log_lock:
            return "\n".join(self.log_lines)

    def wait_started(self, timeout=20):
        def started():
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise AssertionError("clickd exited with %d at start:\n%s"
                                     % (self.proc.returncode, self.log()))
            return "msg=started" in self.log()
        wait_for(started, timeout, "clickd to start")

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Sends sig and waits for the exit; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(scaled(timeout))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("clickd did not stop within %.0f s after %s:\n%s"
                                     % (scaled(timeout), sig, self.log()))
        self._reader.join(5)
        self.exit_code = self.proc.returncode
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.exit_code

    def kill(self):
        return self.stop(signal.SIGKILL)

    def cleanup(self):
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        finally:
            if self.own_dir:
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        try:
            self.stop()
        finally:
            self.cleanup()
        return False

    # ---- talking to it ----

    @property
    def http_port(self):
        return self.ports["http.listen"]

    @property
    def udp_port(self):
        return self.ports["udp.listen"]

    @property
    def admin_port(self):
        return self.ports["admin.listen"]

    def request(self, method, path, body=None, headers=None, port=None, timeout=10):
        conn = http.client.HTTPConnection("127.0.0.1", port or self.http_port,
                                          timeout=scaled(timeout))
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            data = r.read()
            return Response(r.status, [(k.lower(), v) for k, v in r.getheaders()], data)
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body, content_type=None, headers=None, **kw):
        h = dict(headers or {})
        if content_type:
            h["Content-Type"] = content_type
        if isinstance(body, str):
            body = body.encode()
        return self.request("POST", path, body=body, headers=h, **kw)

    def admin(self, path):
        return self.request("GET", path, port=self.admin_port)

    def raw(self, data, port=None, read_until_close=True, timeout=10):
        """Sends raw bytes on a new TCP connection and returns what came back."""
        s = socket.create_connection(("127.0.0.1", port or self.http_port), timeout=scaled(timeout))
        try:
            s.sendall(data)
            if not read_until_close:
                return s
            out = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except (ConnectionResetError, socket.timeout):
                    break
                if not chunk:
                    break
                out += chunk
            return out
        finally:
            if read_until_close:
                s.close()

    def udp(self, payload):
        if isinstance(payload, str):
            payload = payload.encode()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(payload, ("127.0.0.1", self.udp_port))

    def metrics(self):
        """Parses /metrics into {"name{labels}": value}."""
        r = self.admin("/metrics")
        assert r.status == 200, r
        out = {}
        for line in r.body.decode().splitlines():
            if not line or line.startswith("#"):
                continue
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
        return out

    def metric(self, name):
        return self.metrics().get(name, 0.0)

    # ---- what it wrote ----

    def records(self, stream, include_open=True):
        """Every record of a stream in the file sink (events, dead_letters, ...), in file
        order. Reads finished files and, with include_open, the files still open."""
        return read_records(self.data_dir, stream, include_open)


def read_records(data_dir, stream, include_open=True):
    out = []
    if not os.path.isdir(data_dir):
        return out
    for name in sorted(os.listdir(data_dir)):
        if not name.startswith(stream + "-"):
            continue
        if name.endswith(".open") and not include_open:
            continue
        path = os.path.join(data_dir, name)
        if ".zst" in name:
            if name.endswith(".open"):
                continue  # an unfinished zstd frame cannot be read whole
            raw = subprocess.run(["zstd", "-dc", path], check=True, capture_output=True).stdout
        else:
            with open(path, "rb") as f:
                raw = f.read()
        if name.endswith(".open") and not raw.endswith(b"\n"):
            # A file being written may end in the middle of a record (a write of more
            # than a pipe's worth): the rest comes later.
            raw = raw[:raw.rfind(b"\n") + 1]
        # NDJSON lines end at "\n" only: str.splitlines would also cut at U+2028, U+0085
        # and the like, which a JSON string may hold as they are.
        for line in raw.split(b"\n"):
            if line:
                out.append(json.loads(line.decode("utf-8")))
    return out


# ---- Kafka ----

def kafka_bootstrap():
    state = os.environ.get("CLICKD_KAFKA_STATE_DIR")
    if not state:
        raise AssertionError("CLICKD_KAFKA_STATE_DIR is not set (run through ctest)")
    path = os.path.join(state, "bootstrap")
    if not os.path.exists(path):
        raise AssertionError("no broker: %s is missing (did the kafka_start fixture fail?)" % path)
    with open(path) as f:
        return f.read().strip()


def kafka_sh(*args, timeout=300):
    """Runs tests/kafka/kafka.sh (start/stop/halt/kill/restart a private broker) and returns
    its standard output; fails the test with its last log lines when it fails."""
    script = os.path.join(source_dir(), "tests", "kafka", "kafka.sh")
    p = subprocess.run(["bash", script] + list(args), capture_output=True, text=True,
                       timeout=scaled(timeout))
    if p.returncode != 0:
        raise AssertionError("kafka.sh %s failed:\n%s" % (" ".join(args), p.stderr[-3000:]))
    return p.stdout.strip()


def kafka_consume(bootstrap, topic, expected, timeout=60, extra=None):
    """Reads a topic from the beginning with kcat until `expected` messages are there (or
    the timeout passes); returns a list of (key, value) pairs as strings."""
    deadline = time.monotonic() + scaled(timeout)
    got = []
    while True:
        cmd = ["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q",
               "-f", "%k\\t%s\\n"] + list(extra or [])
        p = subprocess.run(cmd, capture_output=True, timeout=scaled(60))
        got = []
        for line in p.stdout.decode("utf-8").split("\n"):
            if not line:
                continue
            k, _, v = line.partition("\t")
            got.append((k, v))
        if len(got) >= expected or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


# ---- raw HTTP (pipelining, half-sent requests, limits) ----

def parse_responses(data, head_request=False):
    """Parses every complete HTTP/1.1 response in `data` (bytes); returns (responses,
    rest), rest being the bytes of an incomplete last response. Bodies are framed by
    Content-Length (clickd always sends it); 1xx answers are returned too."""
    out = []
    while True:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return out, data
        head = data[:end].decode("latin-1").split("\r\n")
        parts = head[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise AssertionError("not an HTTP response: %r" % data[:200])
        status = int(parts[1])
        headers = []
        for line in head[1:]:
            k, _, v = line.partition(":")
            headers.append((k.strip().lower(), v.strip()))
        length = 0
        for k, v in headers:
            if k == "content-length":
                length = int(v)
        if head_request or status < 200 or status in (204, 304):
            length = 0
        body_start = end + 4
        if len(data) < body_start + length:
            return out, data
        out.append(Response(status, headers, data[body_start:body_start + length]))
        data = data[body_start + length:]


def read_responses(sock, count, timeout=10):
    """Reads from sock until `count` complete final (non-1xx) responses are in or the peer
    closes; returns (responses, closed). Fails the test when the time is up first."""
    deadline = time.monotonic() + scaled(timeout)
    buf = b""
    closed = False
    while True:
        got, _ = parse_responses(buf)
        final = [r for r in got if r.status >= 200]
        if len(final) >= count or closed:
            return final, closed
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("timed out after %.0f s waiting for %d responses; got %r"
                                 % (scaled(timeout), count, buf[:500]))
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        except socket.timeout:
            continue
        if not chunk:
            closed = True
        buf += chunk


def wait_closed(sock, timeout=10):
    """Reads until the peer closes (EOF or reset); returns what came before. Fails the test
    when the connection is still open after the timeout."""
    deadline = time.monotonic() + scaled(timeout)
    buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("connection still open after %.0f s; got %r"
                                 % (scaled(timeout), buf[:500]))
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return buf
        except socket.timeout:
            continue
        if not chunk:
            return buf
        buf += chunk


# ---- process figures ----

def rss_bytes(pid):
    """The resident set size of process pid, in bytes (VmRSS in /proc/PID/status)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for pid %d" % pid)


# ---- unittest glue ----

def start_for(test, settings=None, **kw):
    """Starts a Clickd for a unittest.TestCase and makes sure it is stopped and its
    directory removed when the test ends, whatever happens."""
    c = Clickd(settings, **kw)
    test.addCleanup(c.cleanup)
    test.addCleanup(c.stop)
    c.start()
    return c


def stop_ok(test, c, sig=signal.SIGTERM):
    """Stops c with sig and fails the test unless it exits 0 (ASan/UBSan reports and
    leaks make the exit code non-zero, so they fail here too)."""
    code = c.stop(sig)
    test.assertEqual(code, 0, "clickd exited with %r:\n%s" % (code, c.log()))
