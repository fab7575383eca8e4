"""The real JavaScript trackers, unmodified, in headless Chromium, against the real clickd.

tests/browser/run.mjs serves a test page on loopback that loads @snowplow/browser-tracker,
@segment/analytics-next (settings passed in, no CDN), @rudderstack/analytics-js (bundled
build, source config passed in) or gtag-style GA4 beacons, pointed at clickd on another
port (so every call is cross-origin, with the trackers' real preflights); Debian's
chromium, driven by playwright-core, opens it with UTM-tagged URLs and with a search
engine referrer. Then:
  - every tracker request was answered 2xx, none failed, and each tracker's retry queue
    (its localStorage) is empty: nothing rejected, nothing re-sent;
  - the events and touchpoints read back from the real Kafka broker carry, per tracker,
    the visit's source, medium, campaign and channel;
  - a 503 (a fault proxy answers the first POST 503 after clickd took it) makes the real
    Snowplow tracker keep and re-send its events, which clickd then keeps exactly once.
"""

import json
import os
import shutil
import subprocess
import tempfile
import unittest
import uuid

import clickd_harness as h

HERE = os.path.dirname(os.path.abspath(__file__))
BROWSER_DIR = os.path.join(HERE, "..", "browser")
CHROMIUM = "/usr/bin/chromium"
TRACKERS = ("snowplow", "segment", "rudderstack", "ga4")
# What page.js sends per visit: a page view, a custom event and a conversion.
EVENTS_PER_VISIT = 3


def modules_dir():
    out = subprocess.run([os.path.join(BROWSER_DIR, "browser.sh"), "install"],
                         capture_output=True, text=True, timeout=h.scaled(600))
    if out.returncode != 0:
        raise AssertionError("browser.sh install failed:\n" + out.stderr)
    return out.stdout.strip()


def run_browser(collector, visits, fail_first=0):
    spec = {"modules": modules_dir(), "chromium": CHROMIUM, "collector": collector,
            "timeout_ms": int(h.scaled(30) * 1000), "visits": visits,
            "fail_first": fail_first}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    try:
        out = subprocess.run(["node", os.path.join(BROWSER_DIR, "run.mjs"), f.name],
                             capture_output=True, text=True,
                             timeout=h.scaled(60 + 40 * len(visits)))
    finally:
        os.unlink(f.name)
    if out.returncode != 0:
        raise AssertionError("run.mjs failed (%d):\n%s" % (out.returncode, out.stderr))
    return json.loads(out.stdout)


def email_visit(tracker, run):
    return {"tracker": tracker, "tag": "%s-mail-%s" % (tracker, run),
            "query": "utm_source=newsletter&utm_medium=email&utm_campaign=spring-" + tracker,
            "referer": "https://mail.example.com/"}


def search_visit(tracker, run):
    return {"tracker": tracker, "tag": "%s-search-%s" % (tracker, run), "query": "",
            "referer": "https://www.google.com/"}


class BrowserTest(unittest.TestCase):
    def setUp(self):
        for tool in ("node", "npm"):
            if shutil.which(tool) is None:
                self.fail("%s is missing (dev.sh installs it with the test dependencies)" % tool)
        if not os.access(CHROMIUM, os.X_OK):
            self.fail("%s is missing (apt-get install chromium; dev.sh does)" % CHROMIUM)

    def assert_clean(self, visit):
        what = "%s (%s)" % (visit["tracker"], visit["tag"])
        self.assertFalse(visit["timed_out"], "%s: requests still in flight or queued: %r"
                         % (what, visit["queue_left"]))
        self.assertEqual(visit["errors"], [], what)
        self.assertTrue(visit["requests"], "%s sent nothing" % what)
        for r in visit["requests"]:
            self.assertIsNone(r["failure"], "%s: %s %s failed" % (what, r["method"], r["url"]))
            self.assertTrue(200 <= r["status"] < 300, "%s: %s %s answered %s"
                            % (what, r["method"], r["url"], r["status"]))
        for key, q in visit["queue_left"].items():
            self.assertEqual(q["items"], 0, "%s: queue %s not empty: %s" % (what, key, q["value"]))

    def test_real_trackers_to_kafka_with_campaigns_and_channels(self):
        bootstrap = h.kafka_bootstrap()
        run = uuid.uuid4().hex[:10]
        topics = {k: "it-br%s-%s" % (k[0], run) for k in ("events", "touchpoints",
                                                          "dead_letters")}
        c = h.start_for(self, {
            "kafka.brokers": bootstrap,
            "kafka.topic.events": topics["events"],
            "kafka.topic.touchpoints": topics["touchpoints"],
            "kafka.topic.dead_letters": topics["dead_letters"],
        })
        visits = [v(t, run) for t in TRACKERS for v in (email_visit, search_visit)]
        result = run_browser("http://127.0.0.1:%d" % c.http_port, visits)
        for visit in result["results"]:
            self.assert_clean(visit)
        h.stop_ok(self, c)  # open sessions end as shutdown: their touchpoints go out

        expected = EVENTS_PER_VISIT * len(visits)
        events = [json.loads(v) for _, v in h.kafka_consume(bootstrap, topics["events"], expected)]
        dead = h.kafka_consume(bootstrap, topics["dead_letters"], 0, timeout=0)
        self.assertEqual(dead, [], "dead letters from real trackers")
        by_protocol = {}
        for e in events:
            by_protocol.setdefault(e["protocol"], []).append(e)
        summary = {p: len(v) for p, v in by_protocol.items()}
        self.assertEqual(len(events), expected, summary)
        self.assertEqual(sorted(summary), sorted(TRACKERS))
        touchpoints = [json.loads(v) for _, v in
                       h.kafka_consume(bootstrap, topics["touchpoints"], len(visits))]
        self.assertEqual(len(touchpoints), len(visits), touchpoints)
        for tracker in TRACKERS:
            mine = by_protocol[tracker]
            mail = [e for e in mine if e.get("campaign") == "spring-" + tracker]
            search = [e for e in mine if e.get("campaign") != "spring-" + tracker]
            self.assertEqual(len(mail), EVENTS_PER_VISIT, (tracker, mine))
            self.assertEqual(len(search), EVENTS_PER_VISIT, (tracker, mine))
            for e in mail:
                self.assertEqual((e["source"], e["medium"], e["channel"]),
                                 ("newsletter", "email", "Email"), e)
            for e in search:
                self.assertEqual((e["source"], e["medium"], e["channel"]),
                                 ("google", "organic", "Organic Search"), e)
            self.assertEqual(len({e["session_id"] for e in mail}), 1, mail)
            tps = [t for t in touchpoints if t["session_id"] in
                   {e["session_id"] for e in mine}]
            self.assertEqual(sorted(t["channel"] for t in tps), ["Email", "Organic Search"],
                             (tracker, tps))
        print("\nbrowser: %d visits, %d events by protocol %r, %d touchpoints"
              % (len(visits), len(events), summary, len(touchpoints)))

    def test_snowplow_keeps_and_resends_after_a_503_and_clickd_keeps_it_once(self):
        c = h.start_for(self, {})
        run = uuid.uuid4().hex[:10]
        result = run_browser("http://127.0.0.1:%d" % c.http_port,
                             [email_visit("snowplow", run)], fail_first=1)
        visit = result["results"][0]
        posts = [p for p in result["proxy_log"] if p["method"] == "POST"]
        # The first POST reached clickd (200) but the tracker saw 503; it re-sent.
        self.assertEqual((posts[0]["upstream"], posts[0]["answered"]), (200, 503), posts)
        self.assertGreaterEqual(len(posts), 2, "the tracker did not re-send: %r" % posts)
        self.assertTrue(all(p["answered"] == 200 for p in posts[1:]), posts)
        self.assertFalse(visit["timed_out"], visit["queue_left"])
        for key, q in visit["queue_left"].items():
            self.assertEqual(q["items"], 0, "queue %s not empty: %s" % (key, q["value"]))
        self.assertEqual([e for e in visit["errors"] if "503" not in e], [])
        h.wait_for(lambda: c.metric("clickd_duplicates_total") >= EVENTS_PER_VISIT, 10,
                   "the re-sent events counted as duplicates")
        duplicates = c.metric("clickd_duplicates_total")
        h.stop_ok(self, c)
        events = [e for e in c.records("events") if e.get("protocol") == "snowplow"]
        ids = [e["event_id"] for e in events]
        self.assertEqual(len(ids), EVENTS_PER_VISIT, events)
        self.assertEqual(len(set(ids)), EVENTS_PER_VISIT, ids)
        print("\nsnowplow after a 503: %d POSTs (first answered 503 after clickd took it), "
              "%d events kept, %d duplicates dropped"
              % (len(posts), len(ids), duplicates))


if __name__ == "__main__":
    unittest.main()
