// run.mjs - opens pages with the real trackers in headless Chromium and reports what they sent.
//
//   node run.mjs SPEC.json
//
// SPEC: {"modules": node_modules dir (browser.sh install), "chromium": "/usr/bin/chromium",
//        "collector": "http://127.0.0.1:PORT" (clickd) or "capture" (a stub collector in
//        this process that answers as TRACKERS.md says and records every request, preflights
//        included), "visits": [{"tracker", "query", "referer", "tag"}], "timeout_ms",
//        "fail_first": N (optional: a fault proxy between the browser and the collector
//        forwards every request but answers the first N POSTs 503 with Retry-After: 1, as a
//        load balancer does whose upstream answer was lost; the tracker must re-send, the
//        collector then sees those events twice and must keep them once)}
// Prints one JSON object: per visit the collector requests the browser made (method, URL,
// status, headers, body), failed requests, page errors, the tracker's queue left in
// localStorage, and in capture mode the stub's raw log.
//
// This process serves the test page and the trackers' bundles on 127.0.0.1 (port 0): a
// different origin from the collector, so every call is cross-origin as on a real site.
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const spec = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const { chromium } = await import(path.join(spec.modules, "node_modules/playwright-core/index.mjs"));

const TYPES = { ".js": "text/javascript", ".mjs": "text/javascript", ".html": "text/html",
                ".json": "application/json" };

function listen(server) {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server.address().port)));
}

// The page server: page.html, page.js, /modules/<package files>, and Segment's "CDN"
// (/segment-cdn/analytics-next/bundles/<chunk>: the UMD build's lazy chunks).
const pageServer = http.createServer((req, res) => {
  const url = new URL(req.url, "http://x");
  let file = null;
  if (url.pathname === "/favicon.ico") {
    res.writeHead(204);
    res.end();
    return;
  }
  if (url.pathname === "/page.html" || url.pathname === "/page.js")
    file = path.join(here, url.pathname);
  else if (url.pathname.startsWith("/modules/"))
    file = path.join(spec.modules, "node_modules", url.pathname.slice("/modules/".length));
  else if (url.pathname.startsWith("/segment-cdn/analytics-next/bundles/"))
    file = path.join(spec.modules, "node_modules/@segment/analytics-next/dist/umd",
                     path.basename(url.pathname));
  if (!file || file.includes("..") || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
    res.writeHead(404, { "Content-Type": "text/plain" });
    res.end("not found");
    return;
  }
  res.writeHead(200, { "Content-Type": TYPES[path.extname(file)] || "application/octet-stream",
                       "Cache-Control": "no-store" });
  fs.createReadStream(file).pipe(res);
});

// The stub collector of capture mode: the answers TRACKERS.md names, CORS as CONTRACTS.md.
const GIF = Buffer.from("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7", "base64");
const stubLog = [];
const stub = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const body = Buffer.concat(chunks);
    stubLog.push({ method: req.method, url: req.url, headers: req.headers,
                   body: body.toString("utf8") });
    const h = {};
    if (req.headers.origin) {
      h["Access-Control-Allow-Origin"] = req.headers.origin;
      h["Access-Control-Allow-Credentials"] = "true";
      h["Vary"] = "Origin";
    }
    if (req.method === "OPTIONS") {
      h["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS";
      if (req.headers["access-control-request-headers"])
        h["Access-Control-Allow-Headers"] = req.headers["access-control-request-headers"];
      h["Access-Control-Max-Age"] = "3600";
      res.writeHead(204, h);
      res.end();
      return;
    }
    const p = new URL(req.url, "http://x").pathname;
    if (p === "/com.snowplowanalytics.snowplow/tp2") {
      res.writeHead(200, { ...h, "Content-Type": "text/plain" });
      res.end("ok");
    } else if (p === "/i" || p === "/ice.png") {
      res.writeHead(200, { ...h, "Content-Type": "image/gif",
                           "Cache-Control": "no-cache, no-store, must-revalidate" });
      res.end(GIF);
    } else if (p.startsWith("/v1/") || p.startsWith("/beacon/")) {
      res.writeHead(200, { ...h, "Content-Type": "application/json" });
      res.end("{}");
    } else {
      res.writeHead(204, h);
      res.end();
    }
  });
});

// The fault proxy (spec.fail_first): forwards everything, answers the first N POSTs 503.
let failuresLeft = spec.fail_first || 0;
const proxyLog = [];
function proxyTo(target) {
  return http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const up = http.request(new URL(req.url, target), { method: req.method,
                                                          headers: req.headers }, (ur) => {
        const back = [];
        ur.on("data", (c) => back.push(c));
        ur.on("end", () => {
          const fail = req.method === "POST" && failuresLeft > 0;
          if (fail)
            failuresLeft--;
          proxyLog.push({ method: req.method, url: req.url, upstream: ur.statusCode,
                          answered: fail ? 503 : ur.statusCode });
          if (fail) {
            const h = { "Retry-After": "1", "Content-Type": "text/plain" };
            for (const k of ["access-control-allow-origin", "access-control-allow-credentials",
                             "vary"])
              if (ur.headers[k])
                h[k] = ur.headers[k];
            res.writeHead(503, h);
            res.end("busy, retry later");
          } else {
            res.writeHead(ur.statusCode, ur.headers);
            res.end(Buffer.concat(back));
          }
        });
      });
      up.on("error", (e) => {
        proxyLog.push({ method: req.method, url: req.url, error: e.message });
        res.writeHead(502);
        res.end();
      });
      up.end(body);
    });
  });
}

const pagePort = await listen(pageServer);
let collector = spec.collector;
if (collector === "capture")
  collector = "http://127.0.0.1:" + (await listen(stub));
let proxy = null;
if (spec.fail_first) {
  proxy = proxyTo(collector);
  collector = "http://127.0.0.1:" + (await listen(proxy));
}
const collectorOrigin = new URL(collector).origin;

const browser = await chromium.launch({
  executablePath: spec.chromium || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});

async function queueLeft(page, keys) {
  return page.evaluate((keys) => {
    const out = {};
    for (let i = 0; i < localStorage.length; i++) {
      const k = localStorage.key(i);
      const wanted = keys ? keys.includes(k) : /queue/i.test(k);
      if (!wanted)
        continue;
      const v = localStorage.getItem(k);
      let items = null;
      try {
        const parsed = JSON.parse(v);
        items = Array.isArray(parsed) ? parsed.length
          : parsed && Array.isArray(parsed.queue) ? parsed.queue.length
          : parsed && typeof parsed === "object" ? Object.keys(parsed).length : 0;
      } catch (e) {
        items = v && v.length ? -1 : 0; // not JSON (encoded): non-empty counts as unknown
      }
      out[k] = { items, value: String(v).slice(0, 2000) };
    }
    return out;
  }, keys);
}

function pending(left) {
  return Object.values(left).some((q) => q.items !== 0);
}

const results = [];
for (const visit of spec.visits) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const requests = [];
  const inflight = new Set();
  let lastActivity = Date.now();
  const errors = [];
  page.on("pageerror", (e) => errors.push("pageerror: " + e.message));
  page.on("console", (m) => { if (m.type() === "error") errors.push("console: " + m.text()); });
  page.on("request", (r) => {
    if (!r.url().startsWith(collectorOrigin))
      return;
    inflight.add(r);
    lastActivity = Date.now();
  });
  // A request is settled by its response (or its failure), not by "requestfinished":
  // Chromium does not report the end of a keepalive fetch whose answer says no-store
  // (Segment's), though the page has its answer.
  const settle = async (r, resp, failure) => {
    if (!r.url().startsWith(collectorOrigin) || !inflight.has(r))
      return;
    inflight.delete(r);
    lastActivity = Date.now();
    requests.push({
      method: r.method(), url: r.url(), status: resp ? resp.status() : null,
      failure: failure ? (r.failure() || {}).errorText || "failed" : null,
      headers: await r.allHeaders().catch(() => r.headers()),
      body: r.postData(),
    });
  };
  page.on("response", (resp) => settle(resp.request(), resp, false));
  page.on("requestfailed", (r) => settle(r, null, true));

  const q = new URLSearchParams(visit.query || "");
  q.set("tracker", visit.tracker);
  q.set("collector", collector);
  q.set("tag", visit.tag || "t");
  const url = "http://127.0.0.1:" + pagePort + "/page.html?" + q.toString();
  const timeout = spec.timeout_ms || 20000;
  const deadline = Date.now() + timeout;
  let left = {};
  let timedOut = false;
  try {
    await page.goto(url, { referer: visit.referer || undefined, timeout });
    await page.waitForFunction(() => window.__sent === true, null, { timeout });
    const keys = await page.evaluate(() => window.__queueKeys);
    // Done when nothing is in flight, nothing happened for a second and the queue is empty.
    for (;;) {
      left = await queueLeft(page, keys);
      if (inflight.size === 0 && Date.now() - lastActivity > 1000 && !pending(left))
        break;
      if (Date.now() > deadline) {
        timedOut = true;
        break;
      }
      await page.waitForTimeout(200);
    }
    errors.push(...(await page.evaluate(() => window.__errors)));
  } catch (e) {
    errors.push("driver: " + e.message);
  }
  results.push({ ...visit, page_url: url, requests, errors, queue_left: left,
                 timed_out: timedOut, in_flight: [...inflight].map((r) => r.method() + " " + r.url()) });
  await context.close();
}
await browser.close();
pageServer.close();
stub.close();
if (proxy)
  proxy.close();
process.stdout.write(JSON.stringify({ collector, results, stub_log: stubLog,
                                      proxy_log: proxyLog }, null, 1) + "\n");
