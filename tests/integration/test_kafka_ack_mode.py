"""kafka.ack_mode=kafka against the real Apache Kafka broker: a 2xx means durable.

With the fixture broker: every event answered 2xx is in Kafka by the time of its answer
(the delivery count already covers it) and in the topic afterwards; pipelined answers keep
their order; and the fault test: clickd killed with SIGKILL mid-stream while several
clients send beacons with unique event IDs, restarted on the same spool directory, and
every event answered 2xx is in the topic (the figures are printed: sent, answered 2xx,
found, duplicates).

With a private broker (tests/kafka/kafka.sh, as test_kafka_faults.py), stopped or started
per test: with the broker away and the spool on, requests are answered 2xx once their
events are spooled; with the spool off they wait: kafka.ack_timeout_ms answers 503 with
Retry-After, a duplicate is answered at once (its original is on its way), a dead letter
does not hold the answer, a client that goes away cancels its waits (late deliveries are
ignored), kafka.ack_max_pending answers 503 at once, and TERM answers a waiting request 2xx
when its event is delivered during the drain, and otherwise closes the connection without
an answer. Loopback only; each test bounded (well under a minute).
"""

import collections
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import uuid
from urllib.parse import quote, urlencode

import clickd_harness as h

# Faster notice of a broker coming back than the production defaults (as in
# test_kafka_faults): only the timing changes, not what happens.
BROKER_SETTINGS = {
    "kafka.producer.statistics.interval.ms": "1000",
    "kafka.producer.reconnect.backoff.max.ms": "1000",
}


def beacon(**fields):
    return urlencode(fields, quote_via=quote)


def event_ids(bootstrap, topic, expected, timeout=60):
    """Counter of event_id over the topic's records (read until `expected` are there)."""
    got = h.kafka_consume(bootstrap, topic, expected, timeout=timeout)
    return collections.Counter(json.loads(v)["event_id"] for _, v in got)


def send_get(c, path):
    """Sends one GET on a new connection and returns the socket, without waiting."""
    s = socket.create_connection(("127.0.0.1", c.http_port), timeout=h.scaled(10))
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
    return s


def delivered(c):
    return c.metric('clickd_records_out_total{sink="kafka",stream="events"}')


class Senders:
    """CLIENTS threads, each on its own keep-alive connection, sending beacons with unique
    event IDs until stopped, as trackers do: a 503 or a connection error is retried with
    the same ID. target() gives the clickd to send to (it changes across a restart)."""

    def __init__(self, target, run, clients):
        self.target = target
        self.run = run
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.answered = set()  # event IDs answered 2xx
        self.sent = 0  # distinct beacons tried
        self.unknown = 0  # beacons whose last try got no answer (connection lost)
        self.statuses = collections.Counter()
        self.threads = [threading.Thread(target=self.client, args=(t,)) for t in range(clients)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(h.scaled(60))

    def client(self, t):
        conn = None
        i = 0
        while not self.stop_flag.is_set():
            eid = "%s-%d-%d" % (self.run, t, i)
            path = "/collect?" + beacon(eid=eid, aid="shop", vid="v%d" % ((t * 7919 + i) % 61),
                                        url="https://shop.example/p%d" % i)
            with self.lock:
                self.sent += 1
            status = None
            while not self.stop_flag.is_set():
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", self.target().http_port,
                                                          timeout=h.scaled(20))
                    conn.request("GET", path)
                    r = conn.getresponse()
                    r.read()
                    status = r.status
                except (OSError, http.client.HTTPException, KeyError):
                    if conn is not None:
                        conn.close()
                    conn = None
                    status = None
                with self.lock:
                    self.statuses[status] += 1
                if status is not None and status != 503:
                    break
                time.sleep(0.05)
            with self.lock:
                if status is not None and 200 <= status < 300:
                    self.answered.add(eid)
                elif status is None:
                    self.unknown += 1
            i += 1
        if conn is not None:
            conn.close()


class AckModeTest(unittest.TestCase):
    """Against the fixture broker."""

    def setUp(self):
        self.bootstrap = h.kafka_bootstrap()
        self.run_id = uuid.uuid4().hex[:10]
        self.topic = "ack-" + self.run_id

    def settings(self, **more):
        s = {
            "kafka.brokers": self.bootstrap,
            "kafka.ack_mode": "kafka",
            "kafka.topic.events": self.topic,
            "kafka.topic.touchpoints": self.topic + "-touch",
            "kafka.topic.dead_letters": self.topic + "-dead",
            "pipeline.ingest_threads": "2",
            "pipeline.shards": "2",
        }
        s.update(more)
        return s

    def test_every_event_answered_2xx_is_in_kafka_by_its_answer(self):
        c = h.start_for(self, self.settings())
        answered = set()
        lock = threading.Lock()

        def client(t):
            conn = http.client.HTTPConnection("127.0.0.1", c.http_port, timeout=h.scaled(20))
            for i in range(60):
                eid = "%s-%d-%d" % (self.run_id, t, i)
                conn.request("GET", "/collect?" + beacon(eid=eid, aid="shop", vid="v%d" % t))
                r = conn.getresponse()
                r.read()
                if 200 <= r.status < 300:
                    with lock:
                        answered.add(eid)
            # A batch: two good beacons, a bad one (a dead letter: it does not hold the
            # answer) and a duplicate of one already answered (taken at once).
            body = "\n".join([beacon(eid="%s-%d-b1" % (self.run_id, t), aid="shop", vid="b"),
                              beacon(eid="%s-%d-b2" % (self.run_id, t), aid="shop", vid="b"),
                              beacon(eid="%s-%d-bad" % (self.run_id, t), e="zz"),
                              beacon(eid="%s-%d-0" % (self.run_id, t), aid="shop",
                                     vid="v%d" % t)])
            conn.request("POST", "/collect", body=body, headers={"Content-Type": "text/plain"})
            r = conn.getresponse()
            r.read()
            if r.status == 204:
                with lock:
                    answered.update(["%s-%d-b1" % (self.run_id, t),
                                     "%s-%d-b2" % (self.run_id, t)])
            conn.close()

        threads = [threading.Thread(target=client, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(h.scaled(60))
        self.assertEqual(len(answered), 4 * 62)
        # Durable before the answer: Kafka's delivery reports already cover every event
        # answered (in accept mode they would trail behind).
        self.assertGreaterEqual(delivered(c), len(answered))
        self.assertEqual(c.metric("clickd_ack_pending"), 0)
        self.assertEqual(c.metric('clickd_dead_letters_total{reason="malformed"}'), 4)
        h.wait_for(lambda: c.metric("clickd_duplicates_total") == 4, 10, "4 duplicates counted")
        h.stop_ok(self, c)
        found = event_ids(self.bootstrap, self.topic, len(answered))
        self.assertEqual(set(found), answered)
        self.assertEqual(max(found.values()), 1, "no duplicates")

    def test_udp_beacons_are_not_acknowledged_and_still_delivered(self):
        c = h.start_for(self, self.settings())
        for i in range(5):
            c.udp(beacon(eid="%s-u%d" % (self.run_id, i), aid="shop", vid="u"))
        h.wait_for(lambda: delivered(c) == 5, 30, "the UDP beacons in Kafka")
        self.assertEqual(c.metric("clickd_ack_pending"), 0)
        h.stop_ok(self, c)
        self.assertEqual(len(event_ids(self.bootstrap, self.topic, 5)), 5)

    def test_without_brokers_the_start_fails_naming_the_key(self):
        p = subprocess.run([h.binary(), "--set", "kafka.ack_mode=kafka", "--check-config"],
                           capture_output=True, text=True, timeout=h.scaled(30))
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("kafka.ack_mode", p.stderr)
        self.assertIn("kafka.brokers", p.stderr)

    def test_pipelined_answers_keep_their_order(self):
        c = h.start_for(self, self.settings())
        reqs = b"".join([
            b"GET /collect?eid=" + self.run_id.encode() + b"-1&aid=a&vid=v HTTP/1.1\r\n\r\n",
            b"GET /nowhere HTTP/1.1\r\n\r\n",
            b"GET /pixel.gif?eid=" + self.run_id.encode() + b"-2&aid=a&vid=v HTTP/1.1\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\n\r\n",
            b"GET /collect?e=zz HTTP/1.1\r\n\r\n",
            b"GET /collect?eid=" + self.run_id.encode() + b"-3&aid=a&vid=v HTTP/1.1\r\n"
            b"Connection: close\r\n\r\n",
        ])
        s = socket.create_connection(("127.0.0.1", c.http_port))
        try:
            s.sendall(reqs)
            rs, closed = h.read_responses(s, 6, timeout=30)
            self.assertEqual([r.status for r in rs], [204, 404, 200, 200, 400, 204], rs)
            self.assertEqual(rs[2].header("content-type"), "image/gif")
            self.assertEqual(rs[3].body, b"ok\n")
            self.assertEqual(rs[5].header("connection"), "close")
            self.assertIsNone(rs[0].header("connection"))
            if not closed:
                self.assertEqual(h.wait_closed(s), b"")
        finally:
            s.close()
        h.stop_ok(self, c)
        found = event_ids(self.bootstrap, self.topic, 3)
        self.assertEqual(sorted(found), [self.run_id + "-1", self.run_id + "-2",
                                         self.run_id + "-3"])

    def test_clickd_killed_mid_stream_loses_no_event_it_answered_2xx(self):
        """The fault test: SIGKILL while 6 clients send, restart on the same spool."""
        work = tempfile.mkdtemp(prefix="clickd-it-ack-kill-")
        self.addCleanup(shutil.rmtree, work, True)
        # A low spool.high_water sends part of the records through the spool (answered once
        # written and synced), so that both ways to durability are under the kill.
        settings = self.settings(**{
            "spool.high_water": "3",
            "spool.fsync_interval_ms": "100",
            "kafka.flush_timeout_ms": "10000",
        })
        settings.update(BROKER_SETTINGS)
        first = h.Clickd(settings, workdir=work)
        self.addCleanup(first.cleanup)
        first.start()
        current = [first]
        senders = Senders(lambda: current[0], self.run_id, clients=6).start()
        try:
            h.wait_for(lambda: delivered(first) >= 1500, 30, "1500 deliveries before the kill")
            before_kill = first.metrics()
            first.kill()
            second = h.Clickd(settings, workdir=work)
            self.addCleanup(second.cleanup)
            second.start()
            current[0] = second
            h.wait_for(lambda: delivered(second) >= 1000, 30, "1000 deliveries after the restart")
        finally:
            senders.stop()
        with senders.lock:
            answered = set(senders.answered)
            sent, unknown = senders.sent, senders.unknown
            statuses = dict(senders.statuses)

        def drained():
            m = second.metrics()
            return (m.get("clickd_spool_bytes") == 0 and m.get("clickd_spool_active") == 0
                    and m.get("clickd_kafka_queue_depth") == 0)
        h.wait_for(drained, 60, "the spool to drain", interval=0.5)
        m = second.metrics()
        h.stop_ok(self, second)

        found = event_ids(self.bootstrap, self.topic, len(answered))
        missing = answered - set(found)
        # Duplicates are allowed (at least once) and counted. Where they come from: an event
        # delivered (or spooled) whose 2xx was lost with the killed process is retried by its
        # client with the same event ID, and the restarted clickd, whose dedup table starts
        # empty, takes it again; and the spool segments left by the killed process are
        # replayed at the start, including records Kafka had already taken (acks are not
        # on disk; a segment is deleted only once all its records are delivered).
        duplicates = sum(n - 1 for n in found.values() if n > 1)
        not_answered = len(set(found) - answered)
        print("\nclickd killed (SIGKILL) mid-stream with kafka.ack_mode=%s: sent %d, "
              "answered 2xx %d, found in the topic %d (distinct %d), missing %d, "
              "duplicates %d, found but not answered 2xx %d, no answer (connection lost) %d, "
              "statuses %s; the killed run had %d delivered and %d spooled, the restarted "
              "one spooled %d and replayed %d"
              % (settings["kafka.ack_mode"], sent, len(answered), sum(found.values()),
                 len(found), len(missing), duplicates, not_answered, unknown, statuses,
                 before_kill.get('clickd_records_out_total{sink="kafka",stream="events"}', 0),
                 before_kill.get("clickd_spool_records_spooled_total", 0),
                 m.get("clickd_spool_records_spooled_total", 0),
                 m.get("clickd_spool_records_replayed_total", 0)))
        self.assertEqual(len(missing), 0,
                         "answered 2xx but not in the topic: %r" % sorted(missing)[:20])


class AckModeBrokerAwayTest(unittest.TestCase):
    """Against a private broker, stopped for each test (a test starts it when it needs it)."""

    @classmethod
    def setUpClass(cls):
        cls.state = tempfile.mkdtemp(prefix="clickd-ack-kafka-")
        try:
            cls.bootstrap = h.kafka_sh("start", cls.state).splitlines()[-1]
        except Exception:
            shutil.rmtree(cls.state, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls):
        h.kafka_sh("stop", cls.state)

    def setUp(self):
        if subprocess.run(["bash", os.path.join(h.source_dir(), "tests", "kafka", "kafka.sh"),
                           "status", self.state], capture_output=True).returncode == 0:
            h.kafka_sh("halt", self.state)
        self.run_id = uuid.uuid4().hex[:10]
        self.topic = "ack-away-" + self.run_id

    def settings(self, **more):
        s = {
            "kafka.brokers": self.bootstrap,
            "kafka.ack_mode": "kafka",
            "kafka.topic.events": self.topic,
            "kafka.topic.touchpoints": self.topic + "-touch",
            "kafka.topic.dead_letters": self.topic + "-dead",
            "pipeline.ingest_threads": "1",
            "pipeline.shards": "1",
        }
        s.update(BROKER_SETTINGS)
        s.update(more)
        return s

    def no_spool(self, **more):
        """The spool off: with the broker away, events wait in librdkafka's queue."""
        s = {"spool.max_bytes": "0", "kafka.flush_timeout_ms": "500"}
        s.update(more)
        return self.settings(**s)

    def test_broker_away_answers_2xx_once_events_are_spooled(self):
        work = tempfile.mkdtemp(prefix="clickd-it-ack-spool-")
        self.addCleanup(shutil.rmtree, work, True)
        c = h.Clickd(self.settings(), workdir=work)
        self.addCleanup(c.cleanup)
        c.start()
        h.wait_for(lambda: c.metric("clickd_spool_active") == 1, 30,
                   "clickd to see the broker away and spool")
        answered = set()
        lock = threading.Lock()

        def client(t):
            conn = http.client.HTTPConnection("127.0.0.1", c.http_port, timeout=h.scaled(20))
            for i in range(50):
                eid = "%s-%d-%d" % (self.run_id, t, i)
                conn.request("GET", "/collect?" + beacon(eid=eid, aid="shop", vid="v%d" % i))
                r = conn.getresponse()
                r.read()
                if r.status == 204:
                    with lock:
                        answered.add(eid)
            conn.close()

        threads = [threading.Thread(target=client, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(h.scaled(60))
        self.assertEqual(len(answered), 200)
        m = c.metrics()
        self.assertEqual(delivered(c), 0, "the broker is away: the spool holds them")
        self.assertGreaterEqual(m["clickd_spool_records_spooled_total"], len(answered))
        self.assertEqual(m["clickd_ack_pending"], 0)
        h.stop_ok(self, c)
        h.kafka_sh("restart", self.state)
        c2 = h.Clickd(self.settings(), workdir=work)
        self.addCleanup(c2.cleanup)
        c2.start()
        # Delivered first: the spool gauges read 0 until the first poll publishes them.
        h.wait_for(lambda: delivered(c2) >= len(answered)
                   and c2.metric("clickd_spool_bytes") == 0, 60, "the spool to drain")
        h.stop_ok(self, c2)
        found = event_ids(self.bootstrap, self.topic, len(answered))
        self.assertEqual(set(found), answered)

    def test_a_request_not_durable_in_time_is_answered_503_and_its_retry_is_a_duplicate(self):
        c = h.start_for(self, self.no_spool(**{"kafka.ack_timeout_ms": "1000"}))
        path = "/collect?" + beacon(eid=self.run_id + "-t", aid="shop", vid="v1")
        r = c.get(path)
        self.assertEqual(r.status, 503, r)
        self.assertEqual(r.header("retry-after"), "1")
        self.assertEqual(c.metric("clickd_ack_timeouts_total"), 1)
        self.assertEqual(c.metric("clickd_ack_pending"), 0)
        h.kafka_sh("restart", self.state)
        # The event still reaches Kafka (its request no longer waits: ignored) ...
        h.wait_for(lambda: delivered(c) == 1, 60, "the late delivery")
        # ... and the tracker's retry is a duplicate, taken at once and not written again.
        self.assertEqual(c.get(path).status, 204)
        h.wait_for(lambda: c.metric("clickd_duplicates_total") == 1, 10, "the duplicate counted")
        h.stop_ok(self, c)
        self.assertEqual(event_ids(self.bootstrap, self.topic, 1), {self.run_id + "-t": 1})

    def test_duplicates_and_dead_letters_do_not_wait_and_a_client_gone_cancels_its_waits(self):
        c = h.start_for(self, self.no_spool(**{"kafka.ack_timeout_ms": "60000"}))
        eid = self.run_id + "-d"
        first = send_get(c, "/collect?" + beacon(eid=eid, aid="shop", vid="v1"))
        pipelined = socket.create_connection(("127.0.0.1", c.http_port), timeout=h.scaled(10))
        pipelined.sendall("".join("GET /collect?%s HTTP/1.1\r\n\r\n"
                                  % beacon(eid="%s-p%d" % (self.run_id, i), aid="shop", vid="v2")
                                  for i in range(3)).encode())
        h.wait_for(lambda: c.metric("clickd_ack_pending") == 4, 20, "4 requests waiting")
        # The same event again: its original is on its way, so the answer comes at once,
        # and so does one whose beacons are a dead letter and that duplicate.
        self.assertEqual(c.get("/collect?" + beacon(eid=eid, aid="shop", vid="v1")).status, 204)
        body = "\n".join([beacon(eid="x", e="zz"), beacon(eid=eid, aid="shop", vid="v1")])
        self.assertEqual(c.post("/collect", body, "text/plain").status, 204)
        self.assertEqual(c.metric("clickd_ack_pending"), 4)
        h.wait_for(lambda: c.metric("clickd_duplicates_total") == 2, 10, "2 duplicates counted")
        # The clients go away while their requests wait: the waits are cancelled.
        first.close()
        pipelined.close()
        h.wait_for(lambda: c.metric("clickd_ack_pending") == 0, 20, "the waits to be cancelled")
        self.assertEqual(c.get("/healthz").status, 200)
        # The broker comes back: the events are delivered, their completions find nobody.
        h.kafka_sh("restart", self.state)
        h.wait_for(lambda: delivered(c) == 4, 60, "the late deliveries")
        self.assertEqual(c.metric("clickd_ack_pending"), 0)
        self.assertEqual(c.get("/collect?" + beacon(eid=self.run_id + "-n", aid="shop",
                                                       vid="v3")).status, 204)
        h.stop_ok(self, c)
        found = event_ids(self.bootstrap, self.topic, 5)
        self.assertEqual(sorted(found.values()), [1] * 5)

    def test_past_ack_max_pending_a_request_is_answered_503_at_once(self):
        c = h.start_for(self, self.no_spool(**{"kafka.ack_max_pending": "2",
                                               "kafka.ack_timeout_ms": "60000"}))
        waiting = [send_get(c, "/collect?" + beacon(eid="%s-%d" % (self.run_id, i), aid="a",
                                                    vid="v")) for i in range(2)]
        h.wait_for(lambda: c.metric("clickd_ack_pending") == 2, 20, "2 requests waiting")
        r = c.get("/collect?" + beacon(eid=self.run_id + "-3", aid="a", vid="v"))
        self.assertEqual(r.status, 503, r)
        self.assertIsNotNone(r.header("retry-after"))
        self.assertEqual(c.metric("clickd_events_in_total"), 2, "nothing of it was taken")
        for s in waiting:
            s.close()
        h.wait_for(lambda: c.metric("clickd_ack_pending") == 0, 20, "the waits to be cancelled")

    def test_a_connection_with_too_many_waiting_requests_is_not_read_until_answers_go(self):
        c = h.start_for(self, self.no_spool(**{"kafka.ack_max_pending_per_connection": "2",
                                               "kafka.ack_timeout_ms": "2000"}))
        s = socket.create_connection(("127.0.0.1", c.http_port), timeout=h.scaled(10))
        try:
            req = "GET /collect?%s HTTP/1.1\r\n\r\n"
            s.sendall("".join(req % beacon(eid="%s-%d" % (self.run_id, i), aid="a", vid="v")
                              for i in range(2)).encode())
            h.wait_for(lambda: c.metric("clickd_ack_pending") == 2, 20, "2 requests waiting")
            s.sendall((req % beacon(eid=self.run_id + "-2", aid="a", vid="v")).encode())
            time.sleep(h.scaled(0.3))
            # Not read while two wait (the third would be an event in by now).
            self.assertEqual(c.metric("clickd_events_in_total"), 2)
            # The two time out (the broker is away), reading resumes, the third waits too.
            rs, _ = h.read_responses(s, 3, timeout=30)
            self.assertEqual([r.status for r in rs], [503, 503, 503], rs)
            self.assertEqual(c.metric("clickd_events_in_total"), 3)
            self.assertEqual(c.metric("clickd_ack_timeouts_total"), 3)
        finally:
            s.close()

    def test_term_closes_a_waiting_request_without_an_answer_when_nothing_is_durable(self):
        c = h.start_for(self, self.no_spool(**{"shutdown.drain_timeout_ms": "500",
                                               "kafka.ack_timeout_ms": "60000"}))
        s = send_get(c, "/collect?" + beacon(eid=self.run_id + "-x", aid="a", vid="v"))
        try:
            h.wait_for(lambda: c.metric("clickd_ack_pending") == 1, 20, "the request waiting")
            code = c.stop()
            self.assertEqual(h.wait_closed(s), b"", "no answer: the event is not durable")
        finally:
            s.close()
        # The broker away and no spool: the record could not be flushed (exit 1, logged).
        self.assertEqual(code, 1, c.log())
        self.assertIn("records could not be flushed", c.log())

    def test_term_answers_a_waiting_request_2xx_once_its_event_is_delivered_during_the_drain(self):
        c = h.start_for(self, self.no_spool(**{"shutdown.drain_timeout_ms": "40000",
                                               "kafka.ack_timeout_ms": "60000",
                                               "kafka.flush_timeout_ms": "10000"}))
        s = send_get(c, "/collect?" + beacon(eid=self.run_id + "-y", aid="a", vid="v"))
        try:
            h.wait_for(lambda: c.metric("clickd_ack_pending") == 1, 20, "the request waiting")
            c.proc.send_signal(15)
            # Draining: the request still waits for Kafka, which comes back meanwhile.
            time.sleep(h.scaled(0.5))
            self.assertIsNone(c.proc.poll(), "clickd waits for the request during the drain")
            h.kafka_sh("restart", self.state)
            rs, _ = h.read_responses(s, 1, timeout=60)
            self.assertEqual(rs[0].status, 204, rs)
            self.assertEqual(rs[0].header("connection"), "close")
        finally:
            s.close()
        self.assertEqual(c.stop(), 0, c.log())
        self.assertEqual(event_ids(self.bootstrap, self.topic, 1), {self.run_id + "-y": 1})


if __name__ == "__main__":
    unittest.main()
