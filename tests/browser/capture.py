#!/usr/bin/env python3
"""capture.py - records what the real trackers send, as golden fixtures for the decoders.

    tests/browser/capture.py [OUT_DIR]   (default tests/data/protocols/captured)

Runs run.mjs in capture mode (a stub collector that answers as TRACKERS.md says) with
each tracker on a UTM-tagged page with an external referrer, and writes one JSON file per
tracker: the requests in arrival order (preflights included), each with its method,
request target, the headers a decoder may read, and the body. The decoders' golden tests
read these files; re-run this after changing a tracker's version in package.json.
Needs: npm, Debian's chromium (dev.sh installs both with the test dependencies).
"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
KEEP = ("content-type", "authorization", "origin", "referer", "user-agent", "sp-anonymous",
        "anonymousid", "sentat", "access-control-request-method",
        "access-control-request-headers", "cookie")
TRACKERS = ("snowplow", "segment", "rudderstack", "ga4")


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests/data/protocols/captured")
    modules = subprocess.run([os.path.join(HERE, "browser.sh"), "install"], check=True,
                             capture_output=True, text=True).stdout.strip()
    os.makedirs(out_dir, exist_ok=True)
    for tracker in TRACKERS:
        spec = {"modules": modules, "chromium": "/usr/bin/chromium", "collector": "capture",
                "timeout_ms": 20000,
                "visits": [{"tracker": tracker, "tag": "golden",
                            "query": "utm_source=newsletter&utm_medium=email&utm_campaign=spring",
                            "referer": "https://mail.example.com/"}]}
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(spec, f)
        try:
            run = subprocess.run(["node", os.path.join(HERE, "run.mjs"), f.name], check=True,
                                 capture_output=True, text=True, timeout=120)
        finally:
            os.unlink(f.name)
        result = json.loads(run.stdout)
        visit = result["results"][0]
        if visit["errors"] or visit["timed_out"]:
            sys.exit("capture.py: %s: %r (timed out: %s)" % (tracker, visit["errors"],
                                                              visit["timed_out"]))
        requests = [{"method": r["method"], "target": r["url"],
                     "headers": {k: v for k, v in sorted(r["headers"].items()) if k in KEEP},
                     "body": r["body"]} for r in result["stub_log"]]
        path = os.path.join(out_dir, tracker + ".json")
        with open(path, "w") as f:
            json.dump({"tracker": tracker, "page_url": visit["page_url"],
                       "referrer": "https://mail.example.com/", "requests": requests}, f,
                      indent=1, sort_keys=True)
            f.write("\n")
        print("%s: %d requests -> %s" % (tracker, len(requests), os.path.relpath(path, ROOT)))


if __name__ == "__main__":
    main()
