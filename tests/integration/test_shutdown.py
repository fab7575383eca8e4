"""TERM and INT on the real binary: stop accepting, answer what is in flight, take what the
UDP socket holds, flush the sink, exit 0 -- and lose nothing that was answered 2xx."""

import http.client
import signal
import socket
import threading
import time
import unittest

from clickd_harness import read_responses, scaled, start_for, wait_closed, wait_for

HTTP_THREADS = 4
UDP_THREADS = 2
UDP_WINDOW = 8  # datagrams in flight per thread: far below any socket buffer


class Load:
    """Client threads sending a steady stream of beacons until the daemon goes away."""

    def __init__(self, c):
        self.c = c
        self.lock = threading.Lock()
        self.signalled = False
        self.done = threading.Event()
        self.http_ok = []       # eids answered 2xx
        self.http_sent = set()  # eids sent over HTTP, whatever the answer
        self.http_other = []    # (eid, status) answered something else
        self.udp_before = []    # eids whose datagram was sent before the signal
        self.udp_all = []
        self.errors = []
        self.threads = [threading.Thread(target=self.http_client, args=(i,), daemon=True)
                        for i in range(HTTP_THREADS)]
        self.threads.append(threading.Thread(target=self.http_batch_client, daemon=True))
        self.threads += [threading.Thread(target=self.udp_client, args=(i,), daemon=True)
                         for i in range(UDP_THREADS)]

    def start(self):
        for t in self.threads:
            t.start()

    def signal(self, sig):
        # Under the lock no datagram is being sent: those counted as "before" really left
        # before the signal did.
        with self.lock:
            self.c.proc.send_signal(sig)
            self.signalled = True

    def join(self):
        self.done.set()
        for t in self.threads:
            t.join(scaled(30))
            assert not t.is_alive(), "a client thread is stuck"

    def answered(self, eids, status):
        with self.lock:
            if 200 <= status < 300:
                self.http_ok.extend(eids)
            else:
                self.http_other.extend((e, status) for e in eids)

    def http_loop(self, make_request):
        conn = http.client.HTTPConnection("127.0.0.1", self.c.http_port, timeout=scaled(10))
        i = 0
        try:
            while not self.done.is_set():
                eids, method, path, body, headers = make_request(i)
                i += 1
                with self.lock:
                    self.http_sent.update(eids)
                try:
                    conn.request(method, path, body=body, headers=headers)
                    r = conn.getresponse()
                    r.read()
                except (OSError, http.client.HTTPException):
                    return  # the daemon closed the connection or the listener: done
                self.answered(eids, r.status)
        finally:
            conn.close()

    def http_client(self, n):
        def make(i):
            eid = "h%d-%d" % (n, i)
            return [eid], "GET", "/collect?eid=%s&vid=v%d" % (eid, n), None, {}
        try:
            self.http_loop(make)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append(e)

    def http_batch_client(self):
        def make(i):
            eids = ["b-%d-%d" % (i, k) for k in range(3)]
            body = "\n".join("eid=%s&vid=vb" % e for e in eids).encode()
            return eids, "POST", "/collect", body, {"Content-Type": "text/plain"}
        try:
            self.http_loop(make)
        except Exception as e:  # noqa: BLE001
            self.errors.append(e)

    def udp_client(self, n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        i = 0
        try:
            while not self.done.is_set():
                with self.lock:
                    if self.signalled:
                        return
                    for _ in range(UDP_WINDOW):
                        eid = "u%d-%d" % (n, i)
                        i += 1
                        s.sendto(("eid=%s&vid=vu" % eid).encode(),
                                 ("127.0.0.1", self.c.udp_port))
                        self.udp_before.append(eid)
                        self.udp_all.append(eid)
                    target = len(self.udp_all)
                # Flow control: wait until clickd has read what was sent, so the kernel
                # never has a reason to drop a datagram.
                while not self.done.is_set():
                    with self.lock:
                        if self.signalled:
                            return
                    try:
                        if self.c.metric("clickd_udp_datagrams_total") >= target:
                            break
                    except Exception:  # noqa: BLE001 - admin gone: the daemon is stopping
                        return
                    time.sleep(0.002)
        except Exception as e:  # noqa: BLE001
            self.errors.append(e)
        finally:
            s.close()


class Shutdown(unittest.TestCase):
    def check_stop_loses_nothing(self, sig):
        c = start_for(self)
        load = Load(c)
        load.start()
        try:
            def busy():
                with load.lock:
                    return len(load.http_ok) >= 300 and len(load.udp_all) >= 100
            wait_for(busy, 60, "the clients to get going")
            load.signal(sig)
            code = c.proc.wait(scaled(60))
        finally:
            load.join()
        self.assertEqual(code, 0, c.log())
        c.stop()
        self.assertEqual(load.errors, [])
        self.assertIn("signal=%s" % ("TERM" if sig == signal.SIGTERM else "INT"), c.log())

        events = c.records("events")
        got = [e["event_id"] for e in events]
        self.assertEqual(len(got), len(set(got)), "duplicate events")
        got = set(got)
        http_got = {e for e in got if not e.startswith("u")}
        udp_got = {e for e in got if e.startswith("u")}
        # every beacon answered 2xx is there, and nothing that was not answered 2xx
        missing = set(load.http_ok) - http_got
        self.assertEqual(missing, set(), "answered 2xx but lost: %d" % len(missing))
        self.assertEqual(http_got, set(load.http_ok),
                         "written but not answered 2xx: %r" % sorted(http_got - set(load.http_ok)))
        self.assertEqual([s for _, s in load.http_other], [], load.http_other[:10])
        # every datagram sent before the signal is there (the socket is drained at stop)
        lost_udp = set(load.udp_before) - udp_got
        self.assertEqual(lost_udp, set(), "UDP beacons lost: %d" % len(lost_udp))
        self.assertLessEqual(udp_got, set(load.udp_all))
        # the files were finished: nothing is left as .open
        self.assertEqual(c.records("events", include_open=False), events)

    def test_term_loses_nothing_that_was_answered(self):
        self.check_stop_loses_nothing(signal.SIGTERM)

    def test_int_loses_nothing_that_was_answered(self):
        self.check_stop_loses_nothing(signal.SIGINT)

    def test_a_request_in_flight_at_term_is_answered_then_the_connection_closes(self):
        c = start_for(self, {"shutdown.drain_timeout_ms": "600000"})
        s = socket.create_connection(("127.0.0.1", c.http_port), timeout=scaled(10))
        try:
            s.sendall(b"POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                      b"Content-Length: 14\r\n\r\neid=fl")
            wait_for(lambda: c.metric("clickd_bytes_in_total") > 0, 10, "the first half read")
            c.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: "msg=\"stopping" in c.log(), 10, "clickd to begin its stop")
            s.sendall(b"ight&vid=v")
            rs, _ = read_responses(s, 1)
            self.assertEqual(rs[0].status, 204, rs)
            self.assertEqual(rs[0].header("connection"), "close")
            wait_closed(s)
        finally:
            s.close()
        self.assertEqual(c.proc.wait(scaled(30)), 0, c.log())
        c.stop()
        self.assertEqual([e["event_id"] for e in c.records("events")], ["flight"])

    def test_idle_keep_alive_connections_do_not_hold_up_the_stop(self):
        c = start_for(self, {"shutdown.drain_timeout_ms": "600000"})
        conns = []
        for i in range(3):
            conn = http.client.HTTPConnection("127.0.0.1", c.http_port, timeout=10)
            conn.request("GET", "/collect?eid=i%d&vid=v" % i)
            r = conn.getresponse()
            r.read()
            self.assertEqual(r.status, 204)
            conns.append(conn)
        try:
            c.proc.send_signal(signal.SIGTERM)
            # with a drain timeout of 10 minutes, only closing idle connections at once
            # lets clickd exit within the wait
            self.assertEqual(c.proc.wait(scaled(30)), 0, c.log())
            for conn in conns:
                self.assertEqual(wait_closed(conn.sock), b"")
        finally:
            for conn in conns:
                conn.close()
        c.stop()
        self.assertNotIn("drain timeout", c.log())
        self.assertEqual(len(c.records("events")), 3)

    def test_a_request_that_never_completes_is_cut_at_the_drain_timeout(self):
        c = start_for(self, {"shutdown.drain_timeout_ms": "200"})
        s = socket.create_connection(("127.0.0.1", c.http_port), timeout=scaled(10))
        try:
            s.sendall(b"GET /collect?eid=never")
            wait_for(lambda: c.metric("clickd_bytes_in_total") > 0, 10, "the bytes read")
            c.proc.send_signal(signal.SIGTERM)
            self.assertEqual(c.proc.wait(scaled(30)), 0, c.log())
            wait_closed(s)
        finally:
            s.close()
        c.stop()
        self.assertIn("drain timeout", c.log())
        self.assertEqual(c.records("events"), [])

    def test_the_listener_closes_and_readyz_fails_once_stopping(self):
        c = start_for(self, {"shutdown.drain_timeout_ms": "600000"})
        s = socket.create_connection(("127.0.0.1", c.http_port), timeout=scaled(10))
        try:
            s.sendall(b"GET /collect?eid=hold")  # holds the stop open
            wait_for(lambda: c.metric("clickd_bytes_in_total") > 0, 10, "the bytes read")
            c.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: "msg=\"stopping" in c.log(), 10, "clickd to begin its stop")

            def refused():
                try:
                    socket.create_connection(("127.0.0.1", c.http_port), timeout=1).close()
                    return False
                except ConnectionRefusedError:
                    return True
            wait_for(refused, 10, "new connections to be refused")
            # still alive, no longer ready: load balancers take it out of rotation
            self.assertEqual(c.admin("/healthz").status, 200)
            r = c.admin("/readyz")
            self.assertEqual((r.status, r.body), (503, b"not ready: draining\n"))
            s.sendall(b"&vid=v HTTP/1.1\r\nHost: x\r\n\r\n")
            rs, _ = read_responses(s, 1)
            self.assertEqual(rs[0].status, 204, rs)
        finally:
            s.close()
        self.assertEqual(c.proc.wait(scaled(30)), 0, c.log())
        c.stop()
        self.assertEqual([e["event_id"] for e in c.records("events")], ["hold"])


if __name__ == "__main__":
    unittest.main()
