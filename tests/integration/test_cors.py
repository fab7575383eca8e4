"""CORS on the collect paths, exactly as CONTRACTS.md says: an allowed Origin is echoed
(never a literal *) with Access-Control-Allow-Credentials: true and Vary: Origin on every
answer; preflights also echo Access-Control-Request-Headers and set Allow-Methods and
Max-Age; a disallowed origin gets no CORS headers; `*` allows any origin."""

import unittest

from clickd_harness import parse_responses, start_for, stop_ok

ALLOWED = "https://shop.example"
OTHER_ALLOWED = "http://localhost:3000"


def cors_headers(r):
    return {k: v for k, v in r.headers if k.startswith("access-control-") or k == "vary"}


class Cors(unittest.TestCase):
    def answers(self, c, origin):
        """One answer of each kind a collect path gives, all sent with Origin. Event IDs
        are unique per call (the pipeline drops repeated IDs as duplicates)."""
        h = {"Origin": origin}
        self.calls = getattr(self, "calls", 0) + 1
        n = self.calls
        return {
            "get 204": c.get("/collect?eid=c1-%d&vid=v" % n, headers=h),
            "pixel 200": c.get("/pixel.gif?eid=c2-%d&vid=v" % n, headers=h),
            "post 204": c.post("/collect", "eid=c3-%d&vid=v" % n, "text/plain", headers=h),
            "bad 400": c.get("/collect?e=nope", headers=h),
            "405": c.request("PUT", "/collect", body=b"x", headers=h),
            "415": c.post("/collect", "x", "application/xml", headers=h),
            "batch 413": c.post("/collect", "\n".join("eid=b%d" % i for i in range(4)),
                                "text/plain", headers=h),
        }

    def assert_allowed(self, r, origin, what):
        self.assertEqual(r.header("access-control-allow-origin"), origin, (what, r))
        self.assertEqual(r.header("access-control-allow-credentials"), "true", (what, r))
        self.assertEqual(r.header("vary"), "Origin", (what, r))
        self.assertEqual(len([k for k, _ in r.headers if k == "access-control-allow-origin"]),
                         1, (what, r))

    def test_an_allowed_origin_is_echoed_on_every_answer(self):
        c = start_for(self, {"http.cors_origins": "%s %s" % (ALLOWED, OTHER_ALLOWED),
                             "limits.max_batch": "3"})
        for origin in (ALLOWED, OTHER_ALLOWED):
            got = self.answers(c, origin)
            self.assertEqual(sorted((k, r.status) for k, r in got.items()),
                             sorted([("get 204", 204), ("pixel 200", 200), ("post 204", 204),
                                     ("bad 400", 400), ("405", 405), ("415", 415),
                                     ("batch 413", 413)]))
            for what, r in got.items():
                self.assert_allowed(r, origin, what)
                # simple answers are not preflights
                self.assertIsNone(r.header("access-control-allow-methods"), (what, r))
                self.assertIsNone(r.header("access-control-max-age"), (what, r))
        stop_ok(self, c)

    def test_a_preflight_echoes_the_request_headers(self):
        c = start_for(self, {"http.cors_origins": ALLOWED})
        for path in ("/collect", "/pixel.gif"):
            r = c.request("OPTIONS", path, headers={
                "Origin": ALLOWED,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, x-requested-with"})
            self.assertEqual(r.status, 204, r)
            self.assert_allowed(r, ALLOWED, path)
            self.assertEqual(r.header("access-control-allow-methods"), "GET, POST, OPTIONS")
            self.assertEqual(r.header("access-control-max-age"), "3600")
            self.assertEqual(r.header("access-control-allow-headers"),
                             "content-type, x-requested-with")
        # no Access-Control-Request-Headers: nothing to echo
        r = c.request("OPTIONS", "/collect", headers={"Origin": ALLOWED})
        self.assertEqual(r.status, 204, r)
        self.assertIsNone(r.header("access-control-allow-headers"), r)
        self.assertEqual(r.header("access-control-allow-methods"), "GET, POST, OPTIONS")
        stop_ok(self, c)
        self.assertEqual(c.records("events"), [])
        self.assertEqual(c.records("dead_letters"), [])

    def test_echoed_request_headers_cannot_inject_header_lines(self):
        c = start_for(self, {"http.cors_origins": ALLOWED})
        raw = (b"OPTIONS /collect HTTP/1.1\r\nHost: x\r\nOrigin: " + ALLOWED.encode() +
               b"\r\nAccess-Control-Request-Headers: a:b;c<d>\"e\r\n\r\n")
        rs, _ = parse_responses(c.raw(raw + b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                      b"Connection: close\r\n\r\n"))
        self.assertEqual([r.status for r in rs], [204, 200], rs)
        self.assertEqual(rs[0].header("access-control-allow-headers"), "abcde")
        stop_ok(self, c)

    def test_a_disallowed_origin_gets_no_cors_headers(self):
        c = start_for(self, {"http.cors_origins": ALLOWED, "limits.max_batch": "3"})
        for origin in ("https://evil.example", "https://shop.example.evil.example",
                       "http://shop.example", "null"):
            for what, r in self.answers(c, origin).items():
                self.assertEqual(cors_headers(r), {}, (origin, what, r))
            r = c.request("OPTIONS", "/collect", headers={
                "Origin": origin, "Access-Control-Request-Headers": "content-type"})
            self.assertEqual(r.status, 204, r)
            self.assertEqual(cors_headers(r), {}, (origin, r))
        stop_ok(self, c)
        # the beacons themselves are taken: CORS is the browser's business
        self.assertEqual(len(c.records("events")), 4 * 3)

    def test_no_origin_means_no_cors_headers(self):
        c = start_for(self)
        r = c.get("/collect?eid=n&vid=v")
        self.assertEqual(cors_headers(r), {}, r)
        stop_ok(self, c)

    def test_empty_cors_origins_allows_none(self):
        c = start_for(self, {"http.cors_origins": ""})
        r = c.get("/collect?eid=n&vid=v", headers={"Origin": ALLOWED})
        self.assertEqual(r.status, 204)
        self.assertEqual(cors_headers(r), {}, r)
        stop_ok(self, c)

    def test_star_allows_any_origin_and_echoes_it_never_a_literal_star(self):
        c = start_for(self, {"http.cors_origins": "*"})
        for origin in ("https://any.example", "http://127.0.0.1:8000", "null"):
            for what, r in self.answers(c, origin).items():
                self.assert_allowed(r, origin, what)
                self.assertNotEqual(r.header("access-control-allow-origin"), "*")
            r = c.request("OPTIONS", "/pixel.gif", headers={"Origin": origin})
            self.assert_allowed(r, origin, "preflight")
        stop_ok(self, c)

    def test_star_is_the_default(self):
        c = start_for(self)
        r = c.get("/collect?eid=d&vid=v", headers={"Origin": "https://x.example"})
        self.assert_allowed(r, "https://x.example", "default")
        stop_ok(self, c)


if __name__ == "__main__":
    unittest.main()
