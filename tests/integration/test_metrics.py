"""/metrics of the real binary after some traffic (HTTP, UDP, a bad beacon, a duplicate, a
session that ends), read with a real Prometheus text parser (prometheus_client's): every
series README's Metrics table names is there with its type and labels, and nothing else is;
histogram buckets are cumulative and end in +Inf = _count; the values moved as the traffic
says. Needs the Debian package python3-prometheus-client."""

import math
import os
import re
import unittest
from urllib.parse import quote, urlencode

import clickd_harness as h

try:
    # Debian's python3-prometheus-client (dev.sh installs it); ctest runs the system
    # python3 (tests/CMakeLists.txt), whose dist-packages hold it.
    from prometheus_client.parser import text_string_to_metric_families
except ImportError as e:
    raise ImportError("test_metrics needs prometheus_client: apt-get install "
                      "python3-prometheus-client (dev.sh TEST_DEPS)") from e

# One sample line of the text format 0.0.4, stricter than prometheus_client's parser.
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE_LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(?:\{%s(?:,%s)*\})? '
                         r'(?:[+-]?Inf|NaN|-?[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)$'
                         % (LABEL, LABEL))
README_ROW = re.compile(r"^\| `(clickd_[a-z_]+)(?:\{([a-z_,]+)\})?` \| (counter|gauge|histogram) \|")


def beacon(**fields):
    return urlencode(fields, quote_via=quote)


def readme_series():
    """{name: (type, [label names])} from the table in README's Metrics section."""
    with open(os.path.join(h.source_dir(), "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("### Metrics\n", 1)[1].split("\n## ", 1)[0]
    out = {}
    for line in section.splitlines():
        m = README_ROW.match(line)
        if m:
            out[m.group(1)] = (m.group(3), sorted(m.group(2).split(",")) if m.group(2) else [])
    return out


def families_by_name(text):
    """{exposed family name: family}; prometheus_client strips _total from counters."""
    out = {}
    for fam in text_string_to_metric_families(text):
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        if name in out:
            raise AssertionError("family %s appears twice" % name)
        out[name] = fam
    return out


def value(fam, suffix="", **labels):
    for s in fam.samples:
        if s.name == fam.name + suffix and s.labels == labels:
            return s.value
    raise AssertionError("no sample %s%s%r" % (fam.name, suffix, labels))


class Metrics(unittest.TestCase):
    def setUp(self):
        self.c = h.start_for(self, {"pipeline.ingest_threads": "2", "pipeline.shards": "2"})

    def send_traffic(self):
        c = self.c
        page = "https://shop.example/"
        self.assertEqual(c.get("/collect?" + beacon(eid="m-1", aid="shop", vid="alice",
                                                    url=page)).status, 204)
        self.assertEqual(c.get("/pixel.gif?" + beacon(eid="m-2", aid="shop", vid="bob",
                                                      url=page)).status, 200)
        lines = beacon(eid="m-3", aid="shop", vid="dave") + "\n" + \
            beacon(eid="m-4", aid="shop", vid="dave")
        self.assertEqual(c.post("/collect", lines, "text/plain").status, 204)
        # a duplicate of m-1
        self.assertEqual(c.get("/collect?" + beacon(eid="m-1", aid="shop", vid="alice",
                                                    url=page)).status, 204)
        # alice comes back from a newsletter: her first session ends (new_campaign)
        self.assertEqual(c.get("/collect?" + beacon(
            eid="m-5", aid="shop", vid="alice",
            url=page + "?utm_source=news&utm_medium=email")).status, 204)
        # a bad beacon: answered 400 and dead-lettered
        self.assertEqual(c.get("/collect?e=zz").status, 400)
        c.udp(beacon(eid="u-1", aid="shop", vid="carol", url=page) + "\n")

    def scrape(self):
        r = self.c.admin("/metrics")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("content-type"), "text/plain; version=0.0.4; charset=utf-8")
        text = r.body.decode("utf-8")
        for line in text.splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                continue
            self.assertRegex(line, SAMPLE_LINE)
        return families_by_name(text)

    def test_every_series_in_the_readme_is_scraped_with_its_type_and_values_move(self):
        c = self.c
        self.send_traffic()
        out = 'clickd_records_out_total{sink="file",stream="events"}'
        # Events are written, and shard statistics published, after the answers.
        h.wait_for(lambda: c.metric(out) == 6, 10, "6 events written")
        h.wait_for(lambda: c.metric('clickd_sessions_ended_total{reason="new_campaign"}') == 1
                   and c.metric("clickd_duplicates_total") == 1
                   and c.metric("clickd_sessions_open") == 4, 10, "shard statistics")
        fams = self.scrape()

        # The README table and /metrics agree: same families, types and labels.
        documented = readme_series()
        self.assertGreaterEqual(len(documented), 30)
        self.assertEqual(sorted(fams), sorted(documented),
                         "README's Metrics table and /metrics list different families")
        for name, (typ, labels) in documented.items():
            fam = fams[name]
            self.assertEqual(fam.type, typ, name)
            self.assertTrue(fam.documentation, "%s has no help" % name)
            self.assertTrue(fam.samples, "%s has no sample" % name)
            for s in fam.samples:
                self.assertEqual(sorted(k for k in s.labels if k != "le"), labels, s)

        for name, fam in fams.items():
            if fam.type == "histogram":
                self.check_histogram(fam)

        def v(name, **labels):
            return value(fams[name], "_total" if fams[name].type == "counter" else "",
                         **labels)
        self.assertEqual(v("clickd_events_in_total"), 7)
        self.assertEqual(v("clickd_duplicates_total"), 1)
        self.assertEqual(v("clickd_records_out_total", sink="file", stream="events"), 6)
        self.assertEqual(v("clickd_records_out_total", sink="file", stream="dead_letters"), 1)
        self.assertEqual(v("clickd_dead_letters_total", reason="malformed"), 1)
        self.assertEqual(v("clickd_udp_datagrams_total"), 1)
        self.assertEqual(v("clickd_http_requests_total", status="204"), 4)
        self.assertEqual(v("clickd_http_requests_total", status="200"), 1)
        self.assertEqual(v("clickd_http_requests_total", status="400"), 1)
        self.assertEqual(v("clickd_http_connections_total"), 6)
        self.assertGreater(v("clickd_bytes_in_total"), 0)
        self.assertEqual(v("clickd_sessions_started_total"), 5)
        self.assertEqual(v("clickd_sessions_ended_total", reason="new_campaign"), 1)
        self.assertEqual(v("clickd_sessions_ended_total", reason="inactivity"), 0)
        self.assertEqual(v("clickd_sink_failures_total", sink="file", stream="events"), 0)
        self.assertEqual(v("clickd_sessions_open"), 4)
        self.assertEqual(v("clickd_visitors_remembered"), 4)
        self.assertEqual(v("clickd_dedup_entries"), 6)
        self.assertEqual(v("clickd_dedup_window_covered_seconds"), 3600)
        self.assertEqual(v("clickd_kafka_queue_depth"), 0)
        fill = v("clickd_ring_fill_ratio")
        self.assertTrue(0 <= fill <= 1, fill)

        # Every collect answer is timed, once; the admin listener's are not.
        http = fams["clickd_http_request_duration_seconds"]
        self.assertEqual(value(http, "_count"), 6)
        self.assertGreater(value(http, "_sum"), 0)
        self.assertLess(value(http, "_sum"), 6 * 10.0)
        # Every event the file sink took, once, within the test's few seconds.
        sink = fams["clickd_event_to_sink_seconds"]
        self.assertEqual(value(sink, "_count", sink="file"), 6)
        self.assertEqual(value(sink, "_count", sink="kafka"), 0)
        self.assertEqual(value(sink, "_bucket", sink="file", le="30"), 6)
        self.assertGreaterEqual(value(sink, "_sum", sink="file"), 0)

        # A scrape is not collect traffic; more collect traffic moves the histogram on.
        self.assertEqual(c.get("/collect?" + beacon(eid="m-6", aid="shop", vid="erin")).status,
                         204)
        h.wait_for(lambda: c.metric(out) == 7, 10, "the 7th event written")
        again = self.scrape()
        self.assertEqual(value(again["clickd_http_request_duration_seconds"], "_count"), 7)
        self.assertEqual(value(again["clickd_event_to_sink_seconds"], "_count", sink="file"), 7)
        h.stop_ok(self, c)

    def check_histogram(self, fam):
        series = {}
        for s in fam.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            part = series.setdefault(key, {"buckets": [], "sum": None, "count": None})
            if s.name == fam.name + "_bucket":
                part["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name == fam.name + "_sum":
                part["sum"] = s.value
            elif s.name == fam.name + "_count":
                part["count"] = s.value
        self.assertTrue(series, fam.name)
        for key, part in series.items():
            what = "%s%r" % (fam.name, key)
            buckets = part["buckets"]
            self.assertGreaterEqual(len(buckets), 10, what)
            self.assertEqual([le for le, _ in buckets], sorted(le for le, _ in buckets), what)
            self.assertTrue(math.isinf(buckets[-1][0]), "%s ends in +Inf" % what)
            counts = [n for _, n in buckets]
            self.assertEqual(counts, sorted(counts), "%s buckets are cumulative" % what)
            self.assertEqual(part["count"], counts[-1], "%s _count is the +Inf bucket" % what)
            self.assertIsNotNone(part["sum"], what)
            self.assertGreaterEqual(part["sum"], 0, what)


if __name__ == "__main__":
    unittest.main()
