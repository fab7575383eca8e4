"""Attribution and rollups on the real binary with the file sink (so the sanitizer builds
run it too): the affiliate / email / paid-search story of attribution_story.py gives one
attribution record crediting all three touchpoints as each model says, and the rollup
rows of the conversion's minute hold its revenue, written at the stop."""

import unittest
import uuid

import attribution_story as story
import clickd_harness as h


class AttributionFileTest(unittest.TestCase):
    def test_a_conversion_is_credited_to_its_three_touchpoints_and_rolled_up(self):
        c = h.start_for(self, story.SETTINGS)
        run = uuid.uuid4().hex[:8]
        v1, v2 = story.send(self, c, run)
        h.wait_for(lambda: c.metric("clickd_attribution_records_total") == 1, 10,
                   "the attribution record")
        self.assertEqual(c.metric("clickd_attribution_conversions_without_path_total"), 0)
        h.stop_ok(self, c)

        events = c.records("events")
        self.assertEqual(len(events), 5)
        story.check_events(self, events, run)
        attribution = c.records("attribution")
        self.assertEqual(len(attribution), 1, attribution)
        # The file sink has no keys: the key is what the Kafka test checks.
        story.check_attribution(self, story.APP + "\x1f" + v2, attribution[0], events, run,
                                v1, v2)
        story.check_rollups(self, c.records("rollups"), attribution[0])
        touchpoints = c.records("touchpoints")
        self.assertEqual(sorted(t["channel"] for t in touchpoints), sorted(story.CHANNELS))
        affiliate = [t for t in touchpoints if t["channel"] == "Affiliates"][0]
        self.assertEqual(affiliate["affiliate_id"], story.AFFILIATE)
        self.assertEqual(affiliate["events"], 2)

    def test_named_conversions_count_and_a_conversion_without_a_visitor_has_no_path(self):
        settings = dict(story.SETTINGS)
        settings["attribution.conversion_events"] = "signup,purchase"
        c = h.start_for(self, settings)
        ok = [
            story.beacon(eid="n-1", aid="shop", vid="v9",
                         url="https://shop.example/?utm_source=fb&utm_medium=paid_social"),
            story.beacon(eid="n-2", aid="shop", vid="v9", e="ev", en="signup"),
            story.beacon(eid="n-3", aid="shop", vid="v9", e="ev", en="add_to_cart"),
        ]
        for b in ok:
            self.assertEqual(c.get("/collect?" + b).status, 204)
        # No visitor (GPC, no vid): the conversion is written, with no touchpoint.
        r = c.get("/collect?" + story.beacon(eid="n-4", aid="shop", e="cv", rev="5"),
                  headers={"Sec-GPC": "1"})
        self.assertEqual(r.status, 204)
        h.wait_for(lambda: c.metric("clickd_attribution_records_total") == 2, 10,
                   "two attribution records")
        self.assertEqual(c.metric("clickd_attribution_conversions_without_path_total"), 1)
        h.stop_ok(self, c)
        records = {a["conversion_event_id"]: a for a in c.records("attribution")}
        self.assertEqual(sorted(records), ["n-2", "n-4"])
        self.assertEqual(records["n-2"]["name"], "signup")
        self.assertEqual([t["channel"] for t in records["n-2"]["touchpoints"]], ["Paid Social"])
        self.assertEqual(records["n-2"]["touchpoints"][0]["credit"]["time_decay"], 1)
        self.assertNotIn("revenue", records["n-2"]["touchpoints"][0])
        self.assertEqual(records["n-4"]["touchpoints"], [])
        self.assertEqual(records["n-4"]["revenue"], 5)
        rows = c.records("rollups")
        self.assertEqual(sum(r["conversions"] for r in rows), 2)
        self.assertEqual(sum(r["revenue"] for r in rows), 5)


if __name__ == "__main__":
    unittest.main()
