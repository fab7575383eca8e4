"""The collect listener's endpoints on the real binary: what each answers, the event records
the accepted beacons become (fields, UTM tags, click IDs, source/medium, visitor cookie,
privacy, client IP), keep-alive and pipelining, and the admin endpoints."""

import json
import re
import socket
import threading
import unittest
import urllib.parse

from clickd_harness import (parse_responses, read_responses, scaled, start_for, stop_ok,
                            wait_closed, wait_for)

PAGE = "https://shop.example/landing"


def q(**fields):
    return urllib.parse.urlencode(fields)


def by_id(records):
    out = {}
    for r in records:
        assert r.get("event_id") not in out, "duplicate event %r" % r
        out[r.get("event_id")] = r
    return out


class Endpoints(unittest.TestCase):
    def test_get_collect_answers_204_and_writes_the_event(self):
        c = start_for(self)
        r = c.get("/collect?" + q(eid="g-1", aid="shop", vid="v1", url=PAGE),
                  headers={"User-Agent": "Mozilla/5.0 (X11)"})
        self.assertEqual(r.status, 204, r)
        self.assertEqual(r.body, b"")
        self.assertEqual(r.header("content-length"), "0")
        stop_ok(self, c)
        ev = by_id(c.records("events"))
        self.assertEqual(list(ev), ["g-1"])
        e = ev["g-1"]
        self.assertEqual(e["app_id"], "shop")
        self.assertEqual(e["visitor_id"], "v1")
        self.assertEqual(e["url"], PAGE)
        self.assertEqual(e["type"], "page_view")
        self.assertEqual(e["protocol"], "native")
        self.assertEqual(e["user_agent"], "Mozilla/5.0 (X11)")
        self.assertIs(e["is_bot"], False)
        self.assertRegex(e["received_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertEqual(c.records("dead_letters"), [])

    def test_pixel_gif_answers_200_with_the_43_byte_gif(self):
        c = start_for(self)
        r = c.get("/pixel.gif?" + q(eid="p-1", vid="v1"))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("content-type"), "image/gif")
        self.assertEqual(len(r.body), 43)
        self.assertEqual(r.header("content-length"), "43")
        self.assertTrue(r.body.startswith(b"GIF89a\x01\x00\x01\x00"), r.body)
        self.assertTrue(r.body.endswith(b";"), r.body)
        stop_ok(self, c)
        self.assertEqual(list(by_id(c.records("events"))), ["p-1"])

    def test_post_form_urlencoded_takes_one_beacon_per_line(self):
        c = start_for(self)
        body = "\n".join(q(eid="f-%d" % i, vid="v1", url=PAGE) for i in range(3))
        r = c.post("/collect", body, "application/x-www-form-urlencoded")
        self.assertEqual(r.status, 204, r)
        stop_ok(self, c)
        self.assertEqual(sorted(by_id(c.records("events"))), ["f-0", "f-1", "f-2"])

    def test_post_text_plain_takes_one_beacon_per_line_with_crlf_and_blank_lines(self):
        c = start_for(self)
        body = "eid=t-1&vid=v1\r\n\r\neid=t-2&vid=v1\r\neid=t-3&vid=v1\n"
        r = c.post("/collect", body, "text/plain;charset=UTF-8")
        self.assertEqual(r.status, 204, r)
        stop_ok(self, c)
        self.assertEqual(sorted(by_id(c.records("events"))), ["t-1", "t-2", "t-3"])

    def test_post_json_object_is_one_beacon(self):
        c = start_for(self)
        body = json.dumps({"eid": "j-1", "aid": "shop", "vid": "v1", "e": "cv", "en": "purchase",
                           "rev": 49.9, "cur": "eur", "ts": 1700000000123})
        r = c.post("/collect", body, "application/json")
        self.assertEqual(r.status, 204, r)
        stop_ok(self, c)
        e = by_id(c.records("events"))["j-1"]
        self.assertEqual(e["type"], "conversion")
        self.assertEqual(e["name"], "purchase")
        self.assertEqual(e["revenue"], 49.9)
        self.assertEqual(e["currency"], "EUR")
        self.assertEqual(e["client_at"], "2023-11-14T22:13:20.123Z")

    def test_post_json_array_is_one_beacon_per_element(self):
        c = start_for(self)
        body = json.dumps([{"eid": "a-%d" % i, "vid": "v%d" % i} for i in range(4)])
        r = c.post("/collect", body, "application/json; charset=utf-8")
        self.assertEqual(r.status, 204, r)
        stop_ok(self, c)
        ev = by_id(c.records("events"))
        self.assertEqual(sorted(ev), ["a-0", "a-1", "a-2", "a-3"])
        self.assertEqual(ev["a-2"]["visitor_id"], "v2")

    def test_options_preflight_answers_204(self):
        c = start_for(self)
        for path in ("/collect", "/pixel.gif"):
            r = c.request("OPTIONS", path, headers={"Origin": "https://a.example"})
            self.assertEqual(r.status, 204, (path, r))
        stop_ok(self, c)
        self.assertEqual(c.records("events"), [])

    def test_healthz_on_the_collect_listener_and_on_admin(self):
        c = start_for(self)
        r = c.get("/healthz")
        self.assertEqual((r.status, r.body), (200, b"ok\n"))
        r = c.admin("/healthz")
        self.assertEqual((r.status, r.body), (200, b"ok\n"))
        stop_ok(self, c)

    def test_readyz_is_200_once_started(self):
        c = start_for(self)
        r = c.admin("/readyz")
        self.assertEqual(r.status, 200, r)
        stop_ok(self, c)

    def test_unknown_paths_are_404(self):
        c = start_for(self)
        for path in ("/", "/collect/x", "/collectx?eid=1", "/favicon.ico"):
            self.assertEqual(c.get(path).status, 404, path)
        self.assertEqual(c.request("GET", "/metrics", port=c.admin_port).status, 200)
        self.assertEqual(c.request("GET", "/nope", port=c.admin_port).status, 404)
        stop_ok(self, c)
        self.assertEqual(c.records("dead_letters"), [])

    def test_wrong_methods_are_405_with_allow(self):
        c = start_for(self)
        cases = [("PUT", "/collect", "GET, POST, OPTIONS"),
                 ("DELETE", "/collect", "GET, POST, OPTIONS"),
                 ("POST", "/pixel.gif", "GET, OPTIONS"),
                 ("POST", "/healthz", "GET, HEAD")]
        for method, path, allow in cases:
            r = c.request(method, path + "?eid=x", body=b"eid=x" if method != "DELETE" else None)
            self.assertEqual(r.status, 405, (method, path, r))
            self.assertEqual(r.header("allow"), allow, (method, path, r))
        r = c.request("POST", "/metrics", body=b"", port=c.admin_port)
        self.assertEqual(r.status, 405, r)
        stop_ok(self, c)
        self.assertEqual(c.records("events"), [])

    def test_unsupported_content_type_is_415_and_a_dead_letter(self):
        c = start_for(self)
        r = c.post("/collect", "<beacon eid='x'/>", "application/xml")
        self.assertEqual(r.status, 415, r)
        self.assertEqual(c.metric('clickd_dead_letters_total{reason="unsupported"}'), 1)
        stop_ok(self, c)
        dl = c.records("dead_letters")
        self.assertEqual(len(dl), 1, dl)
        self.assertEqual(dl[0]["payload"], "<beacon eid='x'/>")
        self.assertIn("Content-Type", dl[0]["reason"])
        self.assertEqual(c.records("events"), [])

    def test_post_without_content_type_is_sniffed(self):
        c = start_for(self)
        r = c.request("POST", "/collect", body=b'{"eid":"s-1","vid":"v"}')
        self.assertEqual(r.status, 204, r)
        r = c.request("POST", "/collect", body=b"eid=s-2&vid=v")
        self.assertEqual(r.status, 204, r)
        stop_ok(self, c)
        self.assertEqual(sorted(by_id(c.records("events"))), ["s-1", "s-2"])


class EventFields(unittest.TestCase):
    def send(self, c, **fields):
        r = c.get("/collect?" + q(**fields))
        self.assertEqual(r.status, 204, (fields, r))

    def test_utm_tags_come_from_the_page_url_and_explicit_fields_win(self):
        c = start_for(self)
        url = ("https://shop.example/p?utm_source=news&utm_medium=email&utm_campaign=spring"
               "&utm_term=shoes&utm_content=banner&utm_id=c42")
        self.send(c, eid="u-1", vid="v", url=url)
        self.send(c, eid="u-2", vid="v", url=url, utm_campaign="explicit",
                  utm_source="partner")
        stop_ok(self, c)
        ev = by_id(c.records("events"))
        e = ev["u-1"]
        self.assertEqual((e["source"], e["medium"], e["campaign"], e["term"], e["content"],
                          e["utm_id"]), ("news", "email", "spring", "shoes", "banner", "c42"))
        e = ev["u-2"]
        self.assertEqual((e["source"], e["medium"], e["campaign"], e["term"]),
                         ("partner", "email", "explicit", "shoes"))

    def test_every_click_id_is_read_from_the_page_url(self):
        c = start_for(self)
        names = ["gclid", "gbraid", "wbraid", "dclid", "msclkid", "fbclid", "ttclid",
                 "li_fat_id", "twclid"]
        for n in names:
            self.send(c, eid="c-" + n, vid="v", url="https://shop.example/?%s=ID-%s" % (n, n))
        stop_ok(self, c)
        ev = by_id(c.records("events"))
        for n in names:
            e = ev["c-" + n]
            self.assertEqual((e.get("click_id_type"), e.get("click_id")), (n, "ID-" + n), e)

    def test_source_and_medium_follow_the_contract_rules(self):
        cases = [
            # (beacon fields, expected source, expected medium)
            (dict(url=PAGE + "?gclid=1"), "google", "cpc"),
            (dict(url=PAGE + "?gbraid=1"), "google", "cpc"),
            (dict(url=PAGE + "?wbraid=1"), "google", "cpc"),
            (dict(url=PAGE + "?dclid=1"), "google", "cpc"),
            (dict(url=PAGE + "?msclkid=1"), "bing", "cpc"),
            # explicit UTM tags beat a click ID and a referrer
            (dict(url=PAGE + "?gclid=1&utm_source=nl&utm_medium=email",
                  ref="https://www.google.com/"), "nl", "email"),
            (dict(url=PAGE, ref="https://www.google.com/search?q=x"), "google", "organic"),
            (dict(url=PAGE, ref="https://www.google.co.uk/"), "google", "organic"),
            (dict(url=PAGE, ref="https://www.bing.com/search?q=x"), "bing", "organic"),
            (dict(url=PAGE, ref="https://duckduckgo.com/"), "duckduckgo", "organic"),
            (dict(url=PAGE, ref="https://news.example.org/story"), "news.example.org",
             "referral"),
            # a referrer from the page's own host is not a new touch
            (dict(url=PAGE, ref="https://shop.example/cart"), "(direct)", "(none)"),
            (dict(url=PAGE), "(direct)", "(none)"),
            # a click ID with no source rule leaves it to the referrer rules
            (dict(url=PAGE + "?fbclid=1"), "(direct)", "(none)"),
            (dict(url=PAGE + "?fbclid=1", ref="https://m.facebook.com/"), "m.facebook.com",
             "referral"),
        ]
        c = start_for(self)
        for i, (fields, _, _) in enumerate(cases):
            self.send(c, eid="sm-%d" % i, vid="v", **fields)
        stop_ok(self, c)
        ev = by_id(c.records("events"))
        for i, (fields, source, medium) in enumerate(cases):
            e = ev["sm-%d" % i]
            self.assertEqual((e.get("source"), e.get("medium")), (source, medium),
                             (fields, e))

    def test_referrer_host_is_the_lowercased_host_of_ref(self):
        c = start_for(self)
        self.send(c, eid="r-1", vid="v", url=PAGE, ref="https://News.Example.ORG:8443/a?b=c")
        self.send(c, eid="r-2", vid="v", url=PAGE)
        stop_ok(self, c)
        ev = by_id(c.records("events"))
        self.assertEqual(ev["r-1"]["referrer_host"], "news.example.org")
        self.assertEqual(ev["r-1"]["referrer"], "https://News.Example.ORG:8443/a?b=c")
        self.assertNotIn("referrer_host", ev["r-2"])
        self.assertNotIn("referrer", ev["r-2"])

    def test_absent_values_are_omitted_never_empty(self):
        c = start_for(self)
        self.send(c, eid="o-1", vid="v", uid="", en="", url="")
        stop_ok(self, c)
        e = by_id(c.records("events"))["o-1"]
        for k, v in e.items():
            self.assertNotEqual(v, "", (k, e))
        for k in ("user_id", "name", "url", "campaign", "click_id"):
            self.assertNotIn(k, e)

    def test_ip_is_anonymised(self):
        c = start_for(self)
        self.send(c, eid="ip-1", vid="v")
        stop_ok(self, c)
        self.assertEqual(by_id(c.records("events"))["ip-1"]["ip"], "127.0.0.0")

    def test_ip_is_kept_whole_when_anonymisation_is_off(self):
        c = start_for(self, {"privacy.anonymize_ip": "false"})
        self.send(c, eid="ip-1", vid="v")
        stop_ok(self, c)
        self.assertEqual(by_id(c.records("events"))["ip-1"]["ip"], "127.0.0.1")


def cookie_value(set_cookie):
    m = re.match(r"clickd_vid=([A-Za-z0-9_.-]+);", set_cookie or "")
    return m.group(1) if m else None


class VisitorCookie(unittest.TestCase):
    def test_a_cookie_is_set_when_there_is_no_vid_and_reused_when_sent_back(self):
        c = start_for(self)
        r = c.get("/collect?" + q(eid="k-1", url=PAGE))
        self.assertEqual(r.status, 204, r)
        sc = r.header("set-cookie")
        vid = cookie_value(sc)
        self.assertIsNotNone(vid, sc)
        self.assertIn("Path=/", sc)
        self.assertIn("HttpOnly", sc)
        self.assertIn("Max-Age=34128000", sc)
        self.assertIn("SameSite=None; Secure", sc)
        r = c.get("/pixel.gif?" + q(eid="k-2"), headers={"Cookie": "a=b; clickd_vid=" + vid})
        self.assertEqual(r.status, 200, r)
        self.assertIsNone(r.header("set-cookie"), r)
        # a vid in the beacon wins and needs no cookie
        r = c.get("/collect?" + q(eid="k-3", vid="explicit"))
        self.assertIsNone(r.header("set-cookie"), r)
        stop_ok(self, c)
        ev = by_id(c.records("events"))
        self.assertEqual(ev["k-1"]["visitor_id"], vid)
        self.assertEqual(ev["k-2"]["visitor_id"], vid)
        self.assertEqual(ev["k-3"]["visitor_id"], "explicit")

    def test_each_new_visitor_gets_a_different_id(self):
        c = start_for(self)
        ids = set()
        for i in range(5):
            r = c.get("/collect?" + q(eid="n-%d" % i))
            ids.add(cookie_value(r.header("set-cookie")))
        self.assertEqual(len(ids), 5, ids)
        self.assertNotIn(None, ids)
        stop_ok(self, c)

    def test_cookie_name_domain_and_lax_come_from_the_config(self):
        c = start_for(self, {"http.cookie_name": "vis", "http.cookie_domain": "shop.example",
                             "http.cookie_secure": "false", "http.cookie_max_age_s": "0"})
        r = c.get("/collect?" + q(eid="x-1"))
        sc = r.header("set-cookie")
        self.assertRegex(sc, r"^vis=[0-9a-f]+; Path=/; Domain=shop\.example; HttpOnly; "
                             r"SameSite=Lax$")
        stop_ok(self, c)

    def test_a_malformed_cookie_value_is_not_believed(self):
        c = start_for(self)
        r = c.get("/collect?" + q(eid="m-1"), headers={"Cookie": 'clickd_vid="<script>"'})
        self.assertIsNotNone(cookie_value(r.header("set-cookie")), r)
        stop_ok(self, c)
        self.assertNotIn("<", by_id(c.records("events"))["m-1"]["visitor_id"])

    def test_a_batch_sets_one_cookie_shared_by_its_beacons(self):
        c = start_for(self)
        r = c.post("/collect", "eid=b-1\neid=b-2", "text/plain")
        self.assertEqual(r.status, 204, r)
        vid = cookie_value(r.header("set-cookie"))
        self.assertIsNotNone(vid, r)
        self.assertEqual(len([h for h in r.headers if h[0] == "set-cookie"]), 1, r)
        stop_ok(self, c)
        ev = by_id(c.records("events"))
        self.assertEqual((ev["b-1"]["visitor_id"], ev["b-2"]["visitor_id"]), (vid, vid))


class Privacy(unittest.TestCase):
    def check_untracked(self, headers):
        c = start_for(self)
        r = c.get("/collect?" + q(eid="gpc-1", url=PAGE), headers=headers)
        self.assertEqual(r.status, 204, r)
        self.assertIsNone(r.header("set-cookie"), r)
        r = c.get("/collect?" + q(eid="gpc-2", vid="v1"), headers=headers)
        self.assertEqual(r.status, 204, r)
        stop_ok(self, c)
        ev = by_id(c.records("events"))
        self.assertNotIn("ip", ev["gpc-1"])
        self.assertNotIn("visitor_id", ev["gpc-1"])
        self.assertNotIn("ip", ev["gpc-2"])
        self.assertEqual(ev["gpc-2"]["visitor_id"], "v1")

    def test_sec_gpc_means_no_cookie_and_no_ip(self):
        self.check_untracked({"Sec-GPC": "1"})

    def test_dnt_means_no_cookie_and_no_ip(self):
        self.check_untracked({"DNT": "1"})

    def test_gpc_is_ignored_when_honor_gpc_is_off(self):
        c = start_for(self, {"privacy.honor_gpc": "false"})
        r = c.get("/collect?" + q(eid="h-1"), headers={"Sec-GPC": "1"})
        self.assertIsNotNone(cookie_value(r.header("set-cookie")), r)
        stop_ok(self, c)
        self.assertEqual(by_id(c.records("events"))["h-1"]["ip"], "127.0.0.0")


class ClientIp(unittest.TestCase):
    def ip_of(self, c, eid, xff_headers):
        s = socket.create_connection(("127.0.0.1", c.http_port))
        try:
            req = "GET /collect?eid=%s&vid=v HTTP/1.1\r\nHost: x\r\n" % eid
            for name, value in xff_headers:
                req += "%s: %s\r\n" % (name, value)
            s.sendall((req + "\r\n").encode())
            rs, _ = read_responses(s, 1)
            self.assertEqual(rs[0].status, 204, rs)
        finally:
            s.close()

    def test_x_forwarded_for_is_ignored_from_an_untrusted_peer(self):
        c = start_for(self)
        self.ip_of(c, "x-1", [("X-Forwarded-For", "203.0.113.7")])
        stop_ok(self, c)
        self.assertEqual(by_id(c.records("events"))["x-1"]["ip"], "127.0.0.0")

    def test_x_forwarded_for_is_believed_from_a_trusted_proxy(self):
        c = start_for(self, {"http.trusted_proxies": "10.0.0.0/8, 127.0.0.1/32"})
        self.ip_of(c, "x-1", [("X-Forwarded-For", "203.0.113.7")])
        # the right-most address that is not a trusted proxy is the client
        self.ip_of(c, "x-2", [("X-Forwarded-For", "198.51.100.1, 203.0.113.7, 10.1.2.3")])
        # a repeated header continues the list
        self.ip_of(c, "x-3", [("X-Forwarded-For", "198.51.100.1"),
                              ("X-Forwarded-For", "203.0.113.7")])
        self.ip_of(c, "x-4", [("X-Forwarded-For", "2001:db8:1234:5678::1")])
        # a malformed hop ends the walk at the last good one
        self.ip_of(c, "x-5", [("X-Forwarded-For", "junk, 10.9.9.9")])
        stop_ok(self, c)
        ev = by_id(c.records("events"))
        self.assertEqual(ev["x-1"]["ip"], "203.0.113.0")
        self.assertEqual(ev["x-2"]["ip"], "203.0.113.0")
        self.assertEqual(ev["x-3"]["ip"], "203.0.113.0")
        self.assertEqual(ev["x-4"]["ip"], "2001:db8:1234::")
        self.assertEqual(ev["x-5"]["ip"], "10.9.9.0")

    def test_a_repeated_x_forwarded_for_after_other_headers_is_not_lost(self):
        # Regression: a proxy that adds its own X-Forwarded-For line at the end (HAProxy's
        # option forwardfor) puts other headers between it and the client's own line; the
        # proxy's line used to be dropped, so the client-supplied address was believed.
        c = start_for(self, {"http.trusted_proxies": "127.0.0.1/32"})
        self.ip_of(c, "x-1", [("X-Forwarded-For", "198.51.100.66"),
                              ("User-Agent", "Mozilla/5.0"),
                              ("Origin", "https://a.example"),
                              ("X-Forwarded-For", "203.0.113.7")])
        stop_ok(self, c)
        self.assertEqual(by_id(c.records("events"))["x-1"]["ip"], "203.0.113.0")


class Connections(unittest.TestCase):
    def test_keep_alive_serves_several_requests_on_one_connection(self):
        import http.client
        c = start_for(self)
        before = c.metric("clickd_http_connections_total")
        conn = http.client.HTTPConnection("127.0.0.1", c.http_port, timeout=10)
        try:
            for i in range(5):
                conn.request("GET", "/collect?" + q(eid="ka-%d" % i, vid="v"))
                r = conn.getresponse()
                r.read()
                self.assertEqual(r.status, 204)
                self.assertIsNone(r.getheader("connection"))
            conn.request("POST", "/collect", body=b"eid=ka-5&vid=v",
                         headers={"Content-Type": "text/plain"})
            r = conn.getresponse()
            r.read()
            self.assertEqual(r.status, 204)
        finally:
            conn.close()
        self.assertEqual(c.metric("clickd_http_connections_total") - before, 1)
        stop_ok(self, c)
        self.assertEqual(len(by_id(c.records("events"))), 6)

    def test_pipelined_requests_are_answered_in_order(self):
        c = start_for(self)
        post_body = b"eid=pl-3&vid=v\neid=pl-4&vid=v"
        reqs = (b"GET /collect?eid=pl-1&vid=v HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /pixel.gif?eid=pl-2&vid=v HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                b"POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                b"Content-Length: " + str(len(post_body)).encode() + b"\r\n\r\n" + post_body +
                b"GET /collect?e=bad HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /collect?eid=pl-5&vid=v HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        s = socket.create_connection(("127.0.0.1", c.http_port))
        try:
            s.sendall(reqs)
            rs, closed = read_responses(s, 7)
            self.assertEqual([r.status for r in rs], [204, 200, 404, 204, 400, 200, 204], rs)
            self.assertEqual(rs[1].header("content-type"), "image/gif")
            self.assertEqual(rs[5].body, b"ok\n")
            self.assertEqual(rs[6].header("connection"), "close")
            # the last answer ended the connection
            if not closed:
                self.assertEqual(s.recv(1), b"")
        finally:
            s.close()
        stop_ok(self, c)
        self.assertEqual(sorted(by_id(c.records("events"))),
                         ["pl-1", "pl-2", "pl-3", "pl-4", "pl-5"])
        self.assertEqual(len(c.records("dead_letters")), 1)

    def test_many_keep_alive_requests_are_answered_in_order(self):
        # Regression for answers sent with uv_try_write: each one leaves at once, and the
        # connection must still be ready for the next request, many times over.
        c = start_for(self)
        n = 600
        s = socket.create_connection(("127.0.0.1", c.http_port))
        try:
            for i in range(n):
                path = "/pixel.gif" if i % 3 == 2 else "/collect"
                s.sendall(("GET %s?eid=ka-%d&vid=v HTTP/1.1\r\nHost: x\r\n"
                           "Origin: https://o%d.example\r\n\r\n" % (path, i, i)).encode())
                (r,), closed = read_responses(s, 1)
                self.assertEqual(r.status, 200 if i % 3 == 2 else 204, (i, r))
                self.assertEqual(r.header("access-control-allow-origin"),
                                 "https://o%d.example" % i, (i, r))
                self.assertFalse(closed, i)
        finally:
            s.close()
        stop_ok(self, c)
        self.assertEqual(len(by_id(c.records("events"))), n)

    def test_a_client_pipelining_many_requests_without_reading_gets_every_answer_in_order(self):
        # Regression for partial writes: the client sends thousands of requests and reads
        # nothing until clickd has queued far more answers than the connection holds (a
        # small receive buffer and a small MSS keep the kernel's buffers to tens of KB), so
        # uv_try_write takes only part of them, uv_write the rest, and clickd stops reading
        # while too much waits. Every answer must come, in order (every tenth, an OPTIONS
        # answer, echoes its request's own Origin), then the Connection: close.
        c = start_for(self)
        n = 12000
        reqs = []
        for i in range(n):
            if i % 10 == 9:
                reqs.append(b"OPTIONS /collect HTTP/1.1\r\nHost: x\r\n"
                            b"Origin: https://o%d.example\r\n\r\n" % i)
            elif i % 10 == 4:
                reqs.append(b"GET /healthz HTTP/1.1\r\n\r\n")
            else:
                reqs.append(b"GET /x HTTP/1.1\r\n\r\n")
        reqs.append(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(scaled(30))
        # Before connect: the window clickd sees, and the segment size it sends with.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        sender = threading.Thread(target=s.sendall, args=(b"".join(reqs),), daemon=True)
        try:
            s.connect(("127.0.0.1", c.http_port))
            sender.start()

            # 5000 answers are ~0.75 MB: clickd queues them even while nothing is read,
            # since it stops reading only once more than 1 MiB waits.
            def answered():
                m = c.metrics()
                return sum(m.get('clickd_http_requests_total{status="%d"}' % st, 0)
                           for st in (200, 204, 404)) >= 5000
            wait_for(answered, 30, "clickd to queue 5000 answers")
            out = wait_closed(s, timeout=60)
            sender.join(scaled(30))
            self.assertFalse(sender.is_alive())
        finally:
            s.close()
        got, rest = parse_responses(out)
        self.assertEqual(rest, b"")
        self.assertEqual(len(got), n + 1)
        for i, r in enumerate(got[:n]):
            if i % 10 == 9:
                self.assertEqual(r.status, 204, (i, r))
                self.assertEqual(r.header("access-control-allow-origin"),
                                 "https://o%d.example" % i, (i, r))
            elif i % 10 == 4:
                self.assertEqual((r.status, r.body), (200, b"ok\n"), (i, r))
            else:
                self.assertEqual((r.status, r.body), (404, b"not found\n"), (i, r))
            self.assertIsNone(r.header("connection"), (i, r))
        self.assertEqual((got[n].status, got[n].header("connection")), (200, "close"))
        stop_ok(self, c)
        self.assertEqual(c.records("dead_letters"), [])

    def test_requests_split_across_many_writes_are_reassembled(self):
        c = start_for(self)
        req = (b"POST /collect?ignored=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: split/1\r\n"
               b"Content-Type: application/json\r\nContent-Length: 25\r\n\r\n"
               b'{"eid":"sp-1","vid":"v1"}')
        s = socket.create_connection(("127.0.0.1", c.http_port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for i in range(0, len(req), 7):
                s.sendall(req[i:i + 7])
            rs, _ = read_responses(s, 1)
            self.assertEqual(rs[0].status, 204, rs)
        finally:
            s.close()
        stop_ok(self, c)
        e = by_id(c.records("events"))["sp-1"]
        self.assertEqual(e["user_agent"], "split/1")

    def test_chunked_bodies_are_taken(self):
        c = start_for(self)
        body = b"eid=ch-1&vid=v\neid=ch-2&vid=v"
        req = (b"POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n" +
               b"%x\r\n%s\r\n" % (10, body[:10]) + b"%x\r\n%s\r\n" % (len(body) - 10, body[10:]) +
               b"0\r\n\r\n")
        s = socket.create_connection(("127.0.0.1", c.http_port))
        try:
            s.sendall(req)
            rs, _ = read_responses(s, 1)
            self.assertEqual(rs[0].status, 204, rs)
        finally:
            s.close()
        stop_ok(self, c)
        self.assertEqual(sorted(by_id(c.records("events"))), ["ch-1", "ch-2"])

    def test_http_1_0_gets_its_answer_and_the_connection_closes(self):
        c = start_for(self)
        s = socket.create_connection(("127.0.0.1", c.http_port))
        try:
            s.sendall(b"GET /collect?eid=h10&vid=v HTTP/1.0\r\n\r\n")
            out = wait_closed(s)
        finally:
            s.close()
        rs, rest = parse_responses(out)
        self.assertEqual([r.status for r in rs], [204], out)
        self.assertEqual(rs[0].header("connection"), "close")
        self.assertEqual(rest, b"")
        stop_ok(self, c)
        self.assertEqual([e["event_id"] for e in c.records("events")], ["h10"])

    def test_expect_100_continue_gets_a_100_then_the_answer(self):
        c = start_for(self)
        s = socket.create_connection(("127.0.0.1", c.http_port))
        try:
            s.sendall(b"POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                      b"Content-Length: 14\r\nExpect: 100-continue\r\n\r\n")
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(4096)
                self.assertTrue(chunk, "closed before 100 Continue")
                buf += chunk
            self.assertTrue(buf.startswith(b"HTTP/1.1 100 Continue\r\n"), buf)
            s.sendall(b"eid=ex-1&vid=v")
            rs, _ = read_responses(s, 1)
            self.assertEqual(rs[0].status, 204, rs)
        finally:
            s.close()
        stop_ok(self, c)
        self.assertEqual(list(by_id(c.records("events"))), ["ex-1"])


class AdminMetrics(unittest.TestCase):
    def test_metrics_count_requests_events_sinks_dead_letters_and_bytes(self):
        c = start_for(self)
        r = c.admin("/metrics")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("content-type"), "text/plain; version=0.0.4; charset=utf-8")
        text = r.body.decode()
        for family in ("clickd_http_requests_total", "clickd_events_in_total",
                       "clickd_records_out_total", "clickd_dead_letters_total",
                       "clickd_bytes_in_total"):
            self.assertIn("# TYPE %s counter" % family, text)
        m0 = c.metrics()
        sent = 0
        for path in ("/collect?eid=m-1&vid=v", "/pixel.gif?eid=m-2&vid=v", "/collect?e=zz",
                     "/nowhere"):
            req = ("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode()
            sent += len(req)
            c.raw(req)
        r = c.post("/collect", "eid=m-3&vid=v\neid=m-4&vid=v\ne=bad", "text/plain")
        self.assertEqual(r.status, 204)
        # Events are written by the shards after the answer: wait for them.
        ev_out = 'clickd_records_out_total{sink="file",stream="events"}'
        wait_for(lambda: c.metric(ev_out) - m0.get(ev_out, 0) >= 4, 10, "4 events written")
        m1 = c.metrics()

        def d(name):
            return m1.get(name, 0) - m0.get(name, 0)
        self.assertEqual(d('clickd_http_requests_total{status="204"}'), 2)
        self.assertEqual(d('clickd_http_requests_total{status="200"}'), 1)
        self.assertEqual(d('clickd_http_requests_total{status="400"}'), 1)
        self.assertEqual(d('clickd_http_requests_total{status="404"}'), 1)
        self.assertEqual(d("clickd_events_in_total"), 4)
        self.assertEqual(d('clickd_records_out_total{sink="file",stream="events"}'), 4)
        self.assertEqual(d('clickd_records_out_total{sink="file",stream="dead_letters"}'), 2)
        self.assertEqual(d('clickd_dead_letters_total{reason="malformed"}'), 2)
        self.assertGreater(d("clickd_bytes_in_total"), sent)
        self.assertEqual(d("clickd_http_connections_total"), 5)
        # the admin listener's own requests are not counted as collect traffic
        m2 = c.metrics()
        self.assertEqual(m2['clickd_http_requests_total{status="200"}'],
                         m1['clickd_http_requests_total{status="200"}'])
        stop_ok(self, c)

if __name__ == "__main__":
    unittest.main()
