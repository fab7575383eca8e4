"""UDP ingest on the real binary: one or more beacons per datagram (query-string and JSON
lines), bad lines dead-lettered while the good ones of the same datagram are kept, and
datagrams over udp.max_datagram_bytes dead-lettered and counted. Back-pressure: with a
ring far smaller than the traffic, datagrams wait (the kernel's buffer holds the burst)
instead of being dropped, a retried datagram is dead-lettered once, the kernel's own drops
are counted, and shutdown takes what waits or counts what it gives up."""

import json
import re
import signal
import socket
import unittest

from clickd_harness import start_for, stop_ok, wait_for


def ids(records):
    out = [r["event_id"] for r in records]
    assert len(out) == len(set(out)), "duplicate events: %r" % out
    return sorted(out)


class Udp(unittest.TestCase):
    def send_and_wait(self, c, datagrams):
        before = c.metric("clickd_udp_datagrams_total")
        for d in datagrams:
            c.udp(d)
        wait_for(lambda: c.metric("clickd_udp_datagrams_total") >= before + len(datagrams), 10,
                 "clickd to receive %d datagrams" % len(datagrams))

    def test_one_beacon_per_datagram(self):
        c = start_for(self)
        self.send_and_wait(c, ["eid=u-1&aid=shop&vid=v1&url=https%3A%2F%2Fshop.example%2F"
                               "%3Futm_source%3Dnl%26utm_medium%3Demail",
                               '{"eid":"u-2","vid":"v2","e":"cv","rev":"10.5","cur":"USD"}'])
        self.assertEqual(c.metric("clickd_events_in_total"), 2)
        stop_ok(self, c)
        ev = {r["event_id"]: r for r in c.records("events")}
        self.assertEqual(sorted(ev), ["u-1", "u-2"])
        self.assertEqual((ev["u-1"]["source"], ev["u-1"]["medium"]), ("nl", "email"))
        self.assertEqual(ev["u-1"]["app_id"], "shop")
        self.assertEqual(ev["u-2"]["type"], "conversion")
        self.assertEqual(ev["u-2"]["revenue"], 10.5)
        for e in ev.values():
            self.assertEqual(e["protocol"], "native")
            # the datagram's source is a server, not the visitor: no IP is recorded
            self.assertNotIn("ip", e)

    def test_several_beacons_per_datagram_query_and_json_lines(self):
        c = start_for(self)
        lines = ["eid=m-1&vid=v", json.dumps({"eid": "m-2", "vid": "v"}), "",
                 "eid=m-3&vid=v\r", json.dumps([{"eid": "m-4"}, {"eid": "m-5"}])]
        self.send_and_wait(c, ["\n".join(lines) + "\n"])
        stop_ok(self, c)
        self.assertEqual(ids(c.records("events")), ["m-1", "m-2", "m-3", "m-4", "m-5"])
        self.assertEqual(c.records("dead_letters"), [])

    def test_a_beacon_without_vid_gets_no_minted_visitor(self):
        c = start_for(self)
        self.send_and_wait(c, ["eid=nv-1"])
        stop_ok(self, c)
        (e,) = c.records("events")
        self.assertNotIn("visitor_id", e)

    def test_a_bad_json_line_is_dead_lettered_under_its_own_reason_class(self):
        # Regression: the decoder's code was replaced by "malformed" for JSON lines.
        c = start_for(self)
        self.send_and_wait(c, [b'{"eid":"bad-utf8","en":"a\xffb"}\n'])
        wait_for(lambda: c.metric('clickd_dead_letters_total{reason="not_utf8"}') == 1, 10,
                 "a not_utf8 dead letter")
        self.assertEqual(c.metric('clickd_dead_letters_total{reason="malformed"}'), 0)
        stop_ok(self, c)
        (d,) = c.records("dead_letters")
        self.assertIn("UTF-8", d["reason"])

    def test_a_bad_array_element_is_dead_lettered_under_its_own_reason_class(self):
        c = start_for(self)
        self.send_and_wait(c, [b'[{"eid":"arr-ok","vid":"v"},{"eid":"arr-bad","en":"a\xffb"}]\n'])
        wait_for(lambda: c.metric('clickd_dead_letters_total{reason="not_utf8"}') == 1, 10,
                 "a not_utf8 dead letter")
        stop_ok(self, c)
        self.assertEqual(ids(c.records("events")), ["arr-ok"])
        (d,) = c.records("dead_letters")
        self.assertIn("arr-bad", d["payload"])

    def test_a_bad_line_is_dead_lettered_and_the_good_ones_kept(self):
        c = start_for(self)
        self.send_and_wait(c, ["eid=g-1&vid=v\neid=bad&e=nope\n{\"eid\":\"g-2\"}\n{oops\n"
                               "eid=%FF\neid=g-3"])
        self.assertEqual(c.metric("clickd_events_in_total"), 3)
        self.assertEqual(c.metric('clickd_dead_letters_total{reason="malformed"}'), 2)
        self.assertEqual(c.metric('clickd_dead_letters_total{reason="not_utf8"}'), 1)
        stop_ok(self, c)
        self.assertEqual(ids(c.records("events")), ["g-1", "g-2", "g-3"])
        dl = c.records("dead_letters")
        self.assertEqual(sorted(d["payload"] for d in dl),
                         sorted(["eid=bad&e=nope", "{oops", "eid=%FF"]))
        for d in dl:
            self.assertEqual(d["protocol"], "native")
            self.assertEqual(d["peer"], "127.0.0.1")

    def test_a_datagram_over_max_datagram_bytes_is_dead_lettered_and_counted(self):
        c = start_for(self, {"udp.max_datagram_bytes": "512"})
        big = "\n".join("eid=big-%03d&vid=v&pad=%s" % (i, "x" * 20) for i in range(30))
        self.assertGreater(len(big), 512)
        exact = "eid=ok-1&vid=v&pad=" + "y" * (512 - len("eid=ok-1&vid=v&pad="))
        self.assertEqual(len(exact), 512)
        self.send_and_wait(c, [big, exact])
        self.assertEqual(c.metric("clickd_udp_truncated_total"), 1)
        self.assertEqual(c.metric('clickd_dead_letters_total{reason="too_large"}'), 1)
        self.assertEqual(c.metric("clickd_bytes_in_total"), len(big) + len(exact))
        stop_ok(self, c)
        self.assertEqual(ids(c.records("events")), ["ok-1"])
        (dl,) = c.records("dead_letters")
        self.assertIn("udp.max_datagram_bytes", dl["reason"])
        self.assertTrue(dl["payload"].startswith("eid=big-000"), dl)

    def test_datagrams_still_queued_at_stop_are_taken(self):
        c = start_for(self)
        for i in range(50):
            c.udp("eid=q-%d&vid=v" % i)
        # no wait: whatever the kernel holds when TERM comes is read before the exit
        stop_ok(self, c)
        self.assertEqual(ids(c.records("events")), sorted("q-%d" % i for i in range(50)))


# A ring of 16 slots, one shard and one ingest thread: a datagram of more beacons than that
# can never go in with one pass, so back-pressure is certain, not a matter of timing.
TINY_RING = {"pipeline.ring_slots": "16", "pipeline.shards": "1",
             "pipeline.ingest_threads": "1"}
BIG = 40  # beacons in a datagram larger than the ring


def query_lines(prefix, n):
    return ["eid=%s-%d&vid=v%d" % (prefix, i, i % 7) for i in range(n)]


class UdpBackpressure(unittest.TestCase):
    """A full ring pauses reading; nothing is dropped while the kernel's buffer has room."""

    def send_paced(self, c, datagrams, burst=100):
        """Sends in bursts, each once clickd has read the one before: the kernel's receive
        buffer never holds more than one burst (100 small datagrams, far below the
        smallest udp.recv_buffer_bytes), so it cannot overflow, however slow clickd is."""
        base = c.metric("clickd_udp_datagrams_total")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(0, len(datagrams), burst):
                for d in datagrams[i:i + burst]:
                    s.sendto(d.encode(), ("127.0.0.1", c.udp_port))
                want = base + min(i + burst, len(datagrams))
                wait_for(lambda: c.metric("clickd_udp_datagrams_total") >= want, 30,
                         "clickd to read %d datagrams" % want)

    def test_a_burst_far_larger_than_the_ring_arrives_whole_and_bad_lines_once(self):
        c = start_for(self, TINY_RING)
        datagrams, expected, bad = [], [], 0
        for k in range(400):
            lines = query_lines("b%d" % k, BIG if k % 50 == 0 else 5)
            expected += [l.split("&")[0][4:] for l in lines]
            if k % 10 == 3:
                lines.insert(2, "eid=bad-%d&e=nope" % k)  # a bad line amid good ones
                bad += 1
            datagrams.append("\n".join(lines))
        self.send_paced(c, datagrams)
        wait_for(lambda: c.metric("clickd_events_in_total") == len(expected), 30,
                 "every beacon to be in")
        m = c.metrics()
        self.assertGreaterEqual(m["clickd_udp_backpressure_total"], 1)
        self.assertEqual(m["clickd_udp_drops_total"], 0)
        self.assertEqual(m["clickd_udp_kernel_drops_total"], 0)
        self.assertEqual(m['clickd_dead_letters_total{reason="malformed"}'], bad)
        stop_ok(self, c)
        self.assertEqual(ids(c.records("events")), sorted(expected))
        dl = c.records("dead_letters")
        self.assertEqual(sorted(d["payload"] for d in dl),
                         sorted("eid=bad-%d&e=nope" % k for k in range(400) if k % 10 == 3))

    def test_a_retried_datagram_dead_letters_its_bad_beacons_once(self):
        # More good beacons than the ring holds: the datagram is necessarily retried.
        c = start_for(self, TINY_RING)
        lines = (query_lines("r1", 20) + ["eid=bad-line&e=nope"] + query_lines("r2", 10) +
                 ['[{"eid":"r3-ok","vid":"v"},{"eid":"r3-bad","ts":"soon"}]'] +
                 query_lines("r4", 15) + ["{oops"])
        self.send_paced(c, ["\n".join(lines)])
        wait_for(lambda: c.metric("clickd_events_in_total") == 46, 30, "46 beacons in")
        self.assertGreaterEqual(c.metric("clickd_udp_backpressure_total"), 1)
        self.assertEqual(c.metric('clickd_dead_letters_total{reason="malformed"}'), 3)
        stop_ok(self, c)
        self.assertEqual(len(ids(c.records("events"))), 46)
        self.assertIn("r3-ok", ids(c.records("events")))
        payloads = sorted(d["payload"] for d in c.records("dead_letters"))
        self.assertEqual(payloads, sorted(["eid=bad-line&e=nope", '{"eid":"r3-bad","ts":"soon"}',
                                           "{oops"]))

    def test_kernel_drops_are_counted_and_everything_read_is_kept(self):
        # clickd is stopped (SIGSTOP) while 2000 datagrams of 1 KB arrive: 2 MB cannot fit
        # in a 64 KiB receive buffer, so the kernel must drop some, and counts them.
        c = start_for(self, dict(TINY_RING, **{"udp.recv_buffer_bytes": "65536"}))
        sent = 2000
        c.proc.send_signal(signal.SIGSTOP)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for i in range(sent):
                    s.sendto(("eid=k-%d&vid=v&pad=%s" % (i, "x" * 1000)).encode(),
                             ("127.0.0.1", c.udp_port))
        finally:
            c.proc.send_signal(signal.SIGCONT)

        def accounted():
            m = c.metrics()
            return (m["clickd_udp_datagrams_total"] + m["clickd_udp_kernel_drops_total"] ==
                    sent and m["clickd_events_in_total"] == m["clickd_udp_datagrams_total"])
        wait_for(accounted, 30, "every datagram read or counted as a kernel drop")
        m = c.metrics()
        self.assertGreater(m["clickd_udp_kernel_drops_total"], 0)
        self.assertEqual(m["clickd_udp_drops_total"], 0)
        stop_ok(self, c)
        self.assertEqual(len(ids(c.records("events"))), m["clickd_udp_datagrams_total"])

    def test_datagrams_waiting_for_the_ring_at_stop_are_taken(self):
        c = start_for(self, TINY_RING)
        expected = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for k in range(30):
                lines = query_lines("s%d" % k, BIG)
                expected += [l.split("&")[0][4:] for l in lines]
                s.sendto("\n".join(lines).encode(), ("127.0.0.1", c.udp_port))
        # no wait: what is held or still in the kernel when TERM comes goes in before exit
        stop_ok(self, c)
        self.assertEqual(ids(c.records("events")), sorted(expected))
        self.assertNotIn("beacons dropped", c.log())

    def test_what_shutdown_gives_up_on_is_counted(self):
        # With no time to wait at shutdown, each beacon is either written or counted in
        # the log line that gives it up: none vanishes and none is written twice.
        c = start_for(self, dict(TINY_RING, **{"shutdown.drain_timeout_ms": "0"}))
        sent = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for k in range(30):
                s.sendto("\n".join(query_lines("g%d" % k, BIG)).encode(),
                         ("127.0.0.1", c.udp_port))
                sent += BIG
        stop_ok(self, c)
        given_up = sum(int(n) for n in re.findall(r"beacons dropped\" beacons=(\d+)", c.log()))
        self.assertEqual(len(ids(c.records("events"))) + given_up, sent, c.log())


if __name__ == "__main__":
    unittest.main()
