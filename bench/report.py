#!/usr/bin/env python3
"""bench/report.py - turns the raw files of bench/run.sh and bench/udp.sh into figures.

    report.py http-line RUN_DIR        one line for one wrk run (printed as the run ends)
    report.py http TMP RESULTS_DIR     the HTTP summary: medians, ratios, the count check
    report.py udp-line RUN_DIR         one line for one UDP run
    report.py udp TMP RESULTS_DIR      the UDP summary

The summaries are printed and written to RESULTS_DIR as <kind>-<UTC time>.txt and .json.
Standard library only.
"""
import json
import os
import statistics
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- reading the raw files ----

def read(path, default=None):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return default


def kv_file(path):
    out = {}
    for line in (read(path, "") or "").splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    return out


def prom(path):
    """Prometheus text -> {"name{labels}": float}."""
    out = {}
    for line in (read(path, "") or "").splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(" ", 1)
        if len(parts) == 2:
            try:
                out[parts[0]] = float(parts[1])
            except ValueError:
                pass
    return out


def prom_delta(d, name):
    m0, m1 = prom(os.path.join(d, "m0.prom")), prom(os.path.join(d, "m1.prom"))
    return m1.get(name, 0) - m0.get(name, 0), m0, m1


def proc_stat(path):
    """/proc/stat -> {"cpu0": [user, nice, system, idle, iowait, irq, softirq, steal]}."""
    out = {}
    for line in (read(path, "") or "").splitlines():
        f = line.split()
        if f and f[0].startswith("cpu"):
            out[f[0]] = [int(x) for x in f[1:9]]
    return out


def cpu_usage(d):
    """Busy and steal percent per CPU between stat0 and stat1 (the whole machine)."""
    s0, s1 = proc_stat(os.path.join(d, "stat0")), proc_stat(os.path.join(d, "stat1"))
    out = {}
    for cpu in s1:
        if cpu not in s0:
            continue
        diff = [b - a for a, b in zip(s0[cpu], s1[cpu])]
        total = sum(diff) or 1
        idle = diff[3] + diff[4]
        out[cpu] = {"busy_pct": round(100.0 * (total - idle) / total, 1),
                    "task_pct": round(100.0 * (diff[0] + diff[1] + diff[2]) / total, 1),
                    "irq_pct": round(100.0 * (diff[5] + diff[6]) / total, 1),
                    "steal_pct": round(100.0 * diff[7] / total, 1)}
    return out


def parse_cpulist(text):
    """taskset's list ("1", "2-3", "0,2-3") -> ["cpu1", ...]; empty -> all."""
    cpus = []
    for part in (text or "").split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            cpus += [f"cpu{i}" for i in range(int(a), int(b) + 1)]
        elif part.strip():
            cpus.append(f"cpu{int(part)}")
    return cpus


def busy_of(usage, cpus, key="busy_pct"):
    """Mean busy (or task_pct, irq_pct) percent of these CPUs (all CPUs when none are named)."""
    names = cpus or [c for c in usage if c != "cpu"]
    vals = [usage[c][key] for c in names if c in usage]
    return round(sum(vals) / len(vals), 1) if vals else None


def ticks_delta(d, name0="cpu0", name1="cpu1"):
    a, b = read(os.path.join(d, name0)), read(os.path.join(d, name1))
    if a is None or b is None:
        return None
    return (int(b) - int(a)) / CLK_TCK


# clickd counters worth showing when they move during a run.
NOTABLE = ("clickd_duplicates_total", "clickd_backpressure_total", "clickd_udp_drops_total",
           "clickd_shard_sink_full_total", "clickd_dedup_evicted_total",
           "clickd_http_connections_refused_total", "clickd_udp_truncated_total")


def clickd_deltas(m0, m1):
    """Deltas of the notable counters, of the sink failures and dead letters (non-zero only)."""
    out = {}
    for k in m1:
        base = k.split("{", 1)[0]
        if base in NOTABLE or base in ("clickd_sink_failures_total", "clickd_dead_letters_total"):
            v = m1[k] - m0.get(k, 0)
            if v:
                out[k] = int(v)
    return out


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_int(x):
    return "-" if x is None else f"{x:,.0f}"


def fmt_ratio(x):
    return "-" if x is None else f"{x:.3f}"


def fmt_us(x):
    if x is None:
        return "-"
    return f"{x / 1000:.2f}ms" if x >= 1000 else f"{x:.0f}us"


def contention_warning(runs):
    worst = max((r.get("others_on_server_cpus_pct") or 0 for r in runs), default=0)
    steal = max((c["steal_pct"] for r in runs for c in r["machine_cpu"].values()), default=0)
    if worst >= 10 or steal >= 5:
        return (f"  WARNING: the machine was busy with other work (others on the server CPUs up to"
                f" {worst:.0f}%, steal up to {steal:.0f}%): throughput figures are unreliable; the per"
                f" CPU-s ratio holds up better. Run again when the machine is quiet.")
    return f"  machine quiet enough: others on the server CPUs at most {worst:.0f}%, steal {steal:.0f}%"


def write_results(results_dir, kind, text, data):
    os.makedirs(results_dir, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = os.path.join(results_dir, f"{kind}-{stamp}")
    with open(base + ".txt", "w") as f:
        f.write(text)
    with open(base + ".json", "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    return base


# ---- HTTP ----

def http_run(d, connections=None):
    meta = kv_file(os.path.join(d, "meta"))
    wrk = None
    for line in (read(os.path.join(d, "wrk.out"), "") or "").splitlines():
        if line.startswith("WRK_RESULT "):
            wrk = json.loads(line[len("WRK_RESULT "):])
    if wrk is None:
        raise SystemExit(f"report.py: no WRK_RESULT in {d}/wrk.out")
    secs = wrk["duration_us"] / 1e6
    ok = wrk["requests"] - wrk["non2xx"]
    r = {
        "target": meta["target"],
        "round": int(meta["round"]),
        "requests": wrk["requests"],
        "ok_2xx": ok,
        "non2xx": wrk["non2xx"],
        "socket_errors": {k[4:]: wrk[k] for k in ("err_connect", "err_read", "err_write",
                                                   "err_timeout")},
        "seconds": round(secs, 3),
        "req_per_s": wrk["requests"] / secs,
        "ok_per_s": ok / secs,
        "events_per_s": ok * wrk["batch"] / secs,
        "batch": wrk["batch"],
        "p50_us": wrk["p50_us"], "p90_us": wrk["p90_us"], "p99_us": wrk["p99_us"],
        "max_us": wrk["max_us"],
        "machine_cpu": cpu_usage(d),
    }
    server_cpus = parse_cpulist(meta.get("server_cpus"))
    r["server_cpus_busy_pct"] = busy_of(r["machine_cpu"], server_cpus)
    cpu_s = ticks_delta(d)
    if cpu_s is not None:
        r["server_cpu_s"] = round(cpu_s, 2)
        r["server_cpu_pct"] = round(100 * cpu_s / secs, 1)
        r["req_per_server_cpu_s"] = ok / cpu_s if cpu_s > 0 else None
        r["others_on_server_cpus_pct"] = others_on_server_cpus(r, server_cpus)
    t = read(os.path.join(d, "wrk.time"))
    if t:
        u, s, e = (float(x) for x in t.split()[-3:])
        r["wrk_cpu_pct"] = round(100 * (u + s) / e, 1) if e else None
    if r["target"] == "clickd":
        d204, m0, m1 = prom_delta(d, 'clickd_http_requests_total{status="204"}')
        dev, _, _ = prom_delta(d, "clickd_events_in_total")
        other = {}
        for k in m1:
            if k.startswith("clickd_http_requests_total{") and 'status="204"' not in k:
                v = m1[k] - m0.get(k, 0)
                if v:
                    other[k[len("clickd_http_requests_total"):]] = int(v)
        # A 503 answer to a batch can come after some of its beacons were taken (the ring
        # filled part-way): those are events too. Beacons in 503 answers minus the beacons
        # refused (clickd_backpressure_total counts beacons) is what was taken anyway.
        n503 = int(other.get('{status="503"}', 0))
        refused = m1.get("clickd_backpressure_total", 0) - m0.get("clickd_backpressure_total", 0)
        taken_in_503 = max(0, int(n503 * wrk["batch"] - refused))
        expected = ok * wrk["batch"]
        r["clickd"] = {
            "answered_204": int(d204),
            "events_in": int(dev),
            "events_expected_from_wrk": expected,
            "events_taken_in_503_answers": taken_in_503,
            # wrk stops counting at the end of its duration: answers in flight then are
            # counted by clickd, not by wrk (at most one per connection).
            "extra_events_in_flight": int(dev - expected - taken_in_503),
            "other_statuses": other,
            "counters": clickd_deltas(m0, m1),
        }
        slack = (connections or 10**9) * wrk["batch"]
        r["clickd"]["count_ok"] = ((0 <= dev - expected - taken_in_503 <= slack)
                                   and (0 <= d204 - ok <= slack / wrk["batch"]))
    return r


def others_on_server_cpus(r, server_cpus):
    """Percent of the server CPUs' time used by other processes than the server (user and
    system time; interrupt and softirq time, which belongs to no process, is left out)."""
    n = len(server_cpus) or len([c for c in r["machine_cpu"] if c != "cpu"]) or 1
    task = busy_of(r["machine_cpu"], server_cpus, "task_pct")
    if task is None or r.get("server_cpu_pct") is None:
        return None
    return round(max(0.0, task - r["server_cpu_pct"] / n), 1)


def cpu_note(r, load_pct=None, load_name="load"):
    """' cpu: server 71% (others on its CPUs 20%), wrk 53%, steal 0%'."""
    out = " cpu:"
    if r.get("server_cpu_pct") is not None:
        out += f" server {r['server_cpu_pct']:.0f}%"
    if r.get("others_on_server_cpus_pct") is not None:
        out += f" (others on its CPUs {r['others_on_server_cpus_pct']:.0f}%)"
    if load_pct is not None:
        out += f", {load_name} {load_pct:.0f}%"
    steal = max((c["steal_pct"] for c in r["machine_cpu"].values()), default=0)
    return out + f", steal {steal:.0f}%"


def http_line(r):
    s = (f"round {r['round']} {r['target']:<6} {r['ok_per_s']:>10,.0f} 2xx/s"
         f"  p50 {fmt_us(r['p50_us']):>7}  p99 {fmt_us(r['p99_us']):>7}  non2xx {r['non2xx']}"
         + cpu_note(r, r.get("wrk_cpu_pct"), "wrk"))
    errs = sum(r["socket_errors"].values())
    if errs:
        s += f" socket_errors {r['socket_errors']}"
    if "clickd" in r:
        c = r["clickd"]
        s += (f"  events {c['events_in']:,} (wrk 2xx x batch {c['events_expected_from_wrk']:,}"
              + (f", +{c['events_taken_in_503_answers']:,} taken from batches answered 503"
                 if c["events_taken_in_503_answers"] else "")
              + f", +{c['extra_events_in_flight']} in flight)"
              + ("" if c["count_ok"] else "  COUNT MISMATCH"))
        if c["other_statuses"]:
            s += f" other statuses {c['other_statuses']}"
        if c["counters"]:
            s += f" counters {c['counters']}"
    return s


def http_summary(tmp, results_dir):
    final = kv_file(os.path.join(tmp, "final"))
    params = dict(p.split("=", 1) for p in final.get("params", "").split())
    conns = int(params.get("connections", 0)) or None
    runs_dir = os.path.join(tmp, "runs")
    runs = [http_run(os.path.join(runs_dir, d), conns) for d in sorted(os.listdir(runs_dir))]
    measured = [r for r in runs if r["round"] > 0]
    by = {t: [r for r in measured if r["target"] == t] for t in ("clickd", "nginx")}

    def med(t, key):
        return median([r.get(key) for r in by[t]])

    rounds = sorted({r["round"] for r in measured})
    paired = []
    for n in rounds:
        c = [r for r in by["clickd"] if r["round"] == n]
        g = [r for r in by["nginx"] if r["round"] == n]
        if c and g and g[0]["ok_per_s"]:
            paired.append(c[0]["ok_per_s"] / g[0]["ok_per_s"])
    summary = {t: {k: med(t, k) for k in ("ok_per_s", "req_per_s", "events_per_s", "p50_us", "p99_us",
                                          "server_cpu_pct", "others_on_server_cpus_pct",
                                          "req_per_server_cpu_s", "wrk_cpu_pct")}
               for t in by}
    s_c, s_n = summary["clickd"], summary["nginx"]
    ratio = s_c["ok_per_s"] / s_n["ok_per_s"] if s_n["ok_per_s"] else None
    eff = (s_c["req_per_server_cpu_s"] / s_n["req_per_server_cpu_s"]
           if s_c.get("req_per_server_cpu_s") and s_n.get("req_per_server_cpu_s") else None)

    # Count check over the whole clickd process (warm-up included).
    fin = prom(os.path.join(tmp, "final.prom"))
    all_c = [r for r in runs if r["target"] == "clickd"]
    expected = sum(r["clickd"]["events_expected_from_wrk"] for r in all_c)
    taken_in_503 = sum(r["clickd"]["events_taken_in_503_answers"] for r in all_c)
    events_in = int(fin.get("clickd_events_in_total", 0))
    lines = int(final.get("lines_on_disk", -1))
    dups = int(final.get("duplicate_eids", -1))
    batch = all_c[0]["batch"] if all_c else 1
    slack = len(all_c) * (conns or 0) * batch
    non2xx_c = sum(r["non2xx"] for r in measured if r["target"] == "clickd")
    non2xx_n = sum(r["non2xx"] for r in measured if r["target"] == "nginx")
    sockerr = {t: sum(sum(r["socket_errors"].values()) for r in by[t]) for t in by}
    count = {
        "clickd_duplicates_total": int(fin.get("clickd_duplicates_total", 0)),
        "wrk_2xx_times_batch": expected,
        "clickd_events_in_total": events_in,
        "event_lines_on_disk": lines,
        "duplicate_event_ids": dups,
        "clickd_exit_code": int(final.get("clickd_exit", -1)),
        "disk_equals_metric": lines == events_in,
        "events_taken_in_503_answers": taken_in_503,
        "disk_minus_wrk": lines - expected,
        "allowed_in_flight": slack,
        "per_run_ok": all(r["clickd"]["count_ok"] for r in all_c),
    }
    count["ok"] = (count["disk_equals_metric"] and 0 <= lines - expected - taken_in_503 <= slack
                   and dups == 0 and count["clickd_exit_code"] == 0 and count["per_run_ok"])

    out = []
    w = out.append
    w("clickd HTTP ingest vs nginx `return 204` (bench/run.sh)")
    w(f"  {final.get('machine', '')}")
    w(f"  {final.get('params', '')} nginx_workers={final.get('workers')} nginx={final.get('nginx_version')}")
    w(f"  clickd {final.get('clickd')} {final.get('clickd_args')}")
    w(f"  clickd said: {final.get('clickd_note', '')}")
    w("")
    w("runs:")
    for r in measured:
        w("  " + http_line(r))
    w("")
    w(f"medians over {len(rounds)} round(s):")
    w(f"  {'':8}{'2xx/s':>12}{'p50':>9}{'p99':>9}{'server CPU':>12}{'others':>8}"
      f"{'2xx/CPU-s':>12}{'wrk CPU':>9}")
    for t in ("clickd", "nginx"):
        s = summary[t]
        scpu = "-" if s["server_cpu_pct"] is None else f"{s['server_cpu_pct']:.0f}%"
        wcpu = "-" if s["wrk_cpu_pct"] is None else f"{s['wrk_cpu_pct']:.0f}%"
        busy = "-" if s["others_on_server_cpus_pct"] is None else f"{s['others_on_server_cpus_pct']:.0f}%"
        w(f"  {t:8}{fmt_int(s['ok_per_s']):>12}{fmt_us(s['p50_us']):>9}{fmt_us(s['p99_us']):>9}"
          f"{scpu:>12}{busy:>8}{fmt_int(s['req_per_server_cpu_s']):>12}{wcpu:>9}")
    if batch > 1:
        w(f"  clickd events/s (batch {batch}): {fmt_int(s_c['events_per_s'])}")
    w("")
    w(f"  ratio clickd/nginx, 2xx answers/s (medians): {fmt_ratio(ratio)}")
    if paired:
        w(f"  ratio per round: {', '.join(fmt_ratio(x) for x in paired)}"
          f"  (median {fmt_ratio(median(paired))})")
    w(f"  ratio clickd/nginx, 2xx per server CPU-s:    {fmt_ratio(eff)}")
    w(contention_warning(measured))
    n_cpu, n_wrk = s_n.get("server_cpu_pct"), s_n.get("wrk_cpu_pct")
    if n_cpu is not None and n_wrk is not None and n_wrk >= 95 and n_cpu < 90:
        w(f"  NOTE: wrk was the bottleneck against nginx (wrk {n_wrk:.0f}% of its CPU, nginx {n_cpu:.0f}%):")
        w("  nginx could answer more than wrk asked, so the 2xx/s ratio overstates clickd;")
        w("  the per server CPU-s ratio is the figure to quote.")
    w(f"  non-2xx answers: clickd {non2xx_c}, nginx {non2xx_n};"
      f" socket errors: clickd {sockerr['clickd']}, nginx {sockerr['nginx']}")
    w("")
    w("count check (whole clickd run, warm-up included):")
    w(f"  wrk 2xx answers x beacons per request: {expected:,}")
    if taken_in_503:
        w(f"  + beacons taken from batches answered 503: {taken_in_503:,} (a client retries the whole")
        w(f"    batch; only deduplication keeps those from being written twice)")
    w(f"  clickd_events_in_total:                {events_in:,}")
    w(f"  event lines in the file sink:          {lines:,}"
      f"  (duplicate event IDs: {dups}; clickd exit code {count['clickd_exit_code']})")
    if count["clickd_duplicates_total"]:
        w(f"  clickd_duplicates_total:               {count['clickd_duplicates_total']:,} (every eid was unique!)")
    w(f"  => {'OK' if count['ok'] else 'MISMATCH'}: disk {'==' if count['disk_equals_metric'] else '!='} metric;"
      f" disk - wrk{' - taken in 503s' if taken_in_503 else ''} = {lines - expected - taken_in_503}"
      f" (answers in flight when wrk stopped, at most {slack})")
    warn = read(os.path.join(tmp, "clickd_warnings"), "")
    if warn.strip():
        w("clickd warnings/errors in its log (first 20):")
        for line in warn.splitlines():
            w("  " + line)
    w("")
    w("How to read: throughput counts 2xx answers only (a 503 is not work done); a ratio of")
    w("1.0 is nginx's speed at doing nothing but answering 204. The server CPU column says")
    w("whether the server was the bottleneck (near 100% of its CPUs) or the load generator")
    w("was (wrk CPU near 100%): in the second case 2xx/s understates the gap and the per")
    w("server CPU-s ratio is the better figure. p50/p99 are wrk's closed-loop response times.")
    text = "\n".join(out) + "\n"
    data = {"kind": "http", "params": params, "final": final, "summary": summary,
            "ratio_2xx_per_s": ratio, "ratio_per_round": paired,
            "ratio_2xx_per_server_cpu_s": eff, "count_check": count, "runs": runs}
    base = write_results(results_dir, "http", text, data)
    sys.stdout.write(text)
    print(f"results: {base}.txt {base}.json")
    return 0 if count["ok"] else 3


# ---- UDP ----

def snmp_udp(path):
    lines = [l.split() for l in (read(path, "") or "").splitlines() if l.startswith("Udp:")]
    if len(lines) < 2:
        return {}
    return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:])}


def udp_run(d):
    meta = kv_file(os.path.join(d, "meta"))
    blast = json.loads((read(os.path.join(d, "blast.out"), "") or "{}").strip().splitlines()[-1])
    s0, s1 = snmp_udp(os.path.join(d, "snmp0")), snmp_udp(os.path.join(d, "snmp1"))
    secs = blast["seconds"]
    r = {"target": meta["target"], "round": int(meta["round"]), "seconds": secs,
         "sent_datagrams": blast["sent_datagrams"], "sent_beacons": blast["sent_beacons"],
         "send_errors": blast["errors"], "rate_target": blast["rate_target"],
         "lines_per_datagram": blast["lines"],
         "kernel_rcvbuf_errors": s1.get("RcvbufErrors", 0) - s0.get("RcvbufErrors", 0),
         "machine_cpu": cpu_usage(d)}
    r["server_cpus_busy_pct"] = busy_of(r["machine_cpu"], parse_cpulist(meta.get("server_cpus")))
    if r["target"] == "clickd":
        dg, m0, m1 = prom_delta(d, "clickd_udp_datagrams_total")
        ev, _, _ = prom_delta(d, "clickd_events_in_total")
        drops, _, _ = prom_delta(d, "clickd_udp_drops_total")
        r.update(recv_datagrams=int(dg), accepted_beacons=int(ev), clickd_drops=int(drops),
                 counters=clickd_deltas(m0, m1))
    else:
        a = json.loads((read(os.path.join(d, "anchor.out"), "") or "{}").strip().splitlines()[-1])
        r.update(recv_datagrams=a["datagrams"], accepted_beacons=a["beacons"], clickd_drops=0,
                 truncated=a["truncated"])
    r["recv_datagrams_per_s"] = r["recv_datagrams"] / secs
    r["accepted_beacons_per_s"] = r["accepted_beacons"] / secs
    r["sent_datagrams_per_s"] = r["sent_datagrams"] / secs
    r["datagrams_not_received"] = r["sent_datagrams"] - r["recv_datagrams"]
    r["beacons_lost"] = r["sent_beacons"] - r["accepted_beacons"]
    r["beacons_lost_pct"] = (round(100.0 * r["beacons_lost"] / r["sent_beacons"], 2)
                             if r["sent_beacons"] else 0)
    t = read(os.path.join(d, "blast.time"))
    if t:
        u, s_, e = (float(x) for x in t.split()[-3:])
        r["sender_cpu_pct"] = round(100 * (u + s_) / e, 1) if e else None
    cpu_s = ticks_delta(d)
    if cpu_s is not None:
        r["server_cpu_pct"] = round(100 * cpu_s / secs, 1)
        r["datagrams_per_server_cpu_s"] = r["recv_datagrams"] / cpu_s if cpu_s > 0 else None
        r["beacons_per_server_cpu_s"] = r["accepted_beacons"] / cpu_s if cpu_s > 0 else None
        r["others_on_server_cpus_pct"] = others_on_server_cpus(
            r, parse_cpulist(meta.get("server_cpus")))
    return r


def udp_line(r):
    s = (f"round {r['round']} {r['target']:<6} sent {r['sent_datagrams_per_s']:>9,.0f}/s"
         f"  received {r['recv_datagrams_per_s']:>9,.0f} dgram/s"
         f"  accepted {r['accepted_beacons_per_s']:>9,.0f} beacons/s"
         f"  lost {r['beacons_lost']:,} ({r['beacons_lost_pct']}%):"
         f" not received {r['datagrams_not_received']:,} (kernel rcvbuf drops {r['kernel_rcvbuf_errors']:,})")
    if r["target"] == "clickd":
        s += f", dropped by clickd {r['clickd_drops']:,}"
    s += " " + cpu_note(r, r.get("sender_cpu_pct"), "sender")
    if r["send_errors"]:
        s += f"  send errors {r['send_errors']}"
    if r.get("counters"):
        s += f"  counters {r['counters']}"
    return s


def udp_summary(tmp, results_dir):
    final = kv_file(os.path.join(tmp, "final"))
    params = dict(p.split("=", 1) for p in final.get("params", "").split())
    runs_dir = os.path.join(tmp, "runs")
    runs = [udp_run(os.path.join(runs_dir, d)) for d in sorted(os.listdir(runs_dir))]
    measured = [r for r in runs if r["round"] > 0]
    by = {t: [r for r in measured if r["target"] == t] for t in ("clickd", "anchor")}
    keys = ("sent_datagrams_per_s", "recv_datagrams_per_s", "accepted_beacons_per_s",
            "beacons_lost_pct", "server_cpu_pct", "others_on_server_cpus_pct", "sender_cpu_pct",
            "datagrams_per_server_cpu_s", "beacons_per_server_cpu_s")
    summary = {t: {k: median([r.get(k) for r in by[t]]) for k in keys} for t in by}
    ratio = (summary["clickd"]["recv_datagrams_per_s"] / summary["anchor"]["recv_datagrams_per_s"]
             if summary["anchor"]["recv_datagrams_per_s"] else None)
    ratio_acc = (summary["clickd"]["accepted_beacons_per_s"] / summary["anchor"]["accepted_beacons_per_s"]
                 if summary["anchor"]["accepted_beacons_per_s"] else None)
    eff = (summary["clickd"]["beacons_per_server_cpu_s"] / summary["anchor"]["beacons_per_server_cpu_s"]
           if summary["clickd"].get("beacons_per_server_cpu_s") and summary["anchor"].get("beacons_per_server_cpu_s") else None)
    paired = []
    for n in sorted({r["round"] for r in measured}):
        c = [r for r in by["clickd"] if r["round"] == n]
        a = [r for r in by["anchor"] if r["round"] == n]
        if c and a and a[0]["recv_datagrams_per_s"]:
            paired.append(c[0]["recv_datagrams_per_s"] / a[0]["recv_datagrams_per_s"])

    fin = prom(os.path.join(tmp, "final.prom"))
    events_in = int(fin.get("clickd_events_in_total", 0))
    lines = int(final.get("lines_on_disk", -1))
    dups = int(final.get("duplicate_eids", -1))
    all_c = [r for r in runs if r["target"] == "clickd"]
    count = {"clickd_events_in_total": events_in, "event_lines_on_disk": lines,
             "duplicate_event_ids": dups, "clickd_exit_code": int(final.get("clickd_exit", -1)),
             "beacons_sent_to_clickd": sum(r["sent_beacons"] for r in all_c),
             "beacons_accepted_by_clickd": sum(r["accepted_beacons"] for r in all_c),
             "clickd_drops": sum(r["clickd_drops"] for r in all_c),
             "clickd_duplicates_total": int(fin.get("clickd_duplicates_total", 0))}
    count["ok"] = (lines == events_in and dups == 0 and count["clickd_exit_code"] == 0
                   and count["clickd_duplicates_total"] == 0)

    out = []
    w = out.append
    w("clickd UDP ingest vs a bare recvmmsg loop (bench/udp.sh)")
    w(f"  {final.get('machine', '')}")
    w(f"  {final.get('params', '')}")
    w(f"  clickd {final.get('clickd')} {final.get('clickd_args')}")
    w(f"  clickd said: {final.get('clickd_note', '')}")
    w("")
    w("runs:")
    for r in measured:
        w("  " + udp_line(r))
    w("")
    w(f"medians over {len(paired)} round(s):")
    w(f"  {'':8}{'sent/s':>11}{'received/s':>12}{'accepted/s':>12}{'lost':>7}{'server CPU':>12}"
      f"{'others':>8}{'sender CPU':>12}{'beacons/CPU-s':>15}")
    for t in ("clickd", "anchor"):
        s = summary[t]
        pct = lambda k: "-" if s[k] is None else f"{s[k]:.0f}%"
        w(f"  {t:8}{fmt_int(s['sent_datagrams_per_s']):>11}{fmt_int(s['recv_datagrams_per_s']):>12}"
          f"{fmt_int(s['accepted_beacons_per_s']):>12}{s['beacons_lost_pct']:>6.1f}%"
          f"{pct('server_cpu_pct'):>12}{pct('others_on_server_cpus_pct'):>8}{pct('sender_cpu_pct'):>12}"
          f"{fmt_int(s['beacons_per_server_cpu_s']):>15}")
    w("")
    w(f"  ratio clickd/anchor, datagrams received per s (medians):  {fmt_ratio(ratio)}")
    w(f"  ratio clickd/anchor, beacons accepted per s (medians):    {fmt_ratio(ratio_acc)}")
    if paired:
        w(f"  ratio per round (datagrams received): {', '.join(fmt_ratio(x) for x in paired)}")
    w(f"  ratio clickd/anchor, beacons per server CPU-s:            {fmt_ratio(eff)}")
    w(contention_warning(measured))
    a_lost = summary["anchor"]["beacons_lost_pct"] or 0
    c_lost = summary["clickd"]["beacons_lost_pct"] or 0
    if a_lost < 0.1:
        w("  NOTE: the anchor took everything the sender sent: it was not saturated, so its")
        w("  rate is the sender's speed, a floor of its capacity, and the ratios above are upper")
        w("  bounds for clickd. A receiver that keeps up sleeps and is woken per few datagrams,")
        w("  which costs the sender and the receiver CPU: compare at a fixed RATE for CPU cost.")
    if c_lost >= 0.1:
        drops = sum(r["clickd_drops"] for r in by["clickd"])
        kern = sum(r["datagrams_not_received"] for r in by["clickd"])
        w(f"  clickd lost {c_lost:.1f}% of the beacons sent (median): {drops:,} dropped by clickd"
          f" itself, {kern:,} datagrams never reached its socket, over the measured rounds.")
    w("")
    w("count check (whole clickd run, warm-up included):")
    w(f"  beacons sent to clickd {count['beacons_sent_to_clickd']:,}, accepted"
      f" {count['beacons_accepted_by_clickd']:,}, dropped by clickd (clickd_udp_drops_total)"
      f" {count['clickd_drops']:,}; the rest never reached its socket")
    w(f"  clickd_events_in_total {events_in:,}, event lines on disk {lines:,}, duplicate event IDs {dups},"
      f" clickd exit code {count['clickd_exit_code']}")
    w(f"  => {'OK' if count['ok'] else 'MISMATCH'} (disk == metric, no duplicates, clean exit)")
    warn = read(os.path.join(tmp, "clickd_warnings"), "")
    if warn.strip():
        w("clickd warnings/errors in its log (first 20):")
        for line in warn.splitlines():
            w("  " + line)
    w("")
    w("How to read: 'received' is datagrams taken off the socket, 'accepted' beacons decoded")
    w("and handed on (for the anchor: lines counted). 'lost' = beacons sent - accepted: what")
    w("never reached the socket (kernel receive-buffer drops) plus what clickd dropped itself")
    w("(a full ring to a shard). With an unpaced sender, check the sender's CPU: if the")
    w("sender is the bottleneck neither receiver is overloaded and received/s is the sender's")
    w("speed; RATE=<datagrams/s> measures losses at a fixed load.")
    text = "\n".join(out) + "\n"
    data = {"kind": "udp", "params": params, "final": final, "summary": summary,
            "ratio_recv_per_s": ratio, "ratio_accepted_per_s": ratio_acc,
            "ratio_per_round": paired,
            "ratio_per_server_cpu_s": eff, "count_check": count, "runs": runs}
    base = write_results(results_dir, "udp", text, data)
    sys.stdout.write(text)
    print(f"results: {base}.txt {base}.json")
    return 0 if count["ok"] else 3


def main(argv):
    if len(argv) >= 3 and argv[1] == "http-line":
        print(http_line(http_run(argv[2])))
        return 0
    if len(argv) >= 4 and argv[1] == "http":
        return http_summary(argv[2], argv[3])
    if len(argv) >= 3 and argv[1] == "udp-line":
        print(udp_line(udp_run(argv[2])))
        return 0
    if len(argv) >= 4 and argv[1] == "udp":
        return udp_summary(argv[2], argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
