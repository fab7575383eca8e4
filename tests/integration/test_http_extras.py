"""What users of other collectors ask for, on the real binary: request bodies with
Content-Encoding: gzip (native and tracker routes; bombs, bad gzip and other codings
refused), path aliases (native, Snowplow, Segment prefix), the click redirect /r (allowed
targets, open-redirect attempts refused, redirects off), and the client IP read from the
configured real-IP header only when the peer is a trusted proxy."""

import gzip
import json
import os
import signal
import unittest
import urllib.parse

from clickd_harness import Clickd, start_for, stop_ok, wait_for

PAGE = "https://www.example.com/landing?utm_source=newsletter&utm_medium=email&utm_campaign=spring"
SP_POST = "/com.snowplowanalytics.snowplow/tp2"


def seg_track(mid):
    return {"type": "track", "event": "Viewed", "messageId": mid, "anonymousId": "anon-" + mid,
            "context": {"page": {"url": PAGE}}}


def sp_body(eid):
    return json.dumps({"schema": "iglu:com.snowplowanalytics.snowplow/payload_data/"
                                 "jsonschema/1-0-4",
                       "data": [{"e": "pv", "eid": eid, "aid": "shop", "duid": "d-" + eid,
                                 "url": PAGE, "p": "web", "tv": "js-4"}]})


class HttpExtras(unittest.TestCase):
    def start(self, **settings):
        return start_for(self, settings)

    def records(self, c, stream, n):
        wait_for(lambda: len(c.records(stream)) >= n, 20, "%d %s written" % (n, stream))
        return c.records(stream)

    # ---- Content-Encoding: gzip ----

    def test_gzip_bodies_are_decoded_on_collect_and_on_a_segment_route(self):
        c = self.start()
        body = gzip.compress(b"eid=gz-1&aid=shop&vid=v1&url=https%3A%2F%2Fshop.test%2F\n"
                             b"eid=gz-2&aid=shop&vid=v1\n")
        r = c.post("/collect", body, "text/plain", headers={"Content-Encoding": "gzip"})
        self.assertEqual(r.status, 204, r)
        r = c.post("/v1/t", gzip.compress(json.dumps(seg_track("gz-seg-1")).encode()),
                   "application/json", headers={"Content-Encoding": "GZIP"})
        self.assertEqual(r.status, 200, r)
        # Two members back to back, and identity spelled out, are fine too.
        r = c.post("/collect", gzip.compress(b"eid=gz-3&vid=v1\n") + gzip.compress(b"eid=gz-4&vid=v1"),
                   "text/plain", headers={"Content-Encoding": "x-gzip"})
        self.assertEqual(r.status, 204, r)
        r = c.post("/collect", "eid=plain-1&vid=v1", "text/plain",
                   headers={"Content-Encoding": "identity"})
        self.assertEqual(r.status, 204, r)
        events = self.records(c, "events", 6)
        by_id = {e["event_id"]: e for e in events}
        self.assertEqual(sorted(by_id), ["gz-1", "gz-2", "gz-3", "gz-4", "gz-seg-1", "plain-1"])
        self.assertEqual(by_id["gz-1"]["url"], "https://shop.test/")
        self.assertEqual(by_id["gz-seg-1"]["protocol"], "segment")
        self.assertEqual(by_id["gz-seg-1"]["visitor_id"], "anon-gz-seg-1")
        self.assertEqual(c.metric("clickd_http_gzip_bodies_total"), 3)
        self.assertEqual(c.records("dead_letters"), [])
        stop_ok(self, c)

    def test_a_gzip_bomb_an_oversized_body_bad_gzip_and_other_codings_are_refused(self):
        c = self.start()
        # 1 MiB of zeros is about 1 KiB of gzip: past the ratio (100) long before the size
        # (http.max_body_bytes, 1 MiB).
        bomb = gzip.compress(b"\0" * (1 << 20))
        r = c.post("/collect", bomb, "text/plain", headers={"Content-Encoding": "gzip"})
        self.assertEqual(r.status, 413, r)
        self.assertIn(b"expands more than 100 times", r.body)
        # Under the ratio but past http.max_body_bytes once decompressed.
        # (Random hex compresses about 2:1, under the ratio.)
        big = os.urandom(600000).hex().encode()
        r = c.post("/v1/batch", gzip.compress(big), "application/json",
                   headers={"Content-Encoding": "gzip"})
        self.assertEqual(r.status, 413, r)
        r = c.post("/collect", b"eid=x&vid=v", "text/plain", headers={"Content-Encoding": "gzip"})
        self.assertEqual(r.status, 400, r)
        r = c.post(SP_POST, gzip.compress(sp_body("t").encode())[:-9], "application/json",
                   headers={"Content-Encoding": "gzip"})
        self.assertEqual(r.status, 400, r)
        for coding in ("br", "deflate", "compress", "gzip, br", "gzip, gzip"):
            r = c.post("/collect", b"eid=x&vid=v", "text/plain",
                       headers={"Content-Encoding": coding})
            self.assertEqual(r.status, 415, (coding, r))
        dead = self.records(c, "dead_letters", 9)
        self.assertEqual(sorted(d["protocol"] for d in dead),
                         ["native"] * 7 + ["segment", "snowplow"])
        reasons = sorted(d["reason"] for d in dead)
        self.assertTrue(any("decompresses to more than 1048576 bytes" in x for x in reasons), reasons)
        m = c.metrics()
        self.assertEqual(m['clickd_dead_letters_total{reason="too_large"}'], 2)
        self.assertEqual(m['clickd_dead_letters_total{reason="malformed"}'], 2)
        self.assertEqual(m['clickd_dead_letters_total{reason="unsupported"}'], 5)
        self.assertEqual(m["clickd_http_gzip_bodies_total"], 0)
        self.assertEqual(c.records("events"), [])
        stop_ok(self, c)

    # ---- path aliases ----

    def test_aliases_serve_native_snowplow_and_segment_routes_on_the_sites_own_paths(self):
        c = self.start(**{"http.path_aliases":
                          "/t/p:/collect, /x/sp:" + SP_POST + ", /x/i:/i, /a/v1:/v1",
                          "http.max_body_bytes": "1024"})
        r = c.get("/t/p?eid=al-native&vid=v1&aid=shop")
        self.assertEqual(r.status, 204, r)
        r = c.get("/x/i?" + urllib.parse.urlencode({"e": "pv", "eid": "al-sp-get", "duid": "d1",
                                                     "url": PAGE}))
        self.assertEqual((r.status, r.header("content-type")), (200, "image/gif"), r)
        r = c.post("/x/sp", sp_body("al-sp-post"), "application/json")
        self.assertEqual((r.status, r.body), (200, b"ok"), r)
        r = c.post("/a/v1/t", json.dumps(seg_track("al-seg")), "text/plain")
        self.assertEqual((r.status, r.body), (200, b'{"success":true}'), r)
        r = c.post("/a/v1/batch", json.dumps({"batch": [seg_track("al-seg-b")]}), "text/plain")
        self.assertEqual(r.status, 200, r)
        # Gzip on an alias works like on its route.
        r = c.post("/a/v1/track", gzip.compress(json.dumps(seg_track("al-seg-gz")).encode()),
                   "application/json", headers={"Content-Encoding": "gzip"})
        self.assertEqual(r.status, 200, r)
        # The real routes still answer; what is neither is 404.
        self.assertEqual(c.get("/collect?eid=real&vid=v1").status, 204)
        self.assertEqual(c.get("/a/v1").status, 404)
        self.assertEqual(c.get("/t/p/more").status, 404)
        self.assertEqual(c.post("/a/v1/nope", "{}", "application/json").status, 404)
        events = self.records(c, "events", 7)
        got = {e["event_id"]: e["protocol"] for e in events}
        self.assertEqual(got, {"al-native": "native", "al-sp-get": "snowplow",
                               "al-sp-post": "snowplow", "al-seg": "segment",
                               "al-seg-b": "segment", "al-seg-gz": "segment", "real": "native"})
        # A request refused before routing (body too long) is dead-lettered under the
        # protocol of the alias's route.
        r = c.post("/x/sp", sp_body("x" * 2000), "application/json")
        self.assertEqual(r.status, 413, r)
        dead = self.records(c, "dead_letters", 1)
        self.assertEqual(dead[0]["protocol"], "snowplow", dead)
        self.assertEqual(c.metric('clickd_protocol_events_in_total{protocol="segment"}'), 3)
        stop_ok(self, c)

    def test_aliases_and_the_redirect_allow_list_change_on_reload(self):
        c = Clickd()
        conf = os.path.join(c.dir, "clickd.conf")

        def write(aliases, allow):
            with open(conf, "w") as f:
                f.write("[http]\npath_aliases = %s\nredirect_allow = %s\n" % (aliases, allow))

        def reload(expect):
            before = c.log().count(expect)
            c.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: c.log().count(expect) > before, 20, expect)

        write("/t/p:/collect", "")
        c.args = ["-c", conf]
        self.addCleanup(c.cleanup)
        self.addCleanup(c.stop)
        c.start()
        target = "/r?u=" + urllib.parse.quote("https://shop.example.com/", safe="") + "&vid=v"
        self.assertEqual(c.get("/t/p?eid=r1&vid=v").status, 204)
        self.assertEqual(c.get(target).status, 403)
        write("/u/q:/collect", "shop.example.com")
        reload("reload taken by every thread")
        self.assertEqual(c.get("/t/p?eid=r2&vid=v").status, 404)
        self.assertEqual(c.get("/u/q?eid=r3&vid=v").status, 204)
        self.assertEqual(c.get(target).status, 302)
        # A bad alias is refused; the running table stays.
        write("/u/q:/nowhere", "shop.example.com")
        reload("reload refused")
        self.assertIn("http.path_aliases", c.log())
        self.assertEqual(c.get("/u/q?eid=r4&vid=v").status, 204)
        events = self.records(c, "events", 4)
        self.assertEqual(sorted(e["event_id"] for e in events if e["type"] == "page_view"),
                         ["r1", "r3", "r4"])
        stop_ok(self, c)

    # ---- the click redirect ----

    def redirect(self, c, target, extra="", headers=None):
        return c.get("/r?u=" + urllib.parse.quote(target, safe="") + extra, headers=headers)

    def test_the_click_redirect_records_a_click_and_sends_only_to_allowed_hosts(self):
        c = self.start(**{"http.redirect_allow": "shop.example.com, *.example.org"})
        target = ("https://shop.example.com/sale?utm_source=newsletter&utm_medium=email"
                  "&utm_campaign=spring&q=a+b")
        r = self.redirect(c, target, "&aid=shop&vid=v1&eid=click-1&ref=https%3A%2F%2Fmail.test%2F")
        self.assertEqual((r.status, r.header("location")), (302, target), r)
        self.assertIsNone(r.header("set-cookie"), r)
        # Without vid the visitor cookie is set, as on the pixel; en names the click.
        r = self.redirect(c, "http://a.b.example.org:8080/x", "&eid=click-2&en=banner")
        self.assertEqual((r.status, r.header("location")), (302, "http://a.b.example.org:8080/x"), r)
        self.assertIn("clickd_vid=", r.header("set-cookie") or "", r)
        r = self.redirect(c, "HTTPS://SHOP.EXAMPLE.COM./", "&eid=click-3&vid=v1")
        self.assertEqual(r.status, 302, r)
        events = self.records(c, "events", 3)
        by_id = {e["event_id"]: e for e in events}
        ev = by_id["click-1"]
        self.assertEqual((ev["type"], ev["name"], ev["url"], ev["app_id"], ev["visitor_id"]),
                         ("custom", "click", target, "shop", "v1"), ev)
        self.assertEqual((ev["source"], ev["medium"], ev["campaign"]),
                         ("newsletter", "email", "spring"), ev)
        self.assertEqual(ev["referrer"], "https://mail.test/")
        self.assertEqual(by_id["click-2"]["name"], "banner")
        self.assertEqual(c.metric("clickd_redirects_total"), 3)
        stop_ok(self, c)

    def test_open_redirect_attempts_are_refused_with_400_and_a_dead_letter(self):
        c = self.start(**{"http.redirect_allow": "allowed.example.com, *.example.org"})
        attempts = [
            "//evil.com/",
            "/relative/path",
            "javascript:alert(1)",
            "JavaScript://allowed.example.com/%0aalert(1)",
            "data:text/html,hi",
            "ftp://allowed.example.com/",
            "http://allowed.example.com.evil.com/",
            "http://allowed.example.com@evil.com/",
            "http://user:pw@allowed.example.com/",
            "https://evil.com\\@allowed.example.com/",
            "https://evil.com\\allowed.example.com",
            "http://evil.com#@allowed.example.com",
            "http://evil.com?@allowed.example.com",
            "https://allowed.example.com\r\nSet-Cookie: x=1",
            "https://allowed.example.com /",
            "http://example.org/",
            "http://evilexample.org/",
            "http://allowed.example.com:99999/",
            "http:///allowed.example.com",
            "https://allowed.ex\u00e4mple.com/",
            "https://%61llowed.example.com/",
        ]
        for t in attempts:
            r = self.redirect(c, t, "&vid=v1")
            self.assertEqual(r.status, 400, (t, r))
            self.assertIsNone(r.header("location"), (t, r))
        # No u, u twice, and u that is not percent-encoded UTF-8.
        self.assertEqual(c.get("/r?vid=v1").status, 400)
        self.assertEqual(c.get("/r?u=http%3A%2F%2Fallowed.example.com%2F&u=http%3A%2F%2Fevil.com").status, 400)
        self.assertEqual(c.get("/r?u=http%3A%2F%2Fallowed.example.com%2F%ff").status, 400)
        self.assertEqual(c.request("POST", "/r?u=x").status, 405)
        n = len(attempts) + 3
        dead = self.records(c, "dead_letters", n)
        self.assertEqual(len(dead), n)
        self.assertTrue(all(d["protocol"] == "native" for d in dead), dead)
        self.assertEqual(c.metric("clickd_redirects_refused_total"), n)
        self.assertEqual(c.metric("clickd_redirects_total"), 0)
        self.assertEqual(c.records("events"), [])
        stop_ok(self, c)

    def test_without_an_allow_list_the_redirect_answers_403_and_records_nothing(self):
        c = self.start()
        r = c.get("/r?u=" + urllib.parse.quote("https://shop.example.com/", safe="") + "&vid=v1")
        self.assertEqual(r.status, 403, r)
        self.assertIsNone(r.header("location"))
        self.assertEqual(c.metric("clickd_redirects_refused_total"), 1)
        c.get("/collect?eid=after&vid=v1")
        events = self.records(c, "events", 1)
        self.assertEqual([e["event_id"] for e in events], ["after"])
        self.assertEqual(c.records("dead_letters"), [])
        stop_ok(self, c)

    # ---- the real-IP header ----

    def ip_of(self, c, eid, headers):
        r = c.get("/collect?eid=%s&vid=v1" % eid, headers=headers)
        self.assertEqual(r.status, 204, r)
        wait_for(lambda: any(e["event_id"] == eid for e in c.records("events")), 20, eid)
        return next(e for e in c.records("events") if e["event_id"] == eid).get("ip")

    def test_each_real_ip_header_is_read_from_a_trusted_proxy_only(self):
        for header in ("x-real-ip", "cf-connecting-ip", "true-client-ip", "fastly-client-ip"):
            with self.subTest(header=header):
                c = self.start(**{"http.real_ip_header": header,
                                  "http.trusted_proxies": "127.0.0.1/32",
                                  "privacy.anonymize_ip": "false"})
                self.assertEqual(self.ip_of(c, "a", {header: " 203.0.113.7 ",
                                                     "X-Forwarded-For": "198.51.100.9"}),
                                 "203.0.113.7")
                self.assertEqual(self.ip_of(c, "b", {header: "2001:db8::7"}), "2001:db8::7")
                # Missing, malformed, or an address with a port: the peer, counted.
                self.assertEqual(self.ip_of(c, "c", {"X-Forwarded-For": "198.51.100.9"}),
                                 "127.0.0.1")
                self.assertEqual(self.ip_of(c, "d", {header: "203.0.113.7, 10.0.0.1"}),
                                 "127.0.0.1")
                self.assertEqual(self.ip_of(c, "e", {header: "203.0.113.7:443"}), "127.0.0.1")
                # Repeated: the proxy appended instead of replacing; not believed.
                raw = ("GET /collect?eid=f&vid=v1 HTTP/1.1\r\nHost: x\r\n%s: 203.0.113.7\r\n"
                       "%s: 198.51.100.1\r\nConnection: close\r\n\r\n" % (header, header))
                self.assertIn(b" 204 ", c.raw(raw.encode()))
                wait_for(lambda: any(e["event_id"] == "f" for e in c.records("events")), 20, "f")
                ev = next(e for e in c.records("events") if e["event_id"] == "f")
                self.assertEqual(ev["ip"], "127.0.0.1")
                self.assertEqual(c.metric("clickd_http_real_ip_fallback_total"), 4)
                stop_ok(self, c)

    def test_a_real_ip_header_from_an_untrusted_peer_is_ignored(self):
        for header in ("x-real-ip", "cf-connecting-ip", "true-client-ip", "fastly-client-ip"):
            with self.subTest(header=header):
                c = self.start(**{"http.real_ip_header": header,
                                  "http.trusted_proxies": "10.0.0.0/8",
                                  "privacy.anonymize_ip": "false"})
                self.assertEqual(self.ip_of(c, "u", {header: "203.0.113.7"}), "127.0.0.1")
                self.assertEqual(c.metric("clickd_http_real_ip_fallback_total"), 0)
                stop_ok(self, c)

    def test_x_forwarded_for_stays_the_default(self):
        c = self.start(**{"http.trusted_proxies": "127.0.0.1/32",
                          "privacy.anonymize_ip": "false"})
        self.assertEqual(self.ip_of(c, "x", {"X-Forwarded-For": "203.0.113.9, 127.0.0.1",
                                             "X-Real-IP": "198.51.100.1"}), "203.0.113.9")
        stop_ok(self, c)


if __name__ == "__main__":
    unittest.main()
