"""The attribution story of issue 6, shared by test_attribution.py (file sink) and
test_kafka_attribution.py (real Kafka broker): a visitor arrives by an affiliate link
(Awin's awc), comes back by a newsletter email and logs in there, then logs in on a second
device (another visitor ID) after a paid search click (gclid) and buys. The expected
credits are computed here, from the times clickd itself wrote (each touchpoint's
started_at and the conversion's converted_at, cross-checked against the event records)."""

import time
from datetime import datetime, timezone
from urllib.parse import quote, urlencode

import clickd_harness as h

APP = "shop"
USER = "u-1"
REVENUE = 120.5
CURRENCY = "EUR"
HALF_LIFE_DAYS = 7
MODELS = ["first_touch", "last_touch", "last_non_direct", "linear", "time_decay",
          "position_based"]
CHANNELS = ["Affiliates", "Email", "Paid Search"]
AFFILIATE = "1001_1700000000_7f3a1b2c"

# The settings both tests need: one shard, so that the user's two devices share it (a
# user's devices are linked on their visitors' shard, see README).
SETTINGS = {
    "pipeline.ingest_threads": "1",
    "pipeline.shards": "1",
    "session.timeout_s": "60",
    "rollups.grace_s": "2",
    "attribution.half_life_days": str(HALF_LIFE_DAYS),
}


def beacon(**fields):
    return urlencode(fields, quote_via=quote)


def ms(rfc3339):
    """Milliseconds since the epoch of clickd's "2026-11-24T23:05:47.170Z"."""
    t = datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    return round(t.timestamp() * 1000)


def send(test, c, run):
    """Sends the story; returns the two visitor IDs. Sessions are cut by campaign changes
    (each landing brings another touch), a second apart so that time decay sees three
    different ages."""
    v1, v2 = "v1-" + run, "v2-" + run
    story = [
        # the affiliate link: Awin appends awc to the landing URL
        dict(eid=run + "-1", aid=APP, vid=v1, url="https://shop.example/?awc=" + AFFILIATE,
             ref="https://deals-blog.example/best-shoes"),
        dict(eid=run + "-2", aid=APP, vid=v1, url="https://shop.example/shoes",
             ref="https://shop.example/?awc=" + AFFILIATE),  # internal: same session
        # back by email, logged in
        dict(eid=run + "-3", aid=APP, vid=v1, uid=USER,
             url="https://shop.example/?utm_source=newsletter&utm_medium=email"
                 "&utm_campaign=spring"),
        # the second device, via paid search, logged in
        dict(eid=run + "-4", aid=APP, vid=v2, uid=USER,
             url="https://shop.example/?gclid=g-" + run, ref="https://www.google.com/"),
        # and the purchase
        dict(eid=run + "-5", aid=APP, vid=v2, uid=USER, e="cv", en="purchase",
             rev=str(REVENUE), cur=CURRENCY, url="https://shop.example/checkout/done",
             ref="https://shop.example/checkout"),
    ]
    for i, fields in enumerate(story):
        if i in (2, 3, 4):
            time.sleep(h.scaled(1.0))
        r = c.get("/collect?" + beacon(**fields))
        test.assertEqual(r.status, 204, r)
    return v1, v2


def expected_credits(started, converted):
    """{model: [share per touchpoint]} for three touchpoints started at `started` (ms)."""
    half_life = HALF_LIFE_DAYS * 86400000.0
    weights = [2 ** (-(converted - s) / half_life) for s in started]
    return {
        "first_touch": [1, 0, 0],
        "last_touch": [0, 0, 1],
        "last_non_direct": [0, 0, 1],
        "linear": [1 / 3] * 3,
        "time_decay": [w / sum(weights) for w in weights],
        "position_based": [0.4, 0.2, 0.4],
    }


def check_attribution(test, key, record, events, run, v1, v2):
    """The one attribution record against the story and the event records."""
    test.assertEqual(key, APP + "\x1f" + v2)
    test.assertEqual(record["conversion_event_id"], run + "-5")
    test.assertEqual(record["app_id"], APP)
    test.assertEqual(record["visitor_id"], v2)
    test.assertEqual(record["user_id"], USER)
    test.assertEqual(record["name"], "purchase")
    test.assertEqual(record["revenue"], REVENUE)
    test.assertEqual(record["currency"], CURRENCY)
    by_id = {e["event_id"]: e for e in events}
    test.assertEqual(ms(record["converted_at"]), ms(by_id[run + "-5"]["received_at"]))
    tps = record["touchpoints"]
    test.assertEqual([t["channel"] for t in tps], CHANNELS, record)
    test.assertEqual([t["visitor_id"] for t in tps], [v1, v1, v2])
    # Each touchpoint is the session its landing event opened, started when it arrived.
    for t, eid in zip(tps, [run + "-1", run + "-3", run + "-4"]):
        test.assertEqual(t["session_id"], by_id[eid]["session_id"])
        test.assertEqual(t["started_at"], by_id[eid]["received_at"])
    test.assertEqual(tps[0]["affiliate_id"], AFFILIATE)
    test.assertEqual((tps[1]["source"], tps[1]["medium"], tps[1]["campaign"]),
                     ("newsletter", "email", "spring"))
    test.assertEqual((tps[2]["source"], tps[2]["medium"], tps[2]["click_id_type"]),
                     ("google", "cpc", "gclid"))
    want = expected_credits([ms(t["started_at"]) for t in tps], ms(record["converted_at"]))
    for m in MODELS:
        test.assertEqual(list(tps[0]["credit"]), MODELS, "models in contract order")
        for i, t in enumerate(tps):
            test.assertAlmostEqual(t["credit"][m], want[m][i], delta=1e-9,
                                   msg="%s touchpoint %d" % (m, i))
            test.assertAlmostEqual(t["revenue"][m], want[m][i] * REVENUE, delta=1e-9,
                                   msg="%s revenue of touchpoint %d" % (m, i))
        test.assertAlmostEqual(sum(t["credit"][m] for t in tps), 1, delta=1e-9)
    # The story's three sessions really are three different ages.
    decay = want["time_decay"]
    test.assertTrue(decay[0] < decay[1] < decay[2], decay)


def check_events(test, events, run):
    by_id = {e["event_id"]: e for e in events}
    test.assertEqual(by_id[run + "-1"]["affiliate_id"], AFFILIATE)
    test.assertEqual(by_id[run + "-1"]["channel"], "Affiliates")
    test.assertEqual(by_id[run + "-2"]["session_id"], by_id[run + "-1"]["session_id"],
                     "internal navigation stays in the affiliate session")
    test.assertNotIn("affiliate_id", by_id[run + "-3"])


def check_rollups(test, rows, record):
    """The rows of the conversion's minute hold its revenue, and every model's attributed
    revenue adds up to it there; over all minutes, three sessions and one conversion."""
    conv_minute = ms(record["converted_at"]) // 60000 * 60000
    mine = [r for r in rows if ms(r["minute"]) == conv_minute]
    test.assertTrue(mine, rows)
    test.assertAlmostEqual(sum(r["revenue"] for r in mine), REVENUE, delta=1e-9)
    test.assertEqual(sum(r["conversions"] for r in mine), 1)
    for m in MODELS:
        test.assertAlmostEqual(sum(r["attributed_revenue"][m] for r in mine), REVENUE,
                               delta=1e-9, msg=m)
    by_channel = {}
    for r in rows:
        test.assertEqual(r["app_id"], APP)
        test.assertEqual(list(r["attributed_revenue"]), MODELS)
        by_channel.setdefault(r["channel"], []).append(r)
    test.assertEqual(sorted(by_channel), sorted(CHANNELS))
    test.assertEqual(sum(r["sessions"] for r in rows), 3)
    test.assertEqual(sum(r["page_views"] for r in rows), 4)
    test.assertEqual(sum(r["late"] for r in rows), 0)
    affiliate = [r for r in mine if r["channel"] == "Affiliates"]
    test.assertAlmostEqual(sum(r["attributed_revenue"]["first_touch"] for r in affiliate),
                           REVENUE, delta=1e-9)
