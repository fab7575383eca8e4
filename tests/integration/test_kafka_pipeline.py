"""Touchpoints through the real Kafka broker: 2 ingest threads and 2 shards, a few visitors
with sessions cut by campaign, inactivity and the stop; the touchpoint topic holds one
record per session, keyed by visitor, and the events carry their session."""

import json
import unittest
import uuid
from urllib.parse import quote, urlencode

import clickd_harness as h


def beacon(**fields):
    return urlencode(fields, quote_via=quote)


class KafkaPipelineTest(unittest.TestCase):
    def test_touchpoints_are_read_back_from_kafka(self):
        bootstrap = h.kafka_bootstrap()
        run = uuid.uuid4().hex[:12]
        topics = {"events": "it-pe-" + run, "touchpoints": "it-pt-" + run,
                  "dead_letters": "it-pd-" + run}
        c = h.Clickd({
            "pipeline.ingest_threads": "2",
            "pipeline.shards": "2",
            "session.timeout_s": "2",
            "kafka.brokers": bootstrap,
            "kafka.topic.events": topics["events"],
            "kafka.topic.touchpoints": topics["touchpoints"],
            "kafka.topic.dead_letters": topics["dead_letters"],
        })
        c.start()
        self.addCleanup(c.cleanup)
        page = "https://shop.example/"
        visitors = ["v%d" % i for i in range(10)]
        for v in visitors:
            # session 1: organic search; session 2: an email campaign (new_campaign)
            self.assertEqual(c.get("/collect?" + beacon(eid=v + "-1", aid="shop", vid=v, url=page,
                                                          ref="https://www.bing.com/")).status, 204)
            self.assertEqual(c.get("/collect?" + beacon(
                eid=v + "-2", aid="shop", vid=v,
                url=page + "?utm_source=news&utm_medium=email")).status, 204)
        # a conversion, then the email sessions time out (inactivity)
        self.assertEqual(c.get("/collect?" + beacon(eid="v0-3", aid="shop", vid="v0", e="cv",
                                                      rev="25", cur="USD")).status, 204)
        h.wait_for(lambda: c.metric('clickd_sessions_ended_total{reason="inactivity"}') == 10, 20,
                   "10 sessions to time out")
        # session 3 of v0, closed by the stop
        self.assertEqual(c.get("/collect?" + beacon(eid="v0-4", aid="shop", vid="v0")).status, 204)
        self.assertEqual(c.stop(), 0, c.log())

        touch = h.kafka_consume(bootstrap, topics["touchpoints"], 21)
        self.assertEqual(len(touch), 21)
        records = [json.loads(v) for _, v in touch]
        for key, v in touch:
            t = json.loads(v)
            self.assertEqual(key, "shop\x1f" + t["visitor_id"])
        reasons = sorted(t["end_reason"] for t in records)
        self.assertEqual(reasons, ["inactivity"] * 10 + ["new_campaign"] * 10 + ["shutdown"])
        first = [t for t in records if t["session_index"] == 1]
        self.assertEqual({t["channel"] for t in first}, {"Organic Search"})
        self.assertEqual({t["source"] for t in first}, {"bing"})
        second = {t["visitor_id"]: t for t in records if t["session_index"] == 2}
        self.assertEqual({t["channel"] for t in second.values()}, {"Email"})
        self.assertEqual(second["v0"]["conversions"], 1)
        self.assertEqual(second["v0"]["revenue"], 25)
        self.assertEqual(second["v0"]["currency"], "USD")

        events = h.kafka_consume(bootstrap, topics["events"], 22)
        self.assertEqual(len(events), 22)
        session_ids = {t["session_id"] for t in records}
        for _, v in events:
            e = json.loads(v)
            self.assertIn(e["session_id"], session_ids)


if __name__ == "__main__":
    unittest.main()
