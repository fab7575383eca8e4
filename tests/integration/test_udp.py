"""UDP ingest on the real binary: one or more beacons per datagram (query-string and JSON
lines), bad lines dead-lettered while the good ones of the same datagram are kept, and
datagrams over udp.max_datagram_bytes dead-lettered and counted."""

import json
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


if __name__ == "__main__":
    unittest.main()
