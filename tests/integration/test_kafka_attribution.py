"""Attribution through the real Kafka broker: the affiliate / email / paid-search story of
attribution_story.py; the attribution record read back from its topic (keyed by the
converting visitor) credits all three touchpoints as each model says, and the rollup
records of the conversion's minute, read back from theirs, hold the same revenue."""

import json
import unittest
import uuid

import attribution_story as story
import clickd_harness as h


class KafkaAttributionTest(unittest.TestCase):
    def test_the_attribution_and_rollup_records_are_read_back_from_kafka(self):
        bootstrap = h.kafka_bootstrap()
        run = uuid.uuid4().hex[:12]
        topics = {name: "it-a%s-%s" % (name[0], run)
                  for name in ("events", "touchpoints", "dead_letters", "attribution",
                               "rollups")}
        settings = dict(story.SETTINGS)
        settings["kafka.brokers"] = bootstrap
        for name, topic in topics.items():
            settings["kafka.topic." + name] = topic
        c = h.Clickd(settings)
        self.addCleanup(c.cleanup)
        c.start()
        v1, v2 = story.send(self, c, run)
        h.wait_for(lambda: c.metric("clickd_attribution_records_total") == 1, 20,
                   "the attribution record")
        # The open minutes' rollup rows are written at the stop, and flushed to Kafka.
        self.assertEqual(c.stop(), 0, c.log())

        events = [json.loads(v) for _, v in h.kafka_consume(bootstrap, topics["events"], 5)]
        self.assertEqual(len(events), 5)
        story.check_events(self, events, run)
        attribution = h.kafka_consume(bootstrap, topics["attribution"], 1)
        self.assertEqual(len(attribution), 1, attribution)
        key, value = attribution[0]
        record = json.loads(value)
        story.check_attribution(self, key, record, events, run, v1, v2)
        rollups = h.kafka_consume(bootstrap, topics["rollups"], 3)
        rows = [json.loads(v) for _, v in rollups]
        story.check_rollups(self, rows, record)
        for k, v in rollups:
            r = json.loads(v)
            self.assertEqual(k, "\x1f".join([r["app_id"], r["channel"], r.get("source", ""),
                                             r.get("medium", ""), r.get("campaign", "")]))
        touchpoints = [json.loads(v) for _, v in
                       h.kafka_consume(bootstrap, topics["touchpoints"], 3)]
        self.assertEqual(sorted(t["channel"] for t in touchpoints), sorted(story.CHANNELS))


if __name__ == "__main__":
    unittest.main()
