"""Soak: a steady rate of mixed good and bad beacons for a bounded time.

Four HTTP clients (keep-alive, a batch every 20 ms) and one UDP sender run for
SOAK_SECONDS (60 s; 15 s under a sanitizer build, where LeakSanitizer checks at exit that
nothing leaked: stop_ok fails on its report). Every fifth beacon is bad in one of several
ways (bad percent-encoding, broken JSON, a field over the URL limit, too many fields,
bytes that are not UTF-8). What must hold:
  - every good event is written exactly once, every bad beacon is a dead letter, every
    request got the answer its content calls for;
  - RSS is flat once the bounded tables are full: the peak of the last third of the run is
    within RSS_GROWTH_ALLOWED of the peak of the middle third (the first third fills the
    dedup table, the visitors and the rings' touched pages);
  - clickd stops cleanly (exit 0; under ASan, no leak).
"""

import http.client
import json
import os
import socket
import threading
import time
import unittest
from urllib.parse import quote, urlencode

import clickd_harness as h

SANITIZED = bool(os.environ.get("CLICKD_SANITIZE"))
SOAK_SECONDS = 15 if SANITIZED else 60
CLIENTS = 4
BATCH = 5
PERIOD_S = 0.02
VISITORS = 300
RSS_GROWTH_ALLOWED = 2 * 1024 * 1024

SETTINGS = {
    "pipeline.ingest_threads": "2",
    "pipeline.shards": "2",
    "dedup.max_entries": "4096",   # full within the first seconds: flat from then on
    "session.max_visitors": "1000",
    "limits.max_fields": "16",
}


def good(eid, i):
    return urlencode({"e": "pv", "aid": "shop", "eid": eid, "vid": "v%d" % (i % VISITORS),
                      "url": "https://shop.example/p/%d" % (i % 50),
                      "refr": "https://www.google.com/"}, quote_via=quote)


# Bad beacons that ride in a good request (one line of a text batch): dead-lettered alone.
BAD_LINES = [
    lambda n: "e=pv&aid=shop&eid=bad-%s&url=%%zz" % n,                      # bad %-escape
    lambda n: "e=pv&aid=shop&eid=bad-%s&" % n + "&".join("f%d=x" % k for k in range(20)),
    lambda n: "e=pv&aid=shop&eid=bad-%s&url=%%ff%%fe" % n,                  # not UTF-8
]


class SoakTest(unittest.TestCase):
    def test_steady_mixed_load_stays_flat_and_loses_nothing(self):
        c = h.start_for(self, SETTINGS)
        pid = c.proc.pid
        stop = threading.Event()
        lock = threading.Lock()
        sent_good = set()
        counts = {"bad": 0, "requests": 0, "wrong_status": []}
        samples = []
        t0 = time.monotonic()

        def http_client(t):
            conn = http.client.HTTPConnection("127.0.0.1", c.http_port, timeout=h.scaled(30))
            n = 0
            next_at = time.monotonic()
            while not stop.is_set():
                n += 1
                lines, good_ids, bad = [], [], 0
                for k in range(BATCH):
                    i = n * BATCH + k
                    if i % 5 == 4:
                        lines.append(BAD_LINES[(i // 5) % len(BAD_LINES)]("%d-%d" % (t, i)))
                        bad += 1
                    else:
                        eid = "s-%d-%d" % (t, i)
                        lines.append(good(eid, i))
                        good_ids.append(eid)
                if n % 10 == 0:  # a whole bad request: broken JSON, answered 400
                    conn.request("POST", "/collect", body=b'{"e":"pv","aid":',
                                 headers={"Content-Type": "application/json"})
                    r = conn.getresponse()
                    r.read()
                    with lock:
                        counts["bad"] += 1
                        counts["requests"] += 1
                        if r.status != 400:
                            counts["wrong_status"].append(("json", r.status))
                if n % 25 == 0:  # a query over http.max_url_bytes: 414, dead-lettered
                    conn.request("GET", "/collect?e=pv&aid=shop&url=" + "x" * 5000)
                    r = conn.getresponse()
                    r.read()
                    with lock:
                        counts["bad"] += 1
                        counts["requests"] += 1
                        if r.status != 414:
                            counts["wrong_status"].append(("url", r.status))
                conn.request("POST", "/collect", body="\n".join(lines).encode(),
                             headers={"Content-Type": "text/plain"})
                r = conn.getresponse()
                r.read()
                if r.will_close:
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", c.http_port,
                                                      timeout=h.scaled(30))
                with lock:
                    counts["requests"] += 1
                    if r.status == 204:
                        sent_good.update(good_ids)
                        counts["bad"] += bad
                    else:
                        counts["wrong_status"].append(("batch", r.status))
                next_at += PERIOD_S
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            conn.close()

        def udp_client():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            n = 0
            while not stop.is_set():
                n += 1
                eid = "u-%d" % n
                if n % 5 == 0:
                    payload = "e=pv&aid=%"           # bad: dead-lettered
                else:
                    payload = good(eid, n)
                s.sendto(payload.encode(), ("127.0.0.1", c.udp_port))
                with lock:
                    if n % 5 == 0:
                        counts["bad"] += 1
                    else:
                        sent_good.add(eid)
                time.sleep(PERIOD_S)
            s.close()

        def sampler():
            while not stop.is_set():
                samples.append((time.monotonic() - t0, h.rss_bytes(pid)))
                time.sleep(0.25)

        errors = []

        def guarded(fn, *args):
            def run():
                try:
                    fn(*args)
                except Exception as e:  # a dead client thread fails the test below
                    errors.append(repr(e))
                    stop.set()
            return threading.Thread(target=run)

        threads = [guarded(http_client, t) for t in range(CLIENTS)]
        threads += [guarded(udp_client), guarded(sampler)]
        for t in threads:
            t.start()
        try:
            time.sleep(SOAK_SECONDS)
        finally:
            stop.set()
            for t in threads:
                t.join(h.scaled(30))
        self.assertIsNone(c.proc.poll(), "clickd died:\n" + c.log())
        self.assertEqual(errors, [])
        self.assertEqual(counts["wrong_status"], [])

        # Everything sent is accounted for before the stop: in as events or dead letters.
        h.wait_for(lambda: c.metric("clickd_events_in_total") >= len(sent_good), 30,
                   "every good event in")
        h.wait_for(lambda: sum(v for k, v in c.metrics().items()
                               if k.startswith("clickd_dead_letters_total")) >= counts["bad"],
                   30, "every bad beacon dead-lettered")
        h.stop_ok(self, c)

        third = SOAK_SECONDS / 3
        middle = max(r for t, r in samples if third <= t < 2 * third)
        last = max(r for t, r in samples if t >= 2 * third)
        first = max(r for t, r in samples if t < third)
        print("\nsoak: %d s, %d requests, %d good events, %d bad beacons; RSS peak by third "
              "%.1f / %.1f / %.1f MiB" % (SOAK_SECONDS, counts["requests"], len(sent_good),
                                          counts["bad"], first / 2**20, middle / 2**20,
                                          last / 2**20))
        events = c.records("events")
        eids = [e.get("event_id") for e in events]
        self.assertEqual(len(eids), len(set(eids)), "an event written twice")
        self.assertEqual(set(eids), sent_good)
        dead = c.records("dead_letters")
        self.assertEqual(len(dead), counts["bad"])
        for d in dead:
            self.assertTrue(d.get("reason"), d)
            json.dumps(d)
        if not SANITIZED:
            self.assertLessEqual(last - middle, RSS_GROWTH_ALLOWED,
                                 "RSS grows: %.1f MiB in the middle third, %.1f MiB in the last"
                                 % (middle / 2**20, last / 2**20))


if __name__ == "__main__":
    unittest.main()
