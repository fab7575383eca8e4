"""session.state_file on the real binary with the file sink: a clean stop saves the open
sessions instead of cutting them (no touchpoint with end_reason shutdown), the next start
resumes them -- same session_id, counters over both runs, duplicates across the restart
caught -- also with another pipeline.shards; sessions that ran out while clickd was down end
at start as inactivity; a corrupt or truncated file is moved aside and clickd starts empty;
a kill -9 leaves no state file."""

import os
import re
import shutil
import signal
import tempfile
import time
import unittest
from urllib.parse import urlencode

import clickd_harness as h

VISITORS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace"]


class StateFile(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="clickd-state-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.state = os.path.join(self.dir, "sessions.state")
        self.data_dir = os.path.join(self.dir, "data")

    def run_clickd(self, **settings):
        s = {"session.state_file": self.state}
        s.update({k.replace("__", "."): str(v) for k, v in settings.items()})
        c = h.Clickd(s, workdir=self.dir)
        self.addCleanup(c.cleanup)
        self.addCleanup(c.stop)
        c.start()
        return c

    def send(self, c, **fields):
        fields.setdefault("aid", "shop")
        r = c.get("/collect?" + urlencode(fields))
        self.assertEqual(r.status, 204, r)

    def first_run(self, c):
        """Two events per visitor: a campaign landing, then an internal page."""
        for v in VISITORS:
            self.send(c, eid=v + "-1", vid=v,
                      url="https://shop.example/?utm_source=news&utm_medium=email"
                          "&utm_campaign=spring")
            self.send(c, eid=v + "-2", vid=v, url="https://shop.example/shoes")

    def second_run(self, c):
        """A retry from the first run (a duplicate), then two more pages and a conversion."""
        for v in VISITORS:
            self.send(c, eid=v + "-2", vid=v, url="https://shop.example/shoes")
            self.send(c, eid=v + "-3", vid=v, url="https://shop.example/cart")
            self.send(c, eid=v + "-4", vid=v, e="cv", rev="10.5", cur="EUR",
                      url="https://shop.example/thanks")

    def events(self):
        return h.read_records(self.data_dir, "events")

    def touchpoints(self):
        return h.read_records(self.data_dir, "touchpoints")

    def log_fields(self, c, msg):
        """The key=value pairs of the log line with msg="<msg>"."""
        for line in c.log().splitlines():
            if 'msg="%s"' % msg in line:
                return dict(re.findall(r'(\w+)=("[^"]*"|\S+)', line))
        self.fail("no %r line in the log:\n%s" % (msg, c.log()))

    def stop_saving(self, c):
        h.stop_ok(self, c)
        self.assertTrue(os.path.exists(self.state), c.log())
        return self.log_fields(c, "state saved")

    def stop_cutting(self, c):
        """Stops c so that its open sessions close as shutdown: the save fails (a directory
        sits where its temporary file goes) and clickd falls back to closing them."""
        os.mkdir(self.state + ".tmp")
        h.stop_ok(self, c)
        os.rmdir(self.state + ".tmp")
        self.assertIn("closing the open sessions as shutdown", c.log())

    # ---- the tests ----

    def check_resume(self, first, second):
        c = self.run_clickd(**first)
        self.assertEqual(self.log_fields(c, "no state file: no sessions to resume")["path"],
                         self.state)
        self.first_run(c)
        saved = self.stop_saving(c)
        self.assertEqual(saved["sessions"], str(len(VISITORS)))
        self.assertEqual(self.touchpoints(), [], "no session was cut at the stop")
        ids = {e["visitor_id"]: e["session_id"] for e in self.events()}
        self.assertEqual(len(ids), len(VISITORS))
        self.assertEqual(len(set(ids.values())), len(VISITORS))

        c = self.run_clickd(**second)
        restored = self.log_fields(c, "state restored")
        self.assertEqual(restored["saved_shards"], str(first["pipeline__shards"]))
        self.assertEqual(restored["shards"], str(second["pipeline__shards"]))
        self.assertEqual(restored["sessions"], str(len(VISITORS)))
        self.assertEqual(restored["resumed"], str(len(VISITORS)))
        self.assertFalse(os.path.exists(self.state), "the file is gone once restored")
        self.assertEqual(c.metric("clickd_sessions_restored_total"), len(VISITORS))
        self.assertEqual(c.metric("clickd_sessions_open"), len(VISITORS))
        self.second_run(c)
        h.wait_for(lambda: c.metric("clickd_duplicates_total") == len(VISITORS), 30,
                   "the retried events to be caught as duplicates")
        self.assertEqual(c.metric("clickd_sessions_started_total"), 0,
                         "no new session: the old ones went on")
        self.stop_cutting(c)

        events = self.events()
        self.assertEqual(sorted(e["event_id"] for e in events),
                         sorted("%s-%d" % (v, k) for v in VISITORS for k in (1, 2, 3, 4)),
                         "every event once: the retry was a duplicate")
        for e in events:
            self.assertEqual(e["session_id"], ids[e["visitor_id"]], e)
            self.assertEqual(e["session_index"], 1, e)
        tps = self.touchpoints()
        self.assertEqual(sorted(t["visitor_id"] for t in tps), sorted(VISITORS),
                         "exactly one touchpoint per visitor")
        for t in tps:
            v = t["visitor_id"]
            self.assertEqual(t["session_id"], ids[v], t)
            self.assertEqual(t["session_index"], 1, t)
            self.assertEqual(t["events"], 4, t)
            self.assertEqual(t["page_views"], 3, t)
            self.assertEqual(t["conversions"], 1, t)
            self.assertEqual(t["revenue"], 10.5, t)
            self.assertEqual(t["currency"], "EUR", t)
            self.assertEqual(t["campaign"], "spring", t)
            self.assertEqual(t["source"], "news", t)
            self.assertEqual(t["channel"], "Email", t)
            self.assertEqual(t["landing_url"], "https://shop.example/?utm_source=news"
                             "&utm_medium=email&utm_campaign=spring", t)
            self.assertEqual(t["exit_url"], "https://shop.example/thanks", t)
            first = [e for e in events if e["event_id"] == v + "-1"][0]
            last = [e for e in events if e["event_id"] == v + "-4"][0]
            self.assertEqual(t["started_at"], first["received_at"], t)
            self.assertEqual(t["ended_at"], last["received_at"], t)
            self.assertEqual(t["end_reason"], "shutdown", t)
        # The conversions were credited to the touchpoint saved in the first run.
        for a in h.read_records(self.data_dir, "attribution"):
            self.assertEqual([tp["session_id"] for tp in a["touchpoints"]],
                             [ids[a["visitor_id"]]], a)
            self.assertEqual(a["touchpoints"][0]["campaign"], "spring", a)

    def test_a_restart_resumes_the_open_sessions(self):
        self.check_resume({"pipeline__shards": 2}, {"pipeline__shards": 2})

    def test_a_restart_with_another_shard_count_resumes_them_on_their_new_shards(self):
        self.check_resume({"pipeline__shards": 3, "pipeline__ingest_threads": 2},
                          {"pipeline__shards": 2, "pipeline__ingest_threads": 1})

    def test_sessions_that_timed_out_while_clickd_was_down_end_at_start(self):
        c = self.run_clickd(pipeline__shards=2)
        self.first_run(c)
        self.stop_saving(c)
        last_event = {e["visitor_id"]: e for e in self.events() if e["event_id"].endswith("-2")}
        # The restart gap is at least this long, whatever the machine: with a 1 s timeout at
        # the next start, every saved session has run out, and by more than one wheel tick
        # (SESSION_TICK_MS, 250 ms: a deadline is rounded up to its tick, the clock down),
        # so the restore ends them all at once. 1.2 s was not enough when the ticks fell badly.
        time.sleep(1.6)
        c = self.run_clickd(pipeline__shards=2, session__timeout_s=1)
        restored = self.log_fields(c, "state restored")
        self.assertEqual(restored["ended_inactivity"], str(len(VISITORS)))
        self.assertEqual(restored["resumed"], "0")
        self.assertEqual(c.metric("clickd_sessions_open"), 0)
        self.send(c, eid="alice-9", vid="alice")
        h.stop_ok(self, c)
        tps = [t for t in self.touchpoints() if t["end_reason"] == "inactivity"]
        self.assertEqual(sorted(t["visitor_id"] for t in tps), sorted(VISITORS))
        for t in tps:
            self.assertEqual(t["events"], 2, t)
            self.assertEqual(t["session_id"], last_event[t["visitor_id"]]["session_id"], t)
            self.assertEqual(t["ended_at"], last_event[t["visitor_id"]]["received_at"], t)
        again = [e for e in self.events() if e["event_id"] == "alice-9"][0]
        self.assertEqual(again["session_index"], 2, "the visitor's next session")

    def check_starts_empty(self, content, reason, old_id):
        with open(self.state, "wb") as f:
            f.write(content)
        c = self.run_clickd()
        fields = self.log_fields(c, "state file not used; starting with no open sessions")
        self.assertIn(reason, fields["err"])
        self.assertIn("moved to %s.bad" % self.state, fields["err"])
        self.assertFalse(os.path.exists(self.state))
        with open(self.state + ".bad", "rb") as f:
            self.assertEqual(f.read(), content, "moved aside as it was")
        self.assertEqual(c.metric("clickd_sessions_open"), 0)
        self.send(c, eid="after", vid="alice")
        h.stop_ok(self, c)
        after = [e for e in self.events() if e["event_id"] == "after"]
        self.assertEqual(len(after), 1)
        self.assertNotEqual(after[0]["session_id"], old_id, "a new session: nothing resumed")
        os.unlink(self.state + ".bad")
        os.unlink(self.state)

    def test_a_corrupt_or_truncated_file_is_moved_aside_and_clickd_starts_empty(self):
        c = self.run_clickd()
        self.first_run(c)
        self.stop_saving(c)
        old_id = [e for e in self.events() if e["visitor_id"] == "alice"][0]["session_id"]
        with open(self.state, "rb") as f:
            good = f.read()
        shutil.rmtree(self.data_dir)
        self.check_starts_empty(good[:len(good) // 2], "truncated", old_id)
        shutil.rmtree(self.data_dir)
        flipped = bytearray(good)
        flipped[len(good) - 20] ^= 0x01
        self.check_starts_empty(bytes(flipped), "checksum", old_id)
        shutil.rmtree(self.data_dir)
        self.check_starts_empty(b"[session]\ntimeout_s = 1800\n", "not a clickd state file",
                                old_id)

    def test_a_kill_9_leaves_no_state_file(self):
        c = self.run_clickd()
        self.first_run(c)
        c.kill()
        self.assertFalse(os.path.exists(self.state))
        c = self.run_clickd()
        self.log_fields(c, "no state file: no sessions to resume")
        h.stop_ok(self, c)

    def test_a_state_file_in_a_missing_directory_fails_the_start(self):
        self.state = os.path.join(self.dir, "no-such-dir", "state")
        c = h.Clickd({"session.state_file": self.state}, workdir=self.dir)
        self.addCleanup(c.cleanup)
        c.start(wait=False)
        self.assertEqual(c.proc.wait(h.scaled(30)), 1)
        c.stop()
        self.assertIn("key=session.state_file", c.log())
        self.assertIn("does not exist", c.log())


if __name__ == "__main__":
    unittest.main()
