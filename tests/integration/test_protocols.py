"""The tracker protocols on the real binary (TRACKERS.md): each route's status, body and
content type, CORS preflights with each tracker's header set, the Snowplow cookie,
write keys and API secrets, dead letters and metrics labelled by protocol, 503 with
Retry-After when a request cannot be taken whole, and the records in the file sink with
the right source/medium/campaign/channel/protocol."""

import base64
import json
import unittest
import urllib.parse

from clickd_harness import start_for, stop_ok, wait_for

ORIGIN = "https://www.example.com"
PAGE = ("https://www.example.com/landing?utm_source=newsletter&utm_medium=email"
        "&utm_campaign=spring")
SP_POST = "/com.snowplowanalytics.snowplow/tp2"
GIF_LEN = 43


def basic(key):
    return "Basic " + base64.b64encode((key + ":").encode()).decode()


def sp_event(eid, **kw):
    e = {"e": "pv", "eid": eid, "aid": "shop", "duid": "duid-" + eid, "sid": "sess-1",
         "url": PAGE, "refr": "https://mail.example.com/", "tv": "js-4.10.1", "p": "web"}
    e.update(kw)
    return e


def sp_body(*events):
    return json.dumps({"schema": "iglu:com.snowplowanalytics.snowplow/payload_data/"
                                 "jsonschema/1-0-4", "data": list(events)})


def seg_message(mid, **kw):
    m = {"type": "track", "event": "Viewed", "messageId": mid, "anonymousId": "anon-" + mid,
         "timestamp": "2024-05-01T10:00:00.000Z", "sentAt": "2024-05-01T10:00:01.000Z",
         "context": {"page": {"url": PAGE, "referrer": "https://mail.example.com/"},
                     "campaign": {"name": "spring", "source": "newsletter",
                                  "medium": "email"}}}
    m.update(kw)
    return m


class Protocols(unittest.TestCase):
    def start(self, **settings):
        base = {"http.cors_origins": ORIGIN, "snowplow.cookie_domains": "shop.test,example.com"}
        base.update(settings)
        return start_for(self, base)

    def wait_records(self, c, stream, n):
        """The stream's records once n are in its files (the file sink pushes what it
        buffered within a second)."""
        wait_for(lambda: len(c.records(stream)) >= n, 20, "%d %s written" % (n, stream))
        return c.records(stream)

    def wait_events(self, c, n):
        return self.wait_records(c, "events", n)

    def wait_dead_letters(self, c, n):
        return self.wait_records(c, "dead_letters", n)

    def assert_cors(self, r):
        self.assertEqual(r.header("access-control-allow-origin"), ORIGIN, r)
        self.assertEqual(r.header("access-control-allow-credentials"), "true", r)
        self.assertEqual(r.header("vary"), "Origin", r)

    def assert_email_touch(self, ev, protocol):
        self.assertEqual((ev.get("source"), ev.get("medium"), ev.get("campaign"),
                          ev.get("channel"), ev.get("protocol")),
                         ("newsletter", "email", "spring", "Email", protocol), ev)

    # ---- Snowplow ----

    def test_snowplow_get_answers_the_gif_and_sets_the_network_user_cookie(self):
        c = self.start()
        q = urllib.parse.urlencode(sp_event("sp-get-1"))
        r = c.get("/i?" + q, headers={"Origin": ORIGIN})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("content-type"), "image/gif")
        self.assertEqual(len(r.body), GIF_LEN)
        self.assertTrue(r.body.startswith(b"GIF89a"))
        self.assertEqual(r.header("cache-control"), "no-cache, no-store, must-revalidate")
        self.assert_cors(r)
        cookie = r.header("set-cookie")
        self.assertRegex(cookie, r"^sp=[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-"
                                 r"[0-9a-f]{12}; Path=/; Max-Age=31536000; Domain=example.com; "
                                 r"SameSite=None; Secure; HttpOnly$")
        nuid = cookie.split(";")[0][3:]
        # /ice.png answers the same; the cookie it got back is kept, not minted anew
        r = c.get("/ice.png?" + urllib.parse.urlencode(sp_event("sp-get-2")),
                  headers={"Origin": "https://other.test", "Cookie": "sp=" + nuid})
        self.assertEqual((r.status, r.header("content-type"), len(r.body)),
                         (200, "image/gif", GIF_LEN))
        self.assertTrue(r.header("set-cookie").startswith("sp=%s; Path=/; Max-Age=31536000; "
                                                          "SameSite" % nuid), r)
        self.assertIsNone(r.header("access-control-allow-origin"))
        # nuid= in the query wins; without a duid the network user is the visitor
        r = c.get("/i?nuid=nuid-77&" + urllib.parse.urlencode(
            sp_event("sp-get-3", duid="")))
        self.assertTrue(r.header("set-cookie").startswith("sp=nuid-77;"), r)
        # SP-Anonymous: no cookie, no IP
        r = c.get("/i?" + urllib.parse.urlencode(sp_event("sp-get-4", duid="")),
                  headers={"SP-Anonymous": "*"})
        self.assertEqual(r.status, 200)
        self.assertIsNone(r.header("set-cookie"))
        events = {e["event_id"]: e for e in self.wait_events(c, 4)}
        for eid in ("sp-get-1", "sp-get-2"):
            self.assert_email_touch(events[eid], "snowplow")
            self.assertEqual(events[eid]["client_session_id"], "sess-1")
            self.assertEqual(events[eid]["visitor_id"], "duid-" + eid)
        self.assertEqual(events["sp-get-3"]["visitor_id"], "nuid-77")
        self.assertNotIn("visitor_id", events["sp-get-4"])
        self.assertNotIn("ip", events["sp-get-4"])
        self.assertIn("ip", events["sp-get-1"])
        stop_ok(self, c)

    def test_snowplow_post_answers_ok_and_dead_letters_bad_events(self):
        c = self.start()
        tr = sp_event("sp-tr-1", e="tr", tr_id="o-1", tr_tt="49.90", tr_cu="EUR")
        r = c.post(SP_POST, sp_body(sp_event("sp-post-1"), tr, {"e": "pv", "cx": "@@"}),
                   "application/json; charset=UTF-8", headers={"Origin": ORIGIN})
        self.assertEqual((r.status, r.header("content-type"), r.body),
                         (200, "text/plain; charset=utf-8", b"ok"), r)
        self.assert_cors(r)
        self.assertIsNotNone(r.header("set-cookie"))
        # a body with nothing good in it is data to drop: 400, and its dead letters
        r = c.post(SP_POST, sp_body({"e": "pv", "cx": "@@"}), "application/json")
        self.assertEqual(r.status, 400, r)
        r = c.post(SP_POST, "not json", "application/json")
        self.assertEqual(r.status, 400, r)
        events = {e["event_id"]: e for e in self.wait_events(c, 2)}
        self.assert_email_touch(events["sp-post-1"], "snowplow")
        self.assertEqual(events["sp-tr-1"]["type"], "conversion")
        self.assertEqual((events["sp-tr-1"]["revenue"], events["sp-tr-1"]["currency"]),
                         (49.9, "EUR"))
        dead = self.wait_dead_letters(c, 3)
        self.assertEqual([d["protocol"] for d in dead], ["snowplow"] * 3)
        self.assertIn("cx: not base64", dead[0]["reason"])
        m = c.metrics()
        self.assertEqual(m['clickd_protocol_events_in_total{protocol="snowplow"}'], 2)
        self.assertEqual(m['clickd_protocol_dead_letters_total{protocol="snowplow"}'], 3)
        stop_ok(self, c)

    def test_health_and_methods(self):
        c = self.start()
        r = c.get("/health")
        self.assertEqual((r.status, r.body), (200, b"ok\n"))
        for method, path, allow in (("POST", "/i", "GET, OPTIONS"),
                                    ("GET", SP_POST, "POST, OPTIONS"),
                                    ("GET", "/v1/t", "POST, OPTIONS"),
                                    ("PUT", "/g/collect", "GET, POST, OPTIONS"),
                                    ("GET", "/mp/collect", "POST, OPTIONS")):
            r = c.request(method, path, body=b"" if method != "GET" else None)
            self.assertEqual((r.status, r.header("allow")), (405, allow), (method, path, r))
        self.assertEqual(c.get("/v1/nope").status, 404)
        stop_ok(self, c)

    # ---- CORS preflights with each tracker's headers ----

    def test_preflights_echo_each_trackers_headers(self):
        c = self.start()
        for path, asked in ((SP_POST, "Content-Type, SP-Anonymous"),
                            ("/i", "SP-Anonymous"),
                            ("/v1/t", "Authorization, Content-Type"),
                            ("/v1/b", "Authorization, Content-Type"),
                            ("/v1/page", "Authorization, AnonymousId, SentAt"),
                            ("/beacon/v1/batch", "Authorization, AnonymousId, SentAt"),
                            ("/g/collect", "Content-Type"),
                            ("/mp/collect", "Content-Type")):
            r = c.request("OPTIONS", path, headers={
                "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": asked})
            self.assertEqual(r.status, 204, (path, r))
            self.assert_cors(r)
            self.assertEqual(r.header("access-control-allow-headers"), asked, (path, r))
            self.assertEqual(r.header("access-control-allow-methods"), "GET, POST, OPTIONS")
            self.assertEqual(r.header("access-control-max-age"), "3600")
        self.assertEqual(c.records("events"), [])
        stop_ok(self, c)

    # ---- Segment and RudderStack ----

    def test_segment_routes_short_and_long(self):
        c = self.start()
        sent = 0
        for route, mtype in (("t", "track"), ("p", "page"), ("i", "identify"),
                             ("g", "group"), ("a", "alias"), ("s", "screen"),
                             ("track", "track"), ("page", "page"), ("identify", "identify"),
                             ("group", "group"), ("alias", "alias"), ("screen", "screen")):
            mid = "seg-%s" % route
            r = c.post("/v1/" + route, json.dumps(seg_message(mid, type=mtype)), "text/plain",
                       headers={"Origin": ORIGIN})
            self.assertEqual((r.status, r.header("content-type"), r.body),
                             (200, "application/json", b'{"success":true}'), (route, r))
            self.assert_cors(r)
            self.assertIsNone(r.header("set-cookie"))
            sent += 1
        batch = {"batch": [seg_message("seg-b-1"), seg_message("seg-b-2", context={})],
                 "context": {"page": {"url": PAGE}, "campaign": {"name": "spring",
                             "source": "newsletter", "medium": "email"}},
                 "sentAt": "2024-05-01T10:00:02.000Z"}
        for path in ("/v1/b", "/v1/batch"):
            b = json.loads(json.dumps(batch).replace("seg-b-", "seg-%s-" % path[4:]))
            r = c.post(path, json.dumps(b), "application/json")
            self.assertEqual(r.status, 200, r)
            sent += 2
        # metrics of the library itself: taken and dropped
        r = c.post("/v1/m", json.dumps({"series": [{"type": "Counter", "value": 1}]}),
                   "text/plain")
        self.assertEqual((r.status, r.body), (200, b'{"success":true}'))
        events = self.wait_events(c, sent)
        self.assertEqual(len(events), sent)
        by_id = {e["event_id"]: e for e in events}
        for e in events:
            self.assert_email_touch(e, "segment")
        self.assertEqual(by_id["seg-t"]["name"], "Viewed")
        self.assertEqual(by_id["seg-page"]["type"], "page_view")
        self.assertEqual(by_id["seg-b-2"]["url"], PAGE)  # from the batch context
        self.assertEqual(c.metric('clickd_protocol_events_in_total{protocol="segment"}'), sent)
        stop_ok(self, c)

    def test_write_keys_are_checked_when_configured(self):
        c = self.start(**{"segment.write_keys": "wk-seg:shop",
                          "rudderstack.write_keys": "wk-rs:shop-rs"})
        msg = json.dumps(seg_message("wk-1"))
        r = c.post("/v1/t", msg, "text/plain", headers={"Authorization": basic("wrong"),
                                                        "Origin": ORIGIN})
        self.assertEqual(r.status, 401, r)
        self.assert_cors(r)
        self.assertEqual(c.post("/v1/t", msg, "text/plain").status, 401)
        r = c.post("/v1/t", msg, "text/plain", headers={"Authorization": basic("wk-seg")})
        self.assertEqual(r.status, 200, r)
        body = json.dumps(dict(seg_message("wk-2"), writeKey="wk-seg"))
        self.assertEqual(c.post("/v1/track", body, "text/plain").status, 200)
        r = c.post("/v1/page", json.dumps(seg_message("wk-3", type="page")), "application/json",
                   headers={"Authorization": basic("wk-rs")})
        self.assertEqual(r.status, 200, r)
        r = c.post("/beacon/v1/batch?writeKey=wk-rs",
                   json.dumps({"batch": [seg_message("wk-4")]}), "text/plain")
        self.assertEqual(r.status, 200, r)
        r = c.post("/beacon/v1/batch?writeKey=nope",
                   json.dumps({"batch": [seg_message("wk-5")]}), "text/plain")
        self.assertEqual(r.status, 401, r)
        events = {e["event_id"]: e for e in self.wait_events(c, 4)}
        self.assertEqual((events["wk-1"]["app_id"], events["wk-1"]["protocol"]),
                         ("shop", "segment"))
        self.assertEqual(events["wk-2"]["app_id"], "shop")
        for eid in ("wk-3", "wk-4"):
            self.assertEqual((events[eid]["app_id"], events[eid]["protocol"]),
                             ("shop-rs", "rudderstack"))
            self.assert_email_touch(events[eid], "rudderstack")
        dead = self.wait_dead_letters(c, 3)
        self.assertEqual([(d["protocol"], d["reason"]) for d in dead],
                         [("segment", "unknown write key"), ("segment", "no write key"),
                          ("rudderstack", "unknown write key")])
        m = c.metrics()
        self.assertEqual(m['clickd_dead_letters_total{reason="unauthorized"}'], 3)
        self.assertEqual(m['clickd_http_requests_total{status="401"}'], 3)
        stop_ok(self, c)

    # ---- GA4 ----

    def test_ga4_collect_and_measurement_protocol(self):
        c = self.start(**{"ga4.api_secrets": "G-SHOP01:s3cret:shop"})
        shared = urllib.parse.urlencode({"v": "2", "tid": "G-SHOP01", "cid": "111.222",
                                         "sid": "1714557000", "dl": PAGE,
                                         "dr": "https://mail.example.com/"})
        r = c.get("/g/collect?" + shared + "&en=page_view", headers={"Origin": ORIGIN})
        self.assertEqual((r.status, r.body), (204, b""), r)
        self.assert_cors(r)
        r = c.post("/g/collect?" + shared, "en=scroll&epn.percent_scrolled=90\n"
                   "en=purchase&ep.transaction_id=T-1&epn.value=10.5&cu=USD\n",
                   "text/plain;charset=UTF-8")
        self.assertEqual(r.status, 204, r)
        mp = {"client_id": "333.444", "events": [
            {"name": "purchase", "params": {"transaction_id": "T-2", "value": 5,
                                            "currency": "EUR", "session_id": "99",
                                            "page_location": PAGE}}]}
        r = c.post("/mp/collect?measurement_id=G-SHOP01&api_secret=s3cret", json.dumps(mp),
                   "application/json")
        self.assertEqual((r.status, r.body), (204, b""), r)
        r = c.post("/mp/collect?measurement_id=G-SHOP01&api_secret=nope", json.dumps(mp),
                   "application/json")
        self.assertEqual(r.status, 401, r)
        r = c.post("/mp/collect?measurement_id=G-SHOP01&api_secret=s3cret",
                   json.dumps({"client_id": "1", "events": [{"name": "x"}] * 26}),
                   "application/json")
        self.assertEqual(r.status, 413, r)
        events = self.wait_events(c, 4)
        by_name = {(e["protocol"], e["name"]): e for e in events}
        for key in (("ga4", "page_view"), ("ga4", "scroll"), ("ga4", "purchase"),
                    ("ga4_mp", "purchase")):
            self.assert_email_touch(by_name[key], key[0])
            self.assertEqual(by_name[key]["app_id"], "shop")
        self.assertEqual(by_name[("ga4", "page_view")]["client_session_id"], "1714557000")
        self.assertEqual(by_name[("ga4", "purchase")]["type"], "conversion")
        self.assertEqual(by_name[("ga4", "purchase")]["revenue"], 10.5)
        self.assertEqual(by_name[("ga4_mp", "purchase")]["event_id"], "T-2")
        dead = self.wait_dead_letters(c, 2)
        self.assertEqual([d["protocol"] for d in dead], ["ga4_mp", "ga4_mp"])
        m = c.metrics()
        self.assertEqual(m['clickd_protocol_events_in_total{protocol="ga4"}'], 3)
        self.assertEqual(m['clickd_protocol_events_in_total{protocol="ga4_mp"}'], 1)
        self.assertEqual(m['clickd_protocol_dead_letters_total{protocol="ga4_mp"}'], 2)
        stop_ok(self, c)

    # ---- overload and limits ----

    def test_a_request_that_cannot_be_taken_whole_gets_503_and_nothing_of_it_is_kept(self):
        # One ring of 16 slots: a tp2 body of 20 events can never fit, so the answer is
        # 503 with Retry-After (the tracker keeps and re-sends), and none is written.
        c = self.start(**{"pipeline.ring_slots": "16", "pipeline.shards": "1",
                          "pipeline.ingest_threads": "1", "http.retry_after_s": "7"})
        r = c.post(SP_POST, sp_body(*[sp_event("big-%d" % i) for i in range(20)]),
                   "application/json", headers={"Origin": ORIGIN})
        self.assertEqual(r.status, 503, r)
        self.assertEqual(r.header("retry-after"), "7")
        self.assert_cors(r)
        r = c.post("/v1/b", json.dumps({"batch": [seg_message("big-s-%d" % i)
                                                  for i in range(20)]}), "text/plain")
        self.assertEqual((r.status, r.header("retry-after")), (503, "7"), r)
        r = c.post(SP_POST, sp_body(sp_event("small-1")), "application/json")
        self.assertEqual(r.status, 200, r)
        events = self.wait_events(c, 1)
        self.assertEqual([e["event_id"] for e in events], ["small-1"])
        self.assertEqual(c.metric("clickd_backpressure_total"), 40)
        stop_ok(self, c)

    def test_a_refused_oversized_body_is_dead_lettered_under_its_protocol(self):
        c = self.start(**{"http.max_body_bytes": "1024"})
        r = c.post("/v1/batch", json.dumps({"batch": [seg_message("x" * 2000)]}),
                   "application/json")
        self.assertEqual(r.status, 413, r)
        dead = self.wait_dead_letters(c, 1)
        self.assertEqual(dead[0]["protocol"], "segment", dead)
        stop_ok(self, c)


if __name__ == "__main__":
    unittest.main()
