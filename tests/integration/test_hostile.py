"""Hostile input on the real binary: the header count limit, limits.max_string_bytes, the text
rules (limits.invalid_utf8, limits.control_chars: refused or replaced with U+FFFD), no control
character in any record written, clients that trickle or never read, and an Origin that must
not be echoed. Each refusal answers its status, writes a dead letter with its reason and
counts a metric (see test_http_limits.py for the older limits)."""

import os
import socket
import time
import unittest

from clickd_harness import (parse_responses, read_responses, rss_bytes, scaled, start_for,
                            stop_ok, wait_closed, wait_for)

FFFD = "\ufffd"
# Every control character: C0, DEL and C1 (the definition of src/text.c).
CONTROLS = set(chr(c) for c in range(0x20)) | {"\x7f"} | set(chr(c) for c in range(0x80, 0xa0))


def connect(c):
    s = socket.create_connection(("127.0.0.1", c.http_port), timeout=scaled(10))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def one_request(c, raw):
    """Sends raw on a fresh connection; returns the first answer."""
    s = connect(c)
    try:
        s.sendall(raw)
        rs, _ = read_responses(s, 1)
        return rs[0]
    finally:
        s.close()


def pct(data):
    return "".join("%%%02X" % b for b in data)


def strings_in(value, path=""):
    """Every (path, string) in a parsed JSON value, keys included."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield path + "/" + k + "(key)", k
            yield from strings_in(v, path + "/" + k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from strings_in(v, "%s[%d]" % (path, i))


def rss_kib(pid):
    return rss_bytes(pid) // 1024


class HeaderCount(unittest.TestCase):
    def test_header_fields_past_max_headers_are_431_with_a_dead_letter_and_a_metric(self):
        c = start_for(self, {"http.max_headers": "8"})
        ok = (b"GET /collect?eid=h8&vid=v HTTP/1.1\r\nHost: x\r\n" +
              b"".join(b"X-H%d: v\r\n" % i for i in range(7)) + b"\r\n")
        self.assertEqual(one_request(c, ok).status, 204)
        bad = (b"GET /collect?eid=h9&vid=v HTTP/1.1\r\nHost: x\r\n" +
               b"".join(b"X-H%d: v\r\n" % i for i in range(8)) + b"\r\n")
        s = connect(c)
        try:
            s.sendall(bad)
            rs, _ = read_responses(s, 1)
            self.assertEqual(rs[0].status, 431, rs)
            self.assertIn(b"http.max_headers", rs[0].body)
            self.assertEqual(rs[0].header("connection"), "close")
            wait_closed(s)
        finally:
            s.close()
        self.assertEqual(c.metric('clickd_http_requests_total{status="431"}'), 1)
        self.assertEqual(c.metric('clickd_dead_letters_total{reason="too_large"}'), 1)
        stop_ok(self, c)
        (dl,) = c.records("dead_letters")
        self.assertIn("http.max_headers", dl["reason"])
        self.assertTrue(dl["payload"].startswith("/collect?eid=h9"), dl)
        self.assertEqual([e["event_id"] for e in c.records("events")], ["h8"])

    def test_the_default_max_headers_is_100(self):
        c = start_for(self)
        head = b"GET /collect?eid=d&vid=v HTTP/1.1\r\nHost: x\r\n"
        self.assertEqual(one_request(c, head + b"".join(
            b"X-%d: v\r\n" % i for i in range(99)) + b"\r\n").status, 204)
        self.assertEqual(one_request(c, head + b"".join(
            b"X-%d: v\r\n" % i for i in range(100)) + b"\r\n").status, 431)
        stop_ok(self, c)


class StringLength(unittest.TestCase):
    def test_a_field_over_max_string_bytes_is_dead_lettered_and_a_user_agent_cut(self):
        c = start_for(self, {"limits.max_string_bytes": "64"})
        r = c.get("/collect?eid=long&en=" + "n" * 65)
        self.assertEqual(r.status, 400, r)
        self.assertIn(b"field en: longer than limits.max_string_bytes (64)", r.body)
        r = c.post("/collect", '[{"eid":"j1","en":"%s"},{"eid":"j2"}]' % ("n" * 65),
                   "application/json")
        self.assertEqual(r.status, 204, r)  # the good element is taken
        r = c.get("/collect?eid=fits&en=" + "n" * 64, headers={"User-Agent": "u" * 100})
        self.assertEqual(r.status, 204, r)
        self.assertEqual(c.metric('clickd_dead_letters_total{reason="too_large"}'), 2)
        stop_ok(self, c)
        events = {e["event_id"]: e for e in c.records("events")}
        self.assertEqual(sorted(events), ["fits", "j2"])
        self.assertEqual(events["fits"]["name"], "n" * 64)
        self.assertEqual(events["fits"]["user_agent"], "u" * 64)
        reasons = [d["reason"] for d in c.records("dead_letters")]
        self.assertEqual(len(reasons), 2)
        for reason in reasons:
            self.assertIn("limits.max_string_bytes", reason)


class TextRules(unittest.TestCase):
    # Byte strings that are not UTF-8, and what browsers (and Python) decode them to.
    NOT_UTF8 = [b"\xff", b"a\xc3", b"\xe2\x82A", b"\xc0\xaf", b"\xed\xa0\x80",
                b"\xf4\x90\x80\x80", b"\xf0\x9f\x98", b"ok\x80\xbfok", b"\xe0\x80\xaf"]

    def test_invalid_utf8_replaced_as_browsers_decode_it(self):
        c = start_for(self, {"limits.invalid_utf8": "replace"})
        for i, raw in enumerate(self.NOT_UTF8):
            r = c.get("/collect?eid=u%d&vid=v&en=%s" % (i, pct(raw)))
            self.assertEqual(r.status, 204, (raw, r))
        body = ("eid=text-1&en=%s\n" % pct(b"\xfe")).encode()
        self.assertEqual(c.post("/collect", body, "text/plain").status, 204)
        self.assertEqual(c.post("/collect", b'{"eid":"json-1","en":"a\xffb\\ud800"}',
                                "application/json").status, 204)
        self.assertEqual(c.metric("clickd_beacons_repaired_total"), len(self.NOT_UTF8) + 2)
        self.assertEqual(c.metric('clickd_dead_letters_total{reason="not_utf8"}'), 0)
        stop_ok(self, c)
        events = {e["event_id"]: e for e in c.records("events")}
        for i, raw in enumerate(self.NOT_UTF8):
            self.assertEqual(events["u%d" % i]["name"], raw.decode("utf-8", "replace"), raw)
        self.assertEqual(events["text-1"]["name"], FFFD)
        self.assertEqual(events["json-1"]["name"], "a" + FFFD + "b" + FFFD)

    def test_control_characters_are_replaced_by_default(self):
        c = start_for(self)
        # http-parser lets a control character through as the first byte of a header
        # value (it checks the others): the user agent gets repaired.
        r = c.get("/collect?eid=c1&vid=v&en=a%0Ab%1B%5B31m%00%7F%C2%85z",
                  headers={"User-Agent": b"\x01Mozilla/5.0\xff"})
        self.assertEqual(r.status, 204, r)
        r = c.post("/collect", b'{"eid":"c2","vid":"v","en":"x\\ty\\u0000\\u009f"}',
                   "application/json")
        self.assertEqual(r.status, 204, r)
        c.udp("eid=c3&vid=v&en=%0D%0Aforged: line")
        wait_for(lambda: c.metric("clickd_events_in_total") >= 3, 10, "the UDP beacon")
        self.assertEqual(c.metric("clickd_beacons_repaired_total"), 3)
        stop_ok(self, c)
        events = {e["event_id"]: e for e in c.records("events")}
        self.assertEqual(events["c1"]["name"], "a%sb%s[31m%s%s%sz" % ((FFFD,) * 5))
        self.assertEqual(events["c1"]["user_agent"], "%sMozilla/5.0%s" % (FFFD, FFFD))
        self.assertEqual(events["c2"]["name"], "x%sy%s%s" % ((FFFD,) * 3))
        self.assertEqual(events["c3"]["name"], "%s%sforged: line" % (FFFD, FFFD))
        self.assertEqual(c.records("dead_letters"), [])

    def test_control_characters_refused_when_configured(self):
        c = start_for(self, {"limits.control_chars": "reject"})
        r = c.get("/collect?eid=r1&vid=v&en=a%0Ab")
        self.assertEqual(r.status, 400, r)
        self.assertIn(b"control character", r.body)
        r = c.post("/collect", b'[{"eid":"r2","en":"\\u001b[2J"},{"eid":"r3","vid":"v"}]',
                   "application/json")
        self.assertEqual(r.status, 204, r)
        # the user agent is not the beacon's data: repaired, never a reason to refuse
        r = c.get("/collect?eid=r4&vid=v", headers={"User-Agent": b"\x01ab"})
        self.assertEqual(r.status, 204, r)
        self.assertEqual(c.metric('clickd_dead_letters_total{reason="malformed"}'), 2)
        stop_ok(self, c)
        events = {e["event_id"]: e for e in c.records("events")}
        self.assertEqual(sorted(events), ["r3", "r4"])
        self.assertEqual(events["r4"]["user_agent"], FFFD + "ab")
        dls = c.records("dead_letters")
        self.assertEqual(len(dls), 2)
        for d in dls:
            self.assertIn("control character", d["reason"])
        # The payloads show what came in, but an ESC never reaches whoever prints them.
        self.assertEqual(sorted(d["payload"] for d in dls),
                         sorted(["eid=r1&vid=v&en=a%0Ab", '{"eid":"r2","en":"\\u001b[2J"}']))


class NoControlCharacterInAnyRecord(unittest.TestCase):
    def test_a_barrage_of_hostile_beacons_leaves_no_control_character_in_the_output(self):
        c = start_for(self, {"limits.invalid_utf8": "replace", "http.trusted_proxies":
                             "127.0.0.1/32", "limits.max_string_bytes": "256"})
        nasty = "".join(chr(i) for i in range(0x20)) + "\x7f\x80\x85\x9f" + "\u2028"
        enc = "".join("%%%02X" % b for b in nasty.encode())
        raw_bytes = bytes(range(256))
        requests = [
            "/collect?eid=b1&vid=v%s&en=%s&url=https%%3A%%2F%%2Fs.example%%2F%%3Futm_source%%3D%s"
            % (enc, enc, enc.replace("%", "%25")),
            "/collect?eid=b2&vid=v&ref=https%%3A%%2F%%2Fr%s.example%%2F&uid=%s" % (enc, enc),
            "/pixel.gif?eid=b3&aid=%s&e=cv&rev=1&cur=EUR&en=%s"
            % (enc, pct(bytes(range(0x80, 0xc0)))),
        ]
        for path in requests:
            r = c.get(path, headers={"User-Agent": b"\x1bUA\xc2\x85\xff",
                                     "X-Forwarded-For": "1.2.3.4"})
            self.assertIn(r.status, (200, 204), (path, r))
        json_body = ('[{"eid":"b4","vid":"v","en":"%s","utm_source":"\\u0000\\ud800x"},'
                     '{"eid":"b5","url":"https://s.example/?gclid=%s"},{"eid":"b6\\u001b"}]'
                     % ("".join("\\u%04x" % ord(ch) for ch in nasty), enc))
        self.assertEqual(c.post("/collect", json_body, "application/json").status, 204)
        lines = b"eid=b7&vid=v&en=" + raw_bytes[1:10] + b"\r\neid=b8&vid=v&en=%00\x1b\n"
        self.assertEqual(c.post("/collect", lines, "text/plain").status, 204)
        c.udp(b"eid=b9&vid=v&en=" + bytes(b for b in range(1, 32) if b not in (10, 13)) + b"\n" +
              b'{"eid":"b10","vid":"v","en":"\\u0007\xff"}')
        # refused ones too: their dead letters carry the raw payload
        c.post("/collect", b'{"eid":"x1","en":"\x1b[31m' + b"y" * 300 + b'"}', "application/json")
        c.post("/collect", b"\x00\x1b[2J\x07" * 10, "application/json")
        wait_for(lambda: c.metric("clickd_events_in_total") >= 10, 10, "every beacon")
        stop_ok(self, c)
        events = c.records("events")
        self.assertEqual(sorted(e["event_id"] for e in events),
                         sorted(["b1", "b2", "b3", "b4", "b5", "b6" + FFFD, "b7", "b8", "b9",
                                 "b10"]))
        checked = 0
        for stream in ("events", "touchpoints", "attribution", "rollups"):
            for rec in c.records(stream):
                for path, s in strings_in(rec):
                    checked += 1
                    bad = CONTROLS & set(s)
                    self.assertFalse(bad, "%s %s holds %r: %r" % (stream, path, bad, s))
        self.assertGreater(checked, 100)
        dls = c.records("dead_letters")
        self.assertEqual(len(dls), 2, dls)
        for rec in dls:
            for path, s in strings_in(rec):
                bad = (CONTROLS - {"\t", "\n", "\r"}) & set(s)
                self.assertFalse(bad, "dead letter %s holds %r: %r" % (path, bad, s))


class OriginEcho(unittest.TestCase):
    def test_an_origin_with_a_control_character_is_never_echoed(self):
        # Regression (fuzz_http_conn): http-parser does not check the first byte of a header
        # value, so a control character can start one, and with http.cors_origins=* the
        # Origin was echoed as it came, control character and all.
        c = start_for(self, {"http.cors_origins": "*"})
        r = one_request(c, b"GET /collect?eid=o1&vid=v HTTP/1.1\r\nHost: x\r\n"
                           b"Origin: \x02https://a.example\r\n\r\n")
        self.assertEqual(r.status, 204, r)
        self.assertIsNone(r.header("access-control-allow-origin"), r)
        r = one_request(c, b"GET /collect?eid=o2&vid=v HTTP/1.1\r\nHost: x\r\n"
                           b"Origin: https://a.example\r\n\r\n")
        self.assertEqual(r.header("access-control-allow-origin"), "https://a.example")
        stop_ok(self, c)


class SlowClients(unittest.TestCase):
    def test_headers_dribbled_one_byte_a_second_are_cut_with_408(self):
        c = start_for(self, {"http.idle_timeout_ms": "2500"})
        s = connect(c)
        got = b""
        try:
            s.sendall(b"GET /collect?eid=drip&vid=v HTTP/1.1\r\nHost: x\r\n")
            pad = b"X-Drip: " + b"d" * 200  # 200 s at a byte a second: never complete
            deadline = time.monotonic() + scaled(60)
            for byte in pad:
                self.assertLess(time.monotonic(), deadline, "no 408 while dribbling")
                try:
                    s.sendall(bytes([byte]))
                except OSError:
                    break  # closed after the answer
                s.settimeout(1.0)
                try:
                    chunk = s.recv(4096)
                except socket.timeout:
                    continue
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                got += chunk
                if b"\r\n\r\n" in got:
                    break
            got += wait_closed(s)
        finally:
            s.close()
        rs, _ = parse_responses(got)
        self.assertEqual([r.status for r in rs], [408], got)
        self.assertEqual(rs[0].header("connection"), "close")
        self.assertEqual(c.metric("clickd_http_idle_timeouts_total"), 1)
        stop_ok(self, c)
        (dl,) = c.records("dead_letters")
        self.assertIn("http.idle_timeout_ms", dl["reason"])
        self.assertEqual(c.records("events"), [])

    def test_a_client_that_never_reads_is_closed_and_memory_stays_bounded(self):
        c = start_for(self, {"http.idle_timeout_ms": "1000", "pipeline.ingest_threads": "1"})
        rss_before = rss_kib(c.proc.pid)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
        s.connect(("127.0.0.1", c.http_port))
        s.setblocking(False)
        req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        chunk = req * 2000
        sent, quiet_since, rss_peak = 0, None, rss_before
        try:
            # Pipeline requests without reading a single answer, until clickd stops taking
            # them (its answers fill the socket buffers and 1 MiB of its own, then it stops
            # reading) or the connection ends; at most 64 MiB of requests.
            while sent < 64 << 20:
                try:
                    sent += s.send(chunk)
                    quiet_since = None
                except BlockingIOError:
                    # sampled while clickd holds the answers it could not send
                    rss_peak = max(rss_peak, rss_kib(c.proc.pid))
                    if quiet_since is None:
                        quiet_since = time.monotonic()
                    elif time.monotonic() - quiet_since > 2:
                        break
                    time.sleep(0.05)
                except (BrokenPipeError, ConnectionResetError):
                    break
            self.assertLess(sent, 64 << 20, "clickd never stopped reading")
            wait_for(lambda: c.metric("clickd_http_slow_readers_total") == 1, 30,
                     "clickd to close the connection of a client that does not read")
            # others are still served
            self.assertEqual(c.get("/collect?eid=other&vid=v").status, 204)
            s.setblocking(True)
            wait_closed(s, timeout=30)
        finally:
            s.close()
        self.assertEqual(c.metric("clickd_http_connections_total"), 2)
        stop_ok(self, c)
        self.assertEqual([e["event_id"] for e in c.records("events")], ["other"])
        # The answers waiting for that client were bounded (1 MiB plus one read's worth,
        # a few MiB), not the megabytes of requests it sent.
        print("slow reader: %d KiB of requests sent, RSS %d -> %d KiB"
              % (sent >> 10, rss_before, rss_peak))
        self.assertLess(rss_peak - rss_before, 64 << 10, "RSS grew by %d KiB"
                        % (rss_peak - rss_before))


if __name__ == "__main__":
    unittest.main()
