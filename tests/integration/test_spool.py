"""The Kafka sink's disk spool seen from outside, with no broker at all (kafka.brokers points
at a closed port): records go to the spool and clickd stays ready while it has room; once
it is full the back-pressure chain answers 503 with Retry-After, /readyz says not ready and
the metrics say why. The real-broker faults are in test_kafka_faults.py."""

import os
import random
import time
import unittest

import clickd_harness as h


def beacon_lines(start, n, pad):
    return "\n".join("eid=sp-%d&aid=shop&vid=v%d&url=https%%3A%%2F%%2Fshop.example%%2F%s"
                     % (i, i % 13, pad) for i in range(start, start + n))


class Spool(unittest.TestCase):
    def test_a_full_spool_answers_503_and_makes_clickd_unready(self):
        c = h.start_for(self, {
            "kafka.brokers": "127.0.0.1:1",
            "spool.max_bytes": "1048576",
            "spool.segment_bytes": "1048576",
            "kafka.flush_timeout_ms": "1000",
            "pipeline.ingest_threads": "1",
            "pipeline.shards": "1",
            "pipeline.ring_slots": "64",
        })
        h.wait_for(lambda: c.metric("clickd_spool_active") == 1, 30,
                   "the sink to see Kafka away")
        rng = random.Random(7)
        taken = 0
        full = None
        for r in range(5000):
            # Random hex does not compress much: 1 MiB fills within a few hundred requests.
            pad = "%x" % rng.getrandbits(8000)
            resp = c.post("/collect", beacon_lines(r * 10, 10, pad), "text/plain")
            if resp.status == 503:
                # A ring can fill for a moment while the shard is busy (slow builds): only
                # a full spool makes clickd unready.
                full = resp
                if c.admin("/readyz").status == 503:
                    break
                time.sleep(0.05)
                continue
            self.assertEqual(resp.status, 204, resp)
            taken += 10
            if r == 0:
                self.assertEqual(c.admin("/readyz").status, 200,
                                 "Kafka away but the spool has room: still ready")
        self.assertIsNotNone(full, "never 503 after %d beacons into a 1 MiB spool" % taken)
        self.assertIsNotNone(full.header("retry-after"))
        self.assertEqual(c.admin("/readyz").status, 503, "not unready with a full spool")
        h.wait_for(lambda: c.metric("clickd_spool_full") == 1, 10, "clickd_spool_full")
        m = c.metrics()
        self.assertGreater(m["clickd_spool_full_refusals_total"], 0)
        self.assertGreater(m["clickd_shard_sink_full_total"], 0)
        self.assertGreater(m["clickd_spool_bytes"], 512 * 1024)
        self.assertLessEqual(m["clickd_spool_bytes"], 1048576)
        self.assertGreaterEqual(m["clickd_spool_records_spooled_total"], taken * 0.9)
        self.assertEqual(m['clickd_sink_failures_total{sink="kafka",stream="events"}'], 0)
        spool = os.path.join(c.dir, "spool")
        self.assertTrue(any(n.endswith(".seg") for n in os.listdir(spool)))
        # Still full a second later: not ready, and the spool still refuses.
        refusals = m["clickd_spool_full_refusals_total"]
        h.wait_for(lambda: c.metric("clickd_spool_full_refusals_total") > refusals, 10,
                   "the shard to retry the record it holds")
        self.assertEqual(c.admin("/readyz").status, 503)
        # At the stop the shard retries what it holds for kafka.flush_timeout_ms: 0 when it
        # found room, or 1 and a line naming what was not written.
        code = c.stop()
        if code != 0:
            self.assertEqual(code, 1, c.log())
            self.assertIn("sink still full at stop", c.log())

        # Restarted on the full spool with Kafka still away: not ready from the start (not
        # only from the first refusal).
        again = h.Clickd(c.settings, workdir=c.dir)
        self.addCleanup(again.cleanup)
        self.addCleanup(again.stop)
        again.start()
        self.assertIn("spool full at start", again.log())
        self.assertEqual(again.admin("/readyz").status, 503)
        h.wait_for(lambda: again.metric("clickd_spool_full") == 1, 10, "clickd_spool_full")
        again.stop()


if __name__ == "__main__":
    unittest.main()
