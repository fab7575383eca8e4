"""clickd under systemd: the installed units pass `systemd-analyze verify` (and keep their
sandbox score), and sd_notify messages arrive on a real NOTIFY_SOCKET in order -- READY=1
once the listeners answer, STATUS= lines, WATCHDOG=1 pings (only for the pid WATCHDOG_PID
names), STOPPING=1 on TERM -- and a stuck event loop (one thread really stopped, with
ptrace) withholds the pings until it moves again."""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from clickd_harness import binary, scaled, wait_for
from systemd_harness import NotifyListener, Ptrace, SystemdClickd

WATCHDOG_USEC = 1000000  # 1 s: pings every 0.5 s
UNITS = ["clickd.service", "clickd-http.socket", "clickd-udp.socket", "clickd-admin.socket"]
MAX_EXPOSURE = 1.5  # systemd-analyze security: 1.0 when written ("OK")


def build_dir():
    d = os.path.dirname(os.path.abspath(binary()))
    return d if os.path.exists(os.path.join(d, "CMakeCache.txt")) else None


class Units(unittest.TestCase):
    """`cmake --install` into a DESTDIR, then systemd-analyze on the installed units with
    that DESTDIR as the root (so the paths in the units are checked where they point)."""

    @classmethod
    def setUpClass(cls):
        if not shutil.which("systemd-analyze"):
            raise unittest.SkipTest("systemd-analyze is not installed (Debian package systemd)")
        if not build_dir():
            raise unittest.SkipTest("no CMake build directory next to CLICKD_BIN")
        cls.root = tempfile.mkdtemp(prefix="clickd-install-")
        p = subprocess.run(["cmake", "--install", build_dir()], capture_output=True, text=True,
                           env=dict(os.environ, DESTDIR=cls.root), timeout=scaled(120))
        if p.returncode != 0:
            shutil.rmtree(cls.root, ignore_errors=True)
            raise AssertionError("cmake --install failed:\n%s%s" % (p.stdout, p.stderr))
        cls.installed = [line.split("Installing: ", 1)[1][len(cls.root):]
                         for line in p.stdout.splitlines() if "Installing: " in line]
        # What verify looks up besides our units: the system's own units (sysinit.target...)
        # and the commands our units run, found under the root like the units themselves.
        shutil.copytree("/lib/systemd/system", cls.root + "/lib/systemd/system", symlinks=True,
                        dirs_exist_ok=True)
        os.makedirs(cls.root + "/bin", exist_ok=True)
        shutil.copy("/bin/kill", cls.root + "/bin/kill")
        cls.unit_dir = os.path.dirname([f for f in cls.installed
                                        if f.endswith("/clickd.service")][0])

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)

    def unit_text(self, name):
        with open(self.root + self.unit_dir + "/" + name) as f:
            return f.read()

    def directive(self, unit, key):
        m = re.search(r"^%s=(.*)$" % re.escape(key), self.unit_text(unit), re.M)
        return m.group(1) if m else None

    def test_install_puts_binary_config_channels_and_units_in_place(self):
        names = [os.path.basename(f) for f in self.installed]
        for n in ["clickd", "clickd.conf", "search.txt", "social.txt", "video.txt",
                  "shopping.txt", "README.md"] + UNITS:
            self.assertIn(n, names, self.installed)
        conf = [f for f in self.installed if f.endswith("/clickd.conf")][0]
        self.assertTrue(conf.endswith("etc/clickd/clickd.conf"), conf)
        self.assertTrue(self.unit_dir.endswith("systemd/system"), self.unit_dir)
        # The service runs the installed binary on the installed config.
        exec_start = self.directive("clickd.service", "ExecStart")
        self.assertEqual(exec_start.split()[0], [f for f in self.installed
                                                 if f.endswith("bin/clickd")][0])
        self.assertIn("-c " + conf, exec_start)
        self.assertIn("--check-config -c " + conf,
                      self.directive("clickd.service", "ExecStartPre"))

    def test_installed_config_passes_check_config(self):
        conf = [f for f in self.installed if f.endswith("/clickd.conf")][0]
        p = subprocess.run([self.root + self.directive("clickd.service", "ExecStart").split()[0],
                            "--check-config", "-c", self.root + conf],
                           capture_output=True, text=True, timeout=scaled(30))
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_units_pass_systemd_analyze_verify(self):
        p = subprocess.run(["systemd-analyze", "verify", "--root=" + self.root]
                           + [self.unit_dir + "/" + u for u in UNITS],
                           capture_output=True, text=True, timeout=scaled(60))
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual((p.stdout + p.stderr).strip(), "", "verify complained")

    def test_service_is_notify_with_watchdog_reload_and_sockets(self):
        d = lambda k: self.directive("clickd.service", k)  # noqa: E731
        self.assertEqual(d("Type"), "notify")
        self.assertEqual(d("ExecReload"), "/bin/kill -HUP $MAINPID")
        self.assertEqual(d("Restart"), "on-failure")
        self.assertTrue(d("WatchdogSec"))
        self.assertEqual(d("Sockets").split(), UNITS[1:])
        for unit, name, listen in [("clickd-http.socket", "http", "ListenStream"),
                                   ("clickd-udp.socket", "udp", "ListenDatagram"),
                                   ("clickd-admin.socket", "admin", "ListenStream")]:
            self.assertEqual(self.directive(unit, "FileDescriptorName"), name)
            self.assertEqual(self.directive(unit, "Service"), "clickd.service")
            self.assertTrue(self.directive(unit, listen), unit)

    def test_service_sandbox_keeps_its_exposure_score(self):
        p = subprocess.run(["systemd-analyze", "security", "--offline=true",
                            "--root=" + self.root, self.unit_dir + "/clickd.service"],
                           capture_output=True, text=True, timeout=scaled(60))
        m = re.search(r"Overall exposure level for clickd.service: ([0-9.]+)", p.stdout)
        self.assertTrue(m, p.stdout + p.stderr)
        self.assertLessEqual(float(m.group(1)), MAX_EXPOSURE, p.stdout)


def fields(text):
    return dict(line.split("=", 1) for line in text.split("\n") if "=" in line)


class Notify(unittest.TestCase):
    def start(self, settings=None, watchdog=True, watchdog_pid_ours=True):
        n = NotifyListener()
        self.addCleanup(n.close)
        env = {"NOTIFY_SOCKET": n.path}
        pid_vars = []
        if watchdog:
            env["WATCHDOG_USEC"] = str(WATCHDOG_USEC)
            if watchdog_pid_ours:
                pid_vars.append("WATCHDOG_PID")
            else:
                env["WATCHDOG_PID"] = "1"  # someone else's watchdog: not ours to feed
        c = SystemdClickd(settings, env=env, pid_vars=pid_vars)
        self.addCleanup(c.cleanup)
        self.addCleanup(c.stop)
        c.start(wait=False)
        return c, n

    def wait_ready(self, c, n):
        def ready():
            if c.proc.poll() is not None:
                raise AssertionError("clickd exited at start:\n%s" % c.log())
            return n.with_field("READY=1")
        wait_for(ready, 20, "READY=1")
        c.wait_started()

    def test_ready_status_watchdog_then_stopping_in_order(self):
        c, n = self.start({"pipeline.ingest_threads": "2", "pipeline.shards": "2"})
        self.wait_ready(c, n)
        # READY=1 came once the listeners were bound: they answer at once.
        self.assertEqual(c.get("/healthz").status, 200)
        self.assertEqual(c.admin("/readyz").status, 200)
        for i in range(50):
            self.assertEqual(c.get("/collect?eid=n%d&vid=v%d" % (i, i % 7)).status, 204)
        # Two STATUS= refreshes (every 2 s), the second one counting the beacons above.
        wait_for(lambda: len(n.with_field("STATUS=")) >= 3, 10, "STATUS= lines")
        c.udp("eid=u1&vid=vu")
        stop_sent = time.monotonic()
        c.proc.send_signal(signal.SIGTERM)
        self.assertEqual(c.proc.wait(scaled(30)), 0, c.log())
        c.stop()
        time.sleep(0.2)
        msgs = n.snapshot()
        kinds = [m.split("\n")[0].split("=")[0] for _, m in msgs]
        self.assertEqual(kinds[0], "READY", msgs)
        self.assertEqual(kinds.count("READY"), 1, msgs)
        self.assertEqual(kinds[-1], "STOPPING", msgs)
        self.assertEqual(kinds.count("STOPPING"), 1, msgs)
        self.assertGreaterEqual(msgs[-1][0], stop_sent)
        self.assertIn("STATUS", fields(msgs[-1][1]))  # it says why it is going away
        statuses = [fields(m)["STATUS"] for _, m in msgs[1:-1] if "STATUS" in fields(m)]
        for s in statuses:
            self.assertRegex(s, r"^\d+ events/s, \d+ HTTP connections, \d+ open sessions, "
                                r"rings \d+\.\d% full(, Kafka queue \d+)?$")
        self.assertTrue(any(not s.startswith("0 events/s") for s in statuses), statuses)
        self.assertTrue(any("7 open sessions" in s for s in statuses), statuses)
        # WATCHDOG=1 every half interval from READY to STOPPING, none after.
        pings = [t for t, m in msgs if m == "WATCHDOG=1"]
        self.assertGreaterEqual(len(pings), 6, msgs)
        self.assertLess(pings[0] - msgs[0][0], scaled(WATCHDOG_USEC / 1e6))
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        self.assertLess(max(gaps), scaled(0.8 * WATCHDOG_USEC / 1e6), gaps)
        self.assertLess(pings[-1], msgs[-1][0])
        self.assertNotIn("watchdog pings withheld", c.log())

    def test_reload_says_reloading_then_ready_whether_applied_or_refused(self):
        conf = os.path.join(tempfile.mkdtemp(prefix="clickd-conf-"), "clickd.conf")
        self.addCleanup(shutil.rmtree, os.path.dirname(conf), True)
        with open(conf, "w") as f:
            f.write("[log]\nlevel = info\n")
        n = NotifyListener()
        self.addCleanup(n.close)
        c = SystemdClickd(args=["-c", conf], env={"NOTIFY_SOCKET": n.path})
        self.addCleanup(c.cleanup)
        self.addCleanup(c.stop)
        c.start()
        wait_for(lambda: n.with_field("READY=1"), 10, "READY=1")
        for content, outcome in [("[log]\nlevel = debug\n", "msg=reloaded"),
                                 ("[log]\nlevel = nonsense\n", "reload refused")]:
            with open(conf, "w") as f:
                f.write(content)
            before = len(n.snapshot())
            sent_at = time.monotonic()
            c.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: outcome in c.log(), 10, outcome)
            if outcome == "msg=reloaded":  # every thread has it: the next reload may come
                wait_for(lambda: "reload taken by every thread" in c.log(), 10, "the threads")
            wait_for(lambda: any(m.startswith("READY=1")
                                 for _, m in n.snapshot()[before:]), 10, "READY=1 again")
            msgs = [m for _, m in n.snapshot()[before:] if not m.startswith(("STATUS=",
                                                                              "WATCHDOG="))]
            self.assertEqual([m.split("\n")[0] for m in msgs], ["RELOADING=1", "READY=1"], msgs)
            # MONOTONIC_USEC: when the reload began, on CLOCK_MONOTONIC (Python's monotonic).
            usec = int(fields(msgs[0])["MONOTONIC_USEC"])
            self.assertGreaterEqual(usec / 1e6, sent_at - 0.001)
            self.assertLess(usec / 1e6, time.monotonic())
        self.assertEqual(c.get("/healthz").status, 200)  # still serving
        self.assertEqual(c.stop(), 0, c.log())

    def test_no_pings_for_another_pids_watchdog(self):
        c, n = self.start(watchdog_pid_ours=False)
        self.wait_ready(c, n)
        time.sleep(2 * WATCHDOG_USEC / 1e6)
        self.assertEqual(n.with_field("WATCHDOG=1"), [])
        self.assertEqual(c.stop(), 0, c.log())

    def test_no_watchdog_without_watchdog_usec(self):
        c, n = self.start(watchdog=False)
        self.wait_ready(c, n)
        time.sleep(2 * WATCHDOG_USEC / 1e6)
        self.assertEqual(n.with_field("WATCHDOG=1"), [])
        self.assertEqual(c.stop(), 0, c.log())
        self.assertTrue(n.with_field("STOPPING=1"))


class Watchdog(unittest.TestCase):
    """One event loop stopped for real: its thread is put in a ptrace stop (SIGSTOP would stop
    every thread, the main loop's too, and systemd would see silence for the wrong reason)."""

    def setUp(self):
        self.n = NotifyListener()
        self.addCleanup(self.n.close)
        self.c = SystemdClickd({"pipeline.ingest_threads": "2", "pipeline.shards": "2"},
                               env={"NOTIFY_SOCKET": self.n.path,
                                    "WATCHDOG_USEC": str(WATCHDOG_USEC)},
                               pid_vars=["WATCHDOG_PID"])
        self.addCleanup(self.c.cleanup)
        self.addCleanup(self.c.stop)
        self.c.start()
        self.pt = Ptrace()
        self.addCleanup(self.pt.resume_all)  # before the stop: cleanups run last-in first

    def pings_since(self, t0):
        return [t for t, _ in self.n.with_field("WATCHDOG=1") if t > t0]

    def check_stuck_loop_withholds_pings(self, thread, loop):
        wait_for(lambda: len(self.pings_since(0)) >= 2, 10, "the first pings")
        tid = self.c.threads()[thread]
        try:
            self.pt.stop(tid)
        except OSError as e:
            self.skipTest("ptrace is not permitted here: %s" % e)
        stopped_at = time.monotonic()
        wait_for(lambda: "watchdog pings withheld" in self.c.log(), 10,
                 "the log line saying pings are withheld")
        self.assertRegex(self.c.log(), r"watchdog pings withheld.* loop=%s " % loop)
        # No ping later than one interval after the stop (the last one may still have
        # been due when the loop stopped), for two intervals more.
        time.sleep(2 * WATCHDOG_USEC / 1e6)
        late = [t for t in self.pings_since(stopped_at + WATCHDOG_USEC / 1e6)]
        self.assertEqual(late, [], "pinged while %s was stuck" % loop)
        self.assertEqual(self.c.log().count("watchdog pings withheld"), 1, "logged once")
        # The loop moves again: pings resume.
        resumed_at = time.monotonic()
        self.pt.resume(tid)
        wait_for(lambda: self.pings_since(resumed_at), 10, "pings to resume")
        wait_for(lambda: "watchdog pings resume" in self.c.log(), 5, "the resume log line")
        self.assertEqual(self.c.get("/collect?eid=after&vid=v1").status, 204)
        self.assertEqual(self.c.stop(), 0, self.c.log())

    def test_stuck_shard_withholds_pings(self):
        self.check_stuck_loop_withholds_pings("clickd-shard1", "shard1")

    def test_stuck_ingest_loop_withholds_pings(self):
        self.check_stuck_loop_withholds_pings("clickd-ingest0", "ingest0")


if __name__ == "__main__":
    unittest.main()
