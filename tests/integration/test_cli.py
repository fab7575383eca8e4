"""The command line of the real binary, as CONTRACTS.md says: --version, --help, config
errors (exit 2 naming the key) from --set and from an INI file, --check-config and
--dump-options. (That conf/clickd.conf matches the option table is also checked by
tests/unit/test_config.c on config_dump_options(); here it is the binary's flag.)"""

import os
import shutil
import subprocess
import tempfile
import unittest

from clickd_harness import binary, scaled, source_dir


def run(*args, cwd=None):
    return subprocess.run([binary()] + list(args), capture_output=True, text=True,
                          timeout=scaled(30), cwd=cwd, stdin=subprocess.DEVNULL)


class Cli(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="clickd-cli-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def ini(self, text):
        path = os.path.join(self.dir, "clickd.conf")
        with open(path, "w") as f:
            f.write(text)
        return path

    def assert_config_error(self, p, key):
        self.assertEqual(p.returncode, 2, (p.stdout, p.stderr))
        self.assertIn(key, p.stderr)
        self.assertEqual(p.stdout, "")
        # no daemon was started: nothing written
        self.assertEqual(os.listdir(self.dir), [] if not os.path.exists(
            os.path.join(self.dir, "clickd.conf")) else ["clickd.conf"])

    def test_version_prints_the_version_and_exits_0(self):
        p = run("--version")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"^clickd \d+\.\d+\.\d+\n$")

    def test_help_prints_the_usage_and_exits_0(self):
        for flag in ("--help", "-h"):
            p = run(flag)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertTrue(p.stdout.startswith("usage: clickd"), p.stdout)
            for opt in ("-c", "--set", "--check-config", "--dump-options", "--version"):
                self.assertIn(opt, p.stdout)

    def test_an_unknown_option_or_argument_is_a_usage_error(self):
        for args in (["--frobnicate"], ["extra-argument"], ["-c"]):
            p = run(*args, cwd=self.dir)
            self.assertEqual(p.returncode, 2, (args, p.stderr))
            self.assertIn("usage", p.stderr)

    def test_an_unknown_key_in_set_exits_2_naming_it(self):
        p = run("--set", "http.no_such_key=1", cwd=self.dir)
        self.assert_config_error(p, "http.no_such_key")

    def test_a_bad_value_in_set_exits_2_naming_the_key(self):
        cases = [("http.max_connections=lots", "http.max_connections"),
                 ("http.max_connections=0", "http.max_connections"),
                 ("http.listen=localhost:80", "http.listen"),
                 ("privacy.honor_gpc=maybe", "privacy.honor_gpc"),
                 ("sink.file.compress=gzip", "sink.file.compress"),
                 ("http.trusted_proxies=10.0.0.0/33", "http.trusted_proxies"),
                 ("http.cors_origins=shop.example", "http.cors_origins")]
        for arg, key in cases:
            p = run("--set", arg, cwd=self.dir)
            self.assert_config_error(p, key)

    def test_a_malformed_set_is_a_usage_error(self):
        p = run("--set", "no-equals-sign", cwd=self.dir)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("no-equals-sign", p.stderr)

    def test_an_unknown_key_in_the_file_exits_2_naming_it_and_the_line(self):
        path = self.ini("[http]\nlisten = 127.0.0.1:0\n\n[udp]\nbogus = 1\n")
        p = run("-c", path, cwd=self.dir)
        self.assert_config_error(p, "udp.bogus")
        self.assertIn("line 5", p.stderr)

    def test_a_bad_value_in_the_file_exits_2_naming_the_key(self):
        path = self.ini("[limits]\nmax_batch = -1\n")
        p = run("-c", path, cwd=self.dir)
        self.assert_config_error(p, "limits.max_batch")

    def test_a_missing_file_exits_2_naming_it(self):
        p = run("-c", os.path.join(self.dir, "missing.conf"), cwd=self.dir)
        self.assertEqual(p.returncode, 2)
        self.assertIn("missing.conf", p.stderr)

    def test_check_config_prints_the_effective_config_and_exits_0(self):
        path = self.ini("[limits]\nmax_batch = 7\n\n[http]\ncors_origins = https://a.example\n")
        p = run("-c", path, "--set", "limits.max_batch=9", "--set", "sink.file.dir=/x/y",
                "--set", "kafka.producer.linger.ms=7", "--check-config", cwd=self.dir)
        self.assertEqual(p.returncode, 0, p.stderr)
        sections = {}
        section = None
        for line in p.stdout.splitlines():
            if line.startswith("["):
                section = line.strip("[]")
            elif " = " in line:
                k, _, v = line.partition(" = ")
                sections.setdefault(section, {})[k] = v
        self.assertEqual(sections["limits"]["max_batch"], "9")  # --set wins over the file
        self.assertEqual(sections["http"]["cors_origins"], "https://a.example")
        self.assertEqual(sections["sink.file"]["dir"], "/x/y")
        self.assertEqual(sections["http"]["max_url_bytes"], "4096")  # a default
        self.assertEqual(sections["kafka.producer"]["linger.ms"], "7")
        # validating starts nothing
        self.assertEqual(sorted(os.listdir(self.dir)), ["clickd.conf"])

    def test_check_config_output_is_a_config_that_loads(self):
        p = run("--set", "limits.max_batch=11", "--check-config", cwd=self.dir)
        self.assertEqual(p.returncode, 0, p.stderr)
        path = self.ini(p.stdout)
        p2 = run("-c", path, "--check-config", cwd=self.dir)
        self.assertEqual(p2.returncode, 0, p2.stderr)
        self.assertEqual(p2.stdout, p.stdout)

    def test_check_config_with_a_bad_key_exits_2(self):
        p = run("--set", "nope.nope=1", "--check-config", cwd=self.dir)
        self.assert_config_error(p, "nope.nope")

    def test_dump_options_prints_conf_clickd_conf(self):
        p = run("--dump-options", cwd=self.dir)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(os.path.join(source_dir(), "conf", "clickd.conf")) as f:
            self.assertEqual(p.stdout, f.read())

    def test_the_shipped_config_file_loads(self):
        p = run("-c", os.path.join(source_dir(), "conf", "clickd.conf"), "--check-config",
                cwd=self.dir)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_a_port_in_use_is_a_runtime_failure_exit_1(self):
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        try:
            port = s.getsockname()[1]
            p = run("--set", "http.listen=127.0.0.1:%d" % port, "--set", "udp.listen=",
                    "--set", "admin.listen=", "--set", "sink.file.dir=" + self.dir, cwd=self.dir)
        finally:
            s.close()
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("http.listen", p.stderr)


if __name__ == "__main__":
    unittest.main()
