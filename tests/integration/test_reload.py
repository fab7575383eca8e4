"""SIGHUP reload on the real binary: live settings change while clickd keeps serving, a key
that needs a restart is named and left as it runs, a bad config is refused and the old one
keeps running, and the channel source lists are read again."""

import os
import shutil
import signal
import socket
import unittest
from urllib.parse import quote, urlencode

import clickd_harness as h


def beacon(**fields):
    return urlencode(fields, quote_via=quote)


class ReloadTest(unittest.TestCase):
    def setUp(self):
        self.c = h.Clickd()
        self.conf = os.path.join(self.c.dir, "clickd.conf")
        self.lists = os.path.join(self.c.dir, "channels")
        shutil.copytree(os.path.join(h.source_dir(), "conf", "channels"), self.lists)
        self.write_conf(origins="https://a.example", max_url=1024, rotate_s=3600)
        self.c.args = ["-c", self.conf]
        self.c.start()
        self.addCleanup(self.c.cleanup)

    def write_conf(self, origins, max_url, rotate_s, extra=""):
        with open(self.conf, "w") as f:
            f.write("[http]\ncors_origins = %s\nmax_url_bytes = %d\n"
                    "[sink.file]\nrotate_s = %d\n[channel]\nsources_dir = %s\n%s"
                    % (origins, max_url, rotate_s, self.lists, extra))

    def reload(self, expect):
        """SIGHUP, then wait for `expect` in the log; a reload that was applied is awaited
        until every thread has taken it."""
        taken = "reload taken by every thread"
        before, before_taken = self.c.log().count(expect), self.c.log().count(taken)
        self.c.proc.send_signal(signal.SIGHUP)
        h.wait_for(lambda: self.c.log().count(expect) > before, 10, "'%s' in the log" % expect)
        if expect == "msg=reloaded":
            h.wait_for(lambda: self.c.log().count(taken) > before_taken, 10,
                       "every thread to take the reload")

    def cors(self, origin):
        r = self.c.get("/collect?" + beacon(eid="x", vid="v"), headers={"Origin": origin})
        self.assertEqual(r.status, 204)
        return r.header("access-control-allow-origin")

    def long_url_status(self):
        # A fresh connection: limits apply to connections accepted after the reload.
        r = self.c.get("/collect?" + beacon(eid="long", vid="v", url="https://s.example/" + "a" * 1500))
        return r.status

    def test_live_settings_change_and_others_are_named_as_needing_a_restart(self):
        self.assertEqual(self.cors("https://a.example"), "https://a.example")
        self.assertIsNone(self.cors("https://b.example"))
        self.assertEqual(self.long_url_status(), 414)

        self.write_conf(origins="https://b.example", max_url=4096, rotate_s=60)
        self.reload("msg=reloaded")
        log = self.c.log()
        self.assertRegex(log, r"key=http\.cors_origins.*applied|applied.*key=http\.cors_origins")
        self.assertRegex(log, r"key=sink\.file\.rotate_s.*restart|restart.*key=sink\.file\.rotate_s")
        self.assertEqual(self.cors("https://b.example"), "https://b.example")
        self.assertIsNone(self.cors("https://a.example"))
        self.assertEqual(self.long_url_status(), 204)
        self.assertEqual(self.c.metric('clickd_reloads_applied_total'), 1)
        self.assertEqual(self.c.stop(), 0, self.c.log())

    def test_a_bad_config_is_refused_and_the_old_one_keeps_running(self):
        self.write_conf(origins="https://b.example", max_url=4096, rotate_s=3600,
                        extra="[session]\ntimeout_s = soon\n")
        self.reload("msg=\"reload refused")
        self.assertIn("session.timeout_s", self.c.log())
        # Still serving, with the old settings.
        self.assertEqual(self.cors("https://a.example"), "https://a.example")
        self.assertEqual(self.long_url_status(), 414)
        self.assertEqual(self.c.metric('clickd_reloads_refused_total'), 1)
        # A missing list file is refused too.
        self.write_conf(origins="https://b.example", max_url=4096, rotate_s=3600)
        os.rename(os.path.join(self.lists, "social.txt"), os.path.join(self.lists, "gone.txt"))
        self.reload("msg=\"reload refused")
        self.assertEqual(self.cors("https://a.example"), "https://a.example")
        self.assertEqual(self.c.metric('clickd_reloads_refused_total'), 2)
        self.assertEqual(self.c.stop(), 0, self.c.log())

    def test_channel_source_lists_are_read_again(self):
        ref = "https://www.findit.example/q"
        self.assertEqual(self.c.get("/collect?" + beacon(eid="r1", aid="a", vid="v1", ref=ref)).status, 204)
        with open(os.path.join(self.lists, "search.txt"), "a") as f:
            f.write("\nfindit.example\n")
        self.reload("msg=reloaded")  # waits for the shards to take the new lists too
        self.assertEqual(self.c.get("/collect?" + beacon(eid="r2", aid="a", vid="v2", ref=ref)).status, 204)
        self.assertEqual(self.c.stop(), 0, self.c.log())
        channels = {e["event_id"]: e["channel"] for e in self.c.records("events")}
        self.assertEqual(channels, {"r1": "Referral", "r2": "Organic Search"})


if __name__ == "__main__":
    unittest.main()
