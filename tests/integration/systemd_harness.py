"""systemd_harness - play systemd's part for the systemd integration tests.

- NotifyListener: a real NOTIFY_SOCKET (AF_UNIX datagram socket in a temporary directory)
  that records every sd_notify message clickd sends, with its arrival time.
- SystemdClickd: a clickd_harness.Clickd started the way systemd starts it: with the
  listening sockets passed at fd 3, 4, ... (LISTEN_FDS, LISTEN_FDNAMES) and with variables
  that must name clickd's own pid (LISTEN_PID, WATCHDOG_PID) set to it. A tiny Python
  wrapper does that: it moves the passed fds into place, sets the variables to its own pid
  and execs clickd (exec keeps the pid). Or, with `prefix`, clickd runs under another
  launcher such as systemd-socket-activate.
- listening_sockets: the sockets a .socket unit would hold.
- Ptrace: stops one thread of clickd for real (PTRACE_SEIZE + PTRACE_INTERRUPT: a ptrace
  stop is per thread, unlike SIGSTOP), so that the watchdog sees a stuck event loop.
"""

import ctypes
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

from clickd_harness import Clickd, binary

# Runs as `python3 -c WRAPPER clickd args...`: CLICKD_TEST_PASS_FDS lists the inherited
# fds to pass, in order, as 3, 4, ...; CLICKD_TEST_PID_VARS the variables to set to the
# wrapper's pid, which becomes clickd's on exec.
WRAPPER = r"""
import fcntl, os, sys
fds = [int(x) for x in os.environ.pop("CLICKD_TEST_PASS_FDS", "").split(",") if x]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
for fd in fds:
    os.close(fd)
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i, inheritable=True)
    os.close(fd)
for name in os.environ.pop("CLICKD_TEST_PID_VARS", "").split(","):
    if name:
        os.environ[name] = str(os.getpid())
os.execv(sys.argv[1], sys.argv[1:])
"""


class NotifyListener:
    """A NOTIFY_SOCKET; `messages` holds (monotonic time, text) in arrival order."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="clickd-notify-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.lock = threading.Lock()
        self.messages = []
        self.closed = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while not self.closed:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.messages.append((time.monotonic(), data.decode("utf-8", "replace")))

    def snapshot(self):
        with self.lock:
            return list(self.messages)

    def with_field(self, field):
        """(time, text) of the messages that carry `field` (e.g. "WATCHDOG=1" or "STATUS=")."""
        return [(t, m) for t, m in self.snapshot() if any(line.startswith(field)
                                                          for line in m.split("\n"))]

    def close(self):
        self.closed = True
        self.thread.join(2)
        self.sock.close()
        try:
            os.unlink(self.path)
            os.rmdir(self.dir)
        except OSError:
            pass


def listening_sockets(spec):
    """spec: list of (name, "stream"|"datagram"). Returns [(name, socket)] bound on
    127.0.0.1 port 0 (stream ones listening), as a .socket unit holds them."""
    out = []
    for name, kind in spec:
        if kind == "stream":
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            s.listen(4096)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
        out.append((name, s))
    return out


def free_port(kind=socket.SOCK_STREAM):
    """A port nothing listens on now (for launchers that need a number up front)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SystemdClickd(Clickd):
    """A Clickd started like systemd starts it.

    passed: [(name, socket)] handed over as fds 3, 4, ... with LISTEN_FDS, LISTEN_FDNAMES
    (names None: no LISTEN_FDNAMES) and LISTEN_PID; pid_vars: more variables set to clickd's
    pid (WATCHDOG_PID); prefix: a launcher command instead of the wrapper."""

    def __init__(self, settings=None, passed=(), pid_vars=(), prefix=None, names=True, **kw):
        super().__init__(settings, **kw)
        self.passed = list(passed)
        self.pid_vars = list(pid_vars)
        self.prefix = prefix
        self.names = names

    def start(self, wait=True):
        cmd = [binary()]
        for k, v in self.settings.items():
            cmd += ["--set", "%s=%s" % (k, v)]
        cmd += self.args
        env = dict(os.environ)
        env.update(self.env or {})
        fds = [s.fileno() for _, s in self.passed]
        pid_vars = list(self.pid_vars)
        if self.passed:
            env["LISTEN_FDS"] = str(len(self.passed))
            if self.names:
                env["LISTEN_FDNAMES"] = ":".join(n for n, _ in self.passed)
            pid_vars.append("LISTEN_PID")
        if self.prefix is not None:
            cmd = list(self.prefix) + cmd
        else:
            env["CLICKD_TEST_PASS_FDS"] = ",".join(str(fd) for fd in fds)
            env["CLICKD_TEST_PID_VARS"] = ",".join(pid_vars)
            cmd = [sys.executable, "-c", WRAPPER] + cmd
        self.proc = subprocess.Popen(cmd, cwd=self.dir, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                     pass_fds=fds)
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        if wait:
            self.wait_started()
        return self

    def threads(self):
        """{thread name: tid} of the running clickd."""
        out = {}
        base = "/proc/%d/task" % self.proc.pid
        for tid in os.listdir(base):
            try:
                with open(os.path.join(base, tid, "comm")) as f:
                    out[f.read().strip()] = int(tid)
            except OSError:
                pass
        return out


# ---- ptrace: stop one thread ----

PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
WALL = 0x40000000


class Ptrace:
    """Stops single threads with ptrace (from the calling thread, which must make every
    call: ptrace requests come from the tracer thread)."""

    def __init__(self):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p,
                                     ctypes.c_void_p]
        self.libc.ptrace.restype = ctypes.c_long
        self.stopped = []

    def _call(self, request, tid):
        if self.libc.ptrace(request, tid, None, None) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "ptrace(%#x, %d): %s" % (request, tid, os.strerror(e)))

    def stop(self, tid):
        self._call(PTRACE_SEIZE, tid)
        self.stopped.append(tid)
        self._call(PTRACE_INTERRUPT, tid)
        os.waitpid(tid, WALL)  # it is in its ptrace stop now

    def resume(self, tid):
        self._call(PTRACE_DETACH, tid)
        self.stopped.remove(tid)

    def resume_all(self):
        for tid in list(self.stopped):
            try:
                self.resume(tid)
            except OSError:
                self.stopped.remove(tid)
