"""The Kafka sink against the real Apache Kafka broker of the ctest fixture `kafka`.

10,000 beacons go in over HTTP keep-alive connections from several client threads; after a
TERM, the events topic holds exactly 10,000 distinct events, each keyed by its visitor key,
and bad beacons are in the dead-letter topic with their reason.
"""

import http.client
import json
import threading
import time
import unittest
import uuid
from urllib.parse import quote

import clickd_harness as h

BEACONS = 10000
THREADS = 4


def beacon_path(i, run):
    url = "https://shop.example/p/%d?utm_source=news&utm_medium=email" % (i % 50)
    return "/collect?eid=%s-%d&aid=shop&vid=v%d&url=%s" % (run, i, i % 997, quote(url, safe=""))


class KafkaSinkTest(unittest.TestCase):
    def setUp(self):
        self.bootstrap = h.kafka_bootstrap()
        self.run_id = uuid.uuid4().hex[:12]
        self.topics = {
            "events": "it-events-" + self.run_id,
            "dead_letters": "it-dead-" + self.run_id,
            "touchpoints": "it-touch-" + self.run_id,
        }
        self.clickd = h.Clickd({
            "kafka.brokers": self.bootstrap,
            "kafka.topic.events": self.topics["events"],
            "kafka.topic.dead_letters": self.topics["dead_letters"],
            "kafka.topic.touchpoints": self.topics["touchpoints"],
        })
        self.clickd.start()

    def tearDown(self):
        try:
            self.clickd.stop()
        finally:
            self.clickd.cleanup()

    retries = 0

    def send_range(self, start, stop, statuses):
        conn = http.client.HTTPConnection("127.0.0.1", self.clickd.http_port,
                                          timeout=h.scaled(30))
        try:
            for i in range(start, stop):
                # As a tracker does: 503 (back-pressure, nothing taken) means retry later.
                for _ in range(200):
                    conn.request("GET", beacon_path(i, self.run_id))
                    r = conn.getresponse()
                    r.read()
                    statuses[i] = r.status
                    if r.status != 503:
                        break
                    self.retries += 1
                    time.sleep(0.05)
        finally:
            conn.close()

    def test_ten_thousand_beacons_become_ten_thousand_distinct_events(self):
        statuses = [None] * BEACONS
        per = BEACONS // THREADS
        threads = [threading.Thread(target=self.send_range, args=(t * per, (t + 1) * per, statuses))
                   for t in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(statuses.count(204), BEACONS,
                         "answers other than 204: %r" % sorted(set(statuses)))
        print("retries after 503: %d" % self.retries)

        # Two bad beacons: dead letters with their reasons.
        self.assertEqual(self.clickd.get("/collect?eid=bad-1&e=nope").status, 400)
        self.assertEqual(self.clickd.get("/collect?eid=bad-2&ts=yesterday").status, 400)

        self.assertEqual(self.clickd.stop(), 0, self.clickd.log())

        got = h.kafka_consume(self.bootstrap, self.topics["events"], BEACONS)
        ids = [json.loads(v)["event_id"] for _, v in got]
        self.assertEqual(len(ids), BEACONS, "events in the topic")
        self.assertEqual(len(set(ids)), BEACONS, "distinct events in the topic")
        self.assertEqual(set(ids), {"%s-%d" % (self.run_id, i) for i in range(BEACONS)})
        for key, value in got[:200]:
            ev = json.loads(value)
            self.assertEqual(key, "shop\x1f" + ev["visitor_id"], "message key = visitor key")
            self.assertEqual(ev["source"], "news")
            self.assertEqual(ev["medium"], "email")
            self.assertEqual(ev["protocol"], "native")

        dead = h.kafka_consume(self.bootstrap, self.topics["dead_letters"], 2)
        self.assertEqual(len(dead), 2)
        reasons = sorted(json.loads(v)["reason"] for _, v in dead)
        self.assertTrue(any("field e" in r for r in reasons), reasons)
        self.assertTrue(any("field ts" in r for r in reasons), reasons)
        for _, v in dead:
            d = json.loads(v)
            self.assertIn("eid=bad-", d["payload"])
            self.assertEqual(d["protocol"], "native")

    def test_metrics_count_kafka_deliveries(self):
        for i in range(100):
            self.assertEqual(self.clickd.get(beacon_path(i, self.run_id)).status, 204)
        h.wait_for(lambda: self.clickd.metric(
            'clickd_records_out_total{sink="kafka",stream="events"}') == 100, 60,
            "100 delivery reports")
        self.assertEqual(self.clickd.metric(
            'clickd_sink_failures_total{sink="kafka",stream="events"}'), 0)
        self.assertEqual(self.clickd.admin("/readyz").status, 200)


if __name__ == "__main__":
    unittest.main()
