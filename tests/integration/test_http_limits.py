"""HTTP limits and bad input on the real binary: each limit answers its 4xx (or 503), writes a
dead letter with its reason and counts a metric; the connection stays usable where HTTP
allows."""

import http.client
import socket
import time
import unittest

from clickd_harness import (parse_responses, read_responses, scaled, start_for, stop_ok,
                            wait_closed, wait_for)

LIMITS = {
    "http.max_header_bytes": "2048",
    "http.max_url_bytes": "512",
    "http.max_body_bytes": "2048",
    "limits.max_batch": "3",
}


def connect(c):
    s = socket.create_connection(("127.0.0.1", c.http_port), timeout=scaled(10))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Limit(unittest.TestCase):
    def setUp(self):
        self.c = start_for(self, LIMITS)
        self.m0 = self.c.metrics()

    def delta(self, name):
        return self.c.metric(name) - self.m0.get(name, 0)

    def check(self, raw, status, reason_part, dl_class, closes):
        """Sends raw on a fresh connection; checks the answer, its metric and dead letter,
        and whether the connection survives (a follow-up request on it)."""
        s = connect(self.c)
        try:
            s.sendall(raw)
            rs, closed = read_responses(s, 1)
            self.assertEqual(rs[0].status, status, rs)
            self.assertIn(reason_part, rs[0].body.decode(), rs)
            follow = b"GET /collect?eid=after&vid=v HTTP/1.1\r\nHost: x\r\n\r\n"
            if closes:
                self.assertEqual(rs[0].header("connection"), "close", rs)
                wait_closed(s)
            else:
                self.assertIsNone(rs[0].header("connection"), rs)
                s.sendall(follow)
                rs2, _ = read_responses(s, 1)
                self.assertEqual(rs2[0].status, 204, rs2)
        finally:
            s.close()
        self.assertEqual(self.delta('clickd_http_requests_total{status="%d"}' % status), 1)
        self.assertEqual(self.delta('clickd_dead_letters_total{reason="%s"}' % dl_class), 1)
        stop_ok(self, self.c)
        dl = self.c.records("dead_letters")
        self.assertEqual(len(dl), 1, dl)
        self.assertIn(reason_part, dl[0]["reason"])
        self.assertEqual(dl[0]["peer"], "127.0.0.1")
        self.assertEqual(dl[0]["protocol"], "native")
        ids = [e["event_id"] for e in self.c.records("events")]
        self.assertEqual(ids, [] if closes else ["after"])
        return dl[0]

    def test_headers_over_max_header_bytes_are_431(self):
        raw = (b"GET /collect?eid=h&vid=v HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 3000 +
               b"\r\n\r\n")
        self.check(raw, 431, "http.max_header_bytes", "too_large", closes=True)

    def test_many_small_headers_over_max_header_bytes_are_431(self):
        raw = b"GET /collect?eid=h&vid=v HTTP/1.1\r\nHost: x\r\n"
        raw += b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 40) for i in range(60)) + b"\r\n"
        self.check(raw, 431, "http.max_header_bytes", "too_large", closes=True)

    def test_a_target_over_max_url_bytes_is_414(self):
        raw = b"GET /collect?eid=u&vid=v&pad=" + b"x" * 600 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        dl = self.check(raw, 414, "http.max_url_bytes", "too_large", closes=True)
        self.assertTrue(dl["payload"].startswith("/collect?eid=u"), dl)

    def test_a_content_length_over_max_body_bytes_is_413(self):
        raw = (b"POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
               b"Content-Length: 5000\r\n\r\n" + b"eid=b&vid=v\n" * 10)
        self.check(raw, 413, "http.max_body_bytes", "too_large", closes=True)

    def test_a_chunked_body_over_max_body_bytes_is_413(self):
        chunk = b"eid=c&vid=v\n" * 100
        raw = (b"POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n" +
               (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 3 + b"0\r\n\r\n")
        self.check(raw, 413, "http.max_body_bytes", "too_large", closes=True)

    def test_more_lines_than_max_batch_is_413_and_nothing_is_taken(self):
        body = b"\n".join(b"eid=l-%d&vid=v" % i for i in range(4))
        raw = (b"POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.check(raw, 413, "limits.max_batch", "too_large", closes=False)

    def test_a_json_array_longer_than_max_batch_is_413_and_nothing_is_taken(self):
        body = b"[" + b",".join(b'{"eid":"j-%d","vid":"v"}' % i for i in range(4)) + b"]"
        raw = (b"POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.check(raw, 413, "more than 3 beacons", "too_large", closes=False)

    def test_malformed_http_is_400(self):
        self.check(b"GET /collect HTTP/1.1\r\nHost x\r\n\r\n", 400, "malformed HTTP",
                   "malformed", closes=True)

    def test_a_bad_beacon_is_400_and_the_connection_stays_usable(self):
        raw = b"GET /collect?eid=x&e=nope HTTP/1.1\r\nHost: x\r\n\r\n"
        dl = self.check(raw, 400, "unknown event type", "malformed", closes=False)
        self.assertEqual(dl["payload"], "eid=x&e=nope")

    def test_a_beacon_with_a_bad_escape_is_400(self):
        raw = b"GET /collect?eid=%zz HTTP/1.1\r\nHost: x\r\n\r\n"
        self.check(raw, 400, "percent-encoding", "malformed", closes=False)

    def test_a_beacon_without_fields_is_400(self):
        self.check(b"GET /collect HTTP/1.1\r\nHost: x\r\n\r\n", 400, "no beacon",
                   "malformed", closes=False)

    def test_an_empty_body_is_400(self):
        raw = (b"POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
               b"Content-Length: 0\r\n\r\n")
        self.check(raw, 400, "no beacon", "malformed", closes=False)

    def test_bad_json_is_400_and_the_connection_stays_usable(self):
        body = b'{"eid":"j","vid":'
        raw = (b"POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body) + body)
        dl = self.check(raw, 400, "JSON", "malformed", closes=False)
        self.assertEqual(dl["payload"], body.decode())

    def test_percent_encoded_invalid_utf8_is_400(self):
        raw = b"GET /collect?eid=%FF%FE&vid=v HTTP/1.1\r\nHost: x\r\n\r\n"
        self.check(raw, 400, "UTF-8", "not_utf8", closes=False)

    def test_raw_invalid_utf8_in_a_text_body_is_400(self):
        body = b"eid=\xc3\x28&vid=v"
        raw = (b"POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body) + body)
        dl = self.check(raw, 400, "UTF-8", "not_utf8", closes=False)
        # the dead letter itself is valid JSON/UTF-8 (records() parsed it)
        self.assertIn("\ufffd", dl["payload"])

    def test_invalid_utf8_in_a_json_string_is_400(self):
        body = b'{"eid":"\xed\xa0\x80","vid":"v"}'
        raw = (b"POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.check(raw, 400, "UTF-8", "not_utf8", closes=False)

    def test_too_many_fields_is_a_too_large_dead_letter(self):
        raw = (b"GET /collect?" + b"&".join(b"f%d=1" % i for i in range(70)) +
               b" HTTP/1.1\r\nHost: x\r\n\r\n")
        self.check(raw, 400, "too many fields", "too_large", closes=False)


class OneAnswerPerRequest(unittest.TestCase):
    def test_an_upgrade_request_gets_one_400_and_no_event(self):
        # Regression: http-parser completes an Upgrade request (so the handler answered
        # it) and then stops; the server used to add a 400 after the handler's answer:
        # two answers to one request.
        c = start_for(self)
        s = connect(c)
        try:
            s.sendall(b"GET /collect?eid=up&vid=v HTTP/1.1\r\nHost: x\r\n"
                      b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            rest = wait_closed(s)
        finally:
            s.close()
        rs, tail = parse_responses(rest)
        self.assertEqual([r.status for r in rs], [400], rest)
        self.assertEqual(tail, b"")
        self.assertIn(b"upgrade", rs[0].body)
        self.assertEqual(c.metric('clickd_http_requests_total{status="204"}'), 0)
        stop_ok(self, c)
        self.assertEqual(c.records("events"), [])
        self.assertEqual(len(c.records("dead_letters")), 1)

    def test_an_error_after_a_head_request_keeps_its_body(self):
        # Regression: the error answer took the method of the previous request, so after
        # a HEAD its body was left out while Content-Length still counted it.
        c = start_for(self)
        raw = (b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /collect?eid=z HTTP/1.1\r\nHost x\r\n\r\n")
        out = c.raw(raw)
        head_end = out.index(b"\r\n\r\n") + 4
        self.assertTrue(out.startswith(b"HTTP/1.1 200 OK\r\n"), out)
        rs, tail = parse_responses(out[head_end:])
        self.assertEqual([r.status for r in rs], [400], out)
        self.assertEqual(rs[0].body, b"malformed HTTP: invalid character in header\n")
        self.assertEqual(tail, b"")
        stop_ok(self, c)

    def test_a_head_request_gets_headers_only(self):
        c = start_for(self)
        out = c.raw(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 200 OK\r\n"), out)
        self.assertIn(b"Content-Length: 3\r\n", out)
        self.assertTrue(out.endswith(b"\r\n\r\n"), out)
        stop_ok(self, c)

    def test_headers_in_a_chunked_trailer_are_not_believed(self):
        # Regression: trailer fields were taken as request headers, so a client could add
        # an X-Forwarded-For after the one its proxy wrote, or change the Content-Type.
        c = start_for(self, {"http.trusted_proxies": "127.0.0.1/32"})
        body = b"eid=tr-1&vid=v"
        raw = (b"POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
               b"X-Forwarded-For: 203.0.113.7\r\nTransfer-Encoding: chunked\r\n\r\n" +
               b"%x\r\n%s\r\n0\r\n" % (len(body), body) +
               b"X-Forwarded-For: 198.51.100.66\r\nUser-Agent: sneaky\r\n\r\n")
        s = connect(c)
        try:
            s.sendall(raw)
            rs, _ = read_responses(s, 1)
            self.assertEqual(rs[0].status, 204, rs)
        finally:
            s.close()
        stop_ok(self, c)
        (e,) = c.records("events")
        self.assertEqual(e["ip"], "203.0.113.0")
        self.assertNotIn("user_agent", e)


class BatchLimit(unittest.TestCase):
    def test_exactly_max_batch_lines_or_elements_are_taken(self):
        c = start_for(self, LIMITS)
        r = c.post("/collect", "eid=a1&vid=v\neid=a2&vid=v\neid=a3&vid=v", "text/plain")
        self.assertEqual(r.status, 204, r)
        r = c.post("/collect", '[{"eid":"b1"},{"eid":"b2"},{"eid":"b3"}]', "application/json")
        self.assertEqual(r.status, 204, r)
        stop_ok(self, c)
        self.assertEqual(sorted(e["event_id"] for e in c.records("events")),
                         ["a1", "a2", "a3", "b1", "b2", "b3"])

    def test_bad_lines_are_dead_lettered_while_good_ones_are_taken(self):
        c = start_for(self)
        r = c.post("/collect", "eid=g1&vid=v\ne=nope&eid=bad\neid=g2&vid=v", "text/plain")
        self.assertEqual(r.status, 204, r)
        r = c.post("/collect", '[{"eid":"g3"},{"eid":"bad2","ts":"x"},7]', "application/json")
        self.assertEqual(r.status, 204, r)
        self.assertEqual(c.metric('clickd_dead_letters_total{reason="malformed"}'), 3)
        stop_ok(self, c)
        self.assertEqual(sorted(e["event_id"] for e in c.records("events")),
                         ["g1", "g2", "g3"])
        payloads = sorted(d["payload"] for d in c.records("dead_letters"))
        self.assertEqual(payloads, sorted(['7', '{"eid":"bad2","ts":"x"}', "e=nope&eid=bad"]))


class IdleTimeout(unittest.TestCase):
    SETTINGS = {"http.idle_timeout_ms": "300"}

    def test_a_half_sent_request_gets_408_a_dead_letter_and_a_metric(self):
        c = start_for(self, self.SETTINGS)
        s = connect(c)
        try:
            s.sendall(b"GET /collect?eid=slow&vid=v HTTP/1.1\r\nHost: x\r\nUser-Agent: ha")
            rs, _ = read_responses(s, 1)
            self.assertEqual(rs[0].status, 408, rs)
            self.assertEqual(rs[0].header("connection"), "close")
            wait_closed(s)
        finally:
            s.close()
        self.assertEqual(c.metric("clickd_http_idle_timeouts_total"), 1)
        self.assertEqual(c.metric('clickd_http_requests_total{status="408"}'), 1)
        self.assertEqual(c.metric('clickd_dead_letters_total{reason="malformed"}'), 1)
        stop_ok(self, c)
        dl = c.records("dead_letters")
        self.assertEqual(len(dl), 1, dl)
        self.assertIn("http.idle_timeout_ms", dl[0]["reason"])
        self.assertTrue(dl[0]["payload"].startswith("/collect?eid=slow"), dl)
        self.assertEqual(c.records("events"), [])

    def test_a_half_sent_body_gets_408(self):
        c = start_for(self, self.SETTINGS)
        s = connect(c)
        try:
            s.sendall(b"POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                      b"Content-Length: 100\r\n\r\neid=part")
            rs, _ = read_responses(s, 1)
            self.assertEqual(rs[0].status, 408, rs)
        finally:
            s.close()
        stop_ok(self, c)
        self.assertEqual(c.records("events"), [])

    def test_an_idle_keep_alive_connection_is_closed_without_an_answer(self):
        c = start_for(self, self.SETTINGS)
        s = connect(c)
        try:
            s.sendall(b"GET /collect?eid=k&vid=v HTTP/1.1\r\nHost: x\r\n\r\n")
            rs, _ = read_responses(s, 1)
            self.assertEqual(rs[0].status, 204)
            rest = wait_closed(s)
            self.assertEqual(rest, b"")
        finally:
            s.close()
        self.assertEqual(c.metric("clickd_http_idle_timeouts_total"), 1)
        self.assertEqual(c.metric('clickd_http_requests_total{status="408"}'), 0)
        stop_ok(self, c)
        self.assertEqual(c.records("dead_letters"), [])

    def test_a_request_trickled_slower_than_the_timeout_allows_gets_408(self):
        # Regression (slowloris): the timer used to restart on every read, so a client
        # sending a byte now and then held a half-sent request open for ever.
        c = start_for(self, {"http.idle_timeout_ms": "400"})
        s = connect(c)
        try:
            s.sendall(b"GET /collect?eid=trickle&vid=v HTTP/1.1\r\nHost: x\r\n")
            deadline = time.monotonic() + scaled(20)
            got = b""
            while b"\r\n\r\n" not in got:
                self.assertLess(time.monotonic(), deadline,
                                "no answer while the request trickled in for %.0f s"
                                % scaled(20))
                try:
                    s.sendall(b"X")
                except OSError:
                    pass  # closed after the answer: read it below
                s.settimeout(0.1)
                try:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
                except socket.timeout:
                    pass
                except ConnectionResetError:
                    break
            rs, _ = parse_responses(got)
            self.assertEqual([r.status for r in rs], [408], got)
        finally:
            s.close()
        stop_ok(self, c)


class MaxConnections(unittest.TestCase):
    def test_connections_past_max_connections_get_503_with_retry_after(self):
        # One ingest thread: with several, each has its own limit (see the next test).
        c = start_for(self, {"http.max_connections": "2", "pipeline.ingest_threads": "1"})
        held = []
        try:
            for i in range(2):
                conn = http.client.HTTPConnection("127.0.0.1", c.http_port, timeout=10)
                conn.request("GET", "/collect?eid=held-%d&vid=v" % i)
                r = conn.getresponse()
                r.read()
                self.assertEqual(r.status, 204)
                held.append(conn)
            # a client that sends its request at once, as real ones do
            s = connect(c)
            try:
                s.sendall(b"GET /collect?eid=refused&vid=v HTTP/1.1\r\nHost: x\r\n\r\n")
                rs, _ = read_responses(s, 1)
                self.assertEqual(rs[0].status, 503, rs)
                self.assertEqual(rs[0].header("retry-after"), "1")
                self.assertEqual(rs[0].header("connection"), "close")
                wait_closed(s)
            finally:
                s.close()
            self.assertEqual(c.metric("clickd_http_connections_refused_total"), 1)
            self.assertEqual(c.metric('clickd_http_requests_total{status="503"}'), 1)
            # a slot freed is a slot taken again
            held.pop().close()

            def served():
                s2 = connect(c)
                try:
                    s2.sendall(b"GET /collect?eid=again&vid=v HTTP/1.1\r\nHost: x\r\n"
                               b"Connection: close\r\n\r\n")
                    rs2, _ = read_responses(s2, 1)
                    return rs2[0].status == 204
                finally:
                    s2.close()
            wait_for(served, 10, "a connection to be served after one closed")
        finally:
            for conn in held:
                conn.close()
        stop_ok(self, c)
        ids = sorted(e["event_id"] for e in c.records("events"))
        self.assertEqual(ids, ["again", "held-0", "held-1"])
        # refusing is our trouble, not bad data: the tracker retries, nothing is dead-lettered
        self.assertEqual(c.records("dead_letters"), [])

    # Regression: every ingest thread has its own HTTP server; they share one budget of
    # http.max_connections (it was N x max_connections with N threads).
    def test_max_connections_holds_across_ingest_threads(self):
        c = start_for(self, {"http.max_connections": "2", "pipeline.ingest_threads": "2"})
        socks = []
        try:
            # 12 connections: the kernel spreads them over both threads (all on one thread
            # has a chance of 1 in 2048), so a per-thread limit lets 4 in.
            for i in range(12):
                s = connect(c)
                socks.append(s)
                s.sendall(b"GET /collect?eid=mc-%d&vid=v HTTP/1.1\r\nHost: x\r\n\r\n" % i)
            statuses = []
            for s in socks:
                rs, _ = read_responses(s, 1)
                statuses.append(rs[0].status)
        finally:
            for s in socks:
                s.close()
        stop_ok(self, c)
        self.assertEqual(sorted(statuses), [204] * 2 + [503] * 10, statuses)


if __name__ == "__main__":
    unittest.main()
