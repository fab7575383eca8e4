"""The pipeline on the real binary, with 2 ingest threads and 2 shards: duplicates over HTTP
and UDP counted once, a visitor's sessions split by inactivity and by campaign, a
conversion's revenue in its touchpoint, channels on events and touchpoints."""

import json
import threading
import unittest
from urllib.parse import quote, urlencode

import clickd_harness as h

PIPELINE = {
    "pipeline.ingest_threads": "2",
    "pipeline.shards": "2",
}


def beacon(**fields):
    return urlencode(fields, quote_via=quote)


class PipelineTest(unittest.TestCase):
    def start(self, **extra):
        settings = dict(PIPELINE)
        settings.update(extra)
        c = h.Clickd(settings)
        c.start()
        self.addCleanup(c.cleanup)
        self.assertIn("ingest_threads=%s shards=%s" % (settings["pipeline.ingest_threads"],
                                                        settings["pipeline.shards"]), c.log())
        return c

    def test_duplicates_over_http_and_udp_are_written_once_and_counted(self):
        c = self.start()
        b = beacon(eid="dup-1", aid="shop", vid="v1", url="https://shop.example/")
        self.assertEqual(c.get("/collect?" + b).status, 204)
        self.assertEqual(c.get("/pixel.gif?" + b).status, 200)  # a retry over HTTP
        c.udp(b + "\n")                                        # and over UDP
        self.assertEqual(c.post("/collect", json.dumps({"eid": "dup-1", "aid": "shop", "vid": "v1"}),
                                "application/json").status, 204)
        # Same eid in another app: not a duplicate.
        self.assertEqual(c.get("/collect?" + beacon(eid="dup-1", aid="blog", vid="v1")).status, 204)
        # Without an eid, the same payload twice is a duplicate.
        nb = beacon(aid="shop", vid="v2", url="https://shop.example/x", ts="1800000000000")
        self.assertEqual(c.get("/collect?" + nb).status, 204)
        self.assertEqual(c.get("/collect?" + nb).status, 204)
        h.wait_for(lambda: c.metric("clickd_events_in_total") == 7, 10, "7 events in")
        h.wait_for(lambda: c.metric("clickd_duplicates_total") == 4, 10, "4 duplicates counted")
        self.assertEqual(c.stop(), 0, c.log())
        events = c.records("events")
        ids = sorted((e["app_id"], e.get("event_id", "-")) for e in events)
        self.assertEqual(ids, [("blog", "dup-1"), ("shop", "-"), ("shop", "dup-1")])

    def test_a_full_dedup_table_forgets_the_oldest_and_says_so(self):
        c = self.start(**{"pipeline.ingest_threads": "1", "pipeline.shards": "1",
                          "dedup.max_entries": "16"})
        self.assertEqual(c.metric("clickd_dedup_window_covered_seconds"), 3600)
        for i in range(40):
            self.assertEqual(c.get("/collect?" + beacon(eid="d-%d" % i, aid="shop", vid="v")).status,
                             204)
        h.wait_for(lambda: c.metric("clickd_dedup_evicted_total") == 24, 10, "24 evictions")
        h.wait_for(lambda: c.metric("clickd_dedup_window_covered_seconds") < 3600, 10,
                   "the covered window to shrink")
        self.assertEqual(c.metric("clickd_dedup_entries"), 16)
        # The oldest were forgotten: d-0 is new again, d-39 is still a duplicate.
        self.assertEqual(c.get("/collect?" + beacon(eid="d-0", aid="shop", vid="v")).status, 204)
        self.assertEqual(c.get("/collect?" + beacon(eid="d-39", aid="shop", vid="v")).status, 204)
        h.wait_for(lambda: c.metric("clickd_duplicates_total") == 1, 10, "one duplicate")
        self.assertEqual(c.stop(), 0, c.log())
        self.assertEqual(len(c.records("events")), 41)

    def test_many_visitors_from_many_clients_all_arrive_once(self):
        c = self.start()
        statuses = []

        def client(t):
            import http.client
            conn = http.client.HTTPConnection("127.0.0.1", c.http_port, timeout=h.scaled(30))
            for i in range(300):
                conn.request("GET", "/collect?" + beacon(eid="m-%d-%d" % (t, i), aid="shop",
                                                          vid="v%d" % (i % 37)))
                r = conn.getresponse()
                r.read()
                statuses.append(r.status)
            conn.close()

        threads = [threading.Thread(target=client, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(statuses.count(204), 1200)
        self.assertEqual(c.stop(), 0, c.log())
        events = c.records("events")
        self.assertEqual(len(events), 1200)
        self.assertEqual(len({e["event_id"] for e in events}), 1200)
        # A visitor's events all carry one session (one shard owns each visitor).
        by_visitor = {}
        for e in events:
            by_visitor.setdefault(e["visitor_id"], set()).add(e["session_id"])
        self.assertEqual(len(by_visitor), 37)
        for vid, sessions in by_visitor.items():
            self.assertEqual(len(sessions), 1, vid)
        touch = c.records("touchpoints")
        self.assertEqual(len(touch), 37)
        self.assertEqual(sum(t["events"] for t in touch), 1200)
        self.assertTrue(all(t["end_reason"] == "shutdown" for t in touch))

    def test_sessions_split_by_inactivity_and_by_campaign(self):
        c = self.start(**{"session.timeout_s": "2"})
        page = "https://shop.example/"
        sent = [
            # session 1: an email campaign, then internal navigation
            dict(eid="s1", url=page + "?utm_source=news&utm_medium=email&utm_campaign=spring"),
            dict(eid="s2", url=page + "cart", ref=page),
        ]
        for f in sent:
            self.assertEqual(c.get("/collect?" + beacon(aid="shop", vid="alice", **f)).status, 204)
        # session 2: a paid search click cuts it (new campaign)
        self.assertEqual(c.get("/collect?" + beacon(aid="shop", vid="alice", eid="s3",
                                                      url=page + "?gclid=abc",
                                                      ref="https://www.google.com/")).status, 204)
        # inactivity: the wheel closes session 2 without another event
        h.wait_for(lambda: c.metric('clickd_sessions_ended_total{reason="inactivity"}') == 1, 15,
                   "session 2 to time out")
        # session 3: direct, after the timeout
        self.assertEqual(c.get("/collect?" + beacon(aid="shop", vid="alice", eid="s4",
                                                      url=page)).status, 204)
        self.assertEqual(c.stop(), 0, c.log())
        touch = sorted(c.records("touchpoints"), key=lambda t: t["session_index"])
        self.assertEqual([t["session_index"] for t in touch], [1, 2, 3])
        self.assertEqual([t["end_reason"] for t in touch],
                         ["new_campaign", "inactivity", "shutdown"])
        self.assertEqual([t["events"] for t in touch], [2, 1, 1])
        self.assertEqual(touch[0]["source"], "news")
        self.assertEqual(touch[0]["campaign"], "spring")
        self.assertEqual(touch[0]["channel"], "Email")
        self.assertEqual(touch[0]["exit_url"], page + "cart")
        self.assertEqual(touch[1]["click_id_type"], "gclid")
        self.assertEqual(touch[1]["channel"], "Paid Search")
        self.assertEqual(touch[1]["referrer_host"], "www.google.com")
        self.assertEqual(touch[2]["channel"], "Direct")
        events = {e["event_id"]: e for e in c.records("events")}
        self.assertEqual(events["s1"]["session_id"], events["s2"]["session_id"])
        self.assertNotEqual(events["s2"]["session_id"], events["s3"]["session_id"])
        self.assertEqual(events["s3"]["session_index"], 2)
        self.assertEqual(events["s1"]["session_id"], touch[0]["session_id"])
        self.assertEqual(events["s1"]["channel"], "Email")

    def test_a_conversion_s_revenue_is_in_its_touchpoint(self):
        c = self.start()
        self.assertEqual(c.get("/collect?" + beacon(eid="c1", aid="shop", vid="bob",
                                                      url="https://shop.example/?utm_source=fb&utm_medium=paid_social")).status, 204)
        body = json.dumps([
            {"eid": "c2", "aid": "shop", "vid": "bob", "e": "cv", "en": "purchase", "rev": 49.9, "cur": "EUR"},
            {"eid": "c3", "aid": "shop", "vid": "bob", "e": "cv", "en": "purchase", "rev": "10.1", "cur": "EUR"},
        ])
        self.assertEqual(c.post("/collect", body, "application/json").status, 204)
        self.assertEqual(c.stop(), 0, c.log())
        touch = c.records("touchpoints")
        self.assertEqual(len(touch), 1)
        t = touch[0]
        self.assertEqual(t["conversions"], 2)
        self.assertEqual(t["page_views"], 1)
        self.assertAlmostEqual(t["revenue"], 60.0, places=9)
        self.assertEqual(t["currency"], "EUR")
        self.assertEqual(t["channel"], "Paid Social")
        self.assertEqual(t["end_reason"], "shutdown")


if __name__ == "__main__":
    unittest.main()
