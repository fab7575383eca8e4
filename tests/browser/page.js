// page.js - what a site does with its tracker, one tracker per page load.
//
// page.html?tracker=snowplow|segment|rudderstack|ga4&collector=http://127.0.0.1:PORT&tag=T
// (plus the UTM parameters of the visit) loads the tracker's unmodified bundle from the
// page server (/modules/...), points it at the collector, sends a page view, a custom
// event and a conversion, then sets window.__sent. The driver (run.mjs) waits for that and
// for the tracker's queue to empty. `tag` makes the event names and IDs of a run unique.
(function () {
  "use strict";
  const params = new URLSearchParams(location.search);
  const tracker = params.get("tracker");
  const collector = params.get("collector");
  const tag = params.get("tag") || "t";
  window.__sent = false;
  window.__errors = [];

  function load(src) {
    return new Promise(function (resolve, reject) {
      const s = document.createElement("script");
      s.src = src;
      s.onload = resolve;
      s.onerror = function () { reject(new Error("cannot load " + src)); };
      document.head.appendChild(s);
    });
  }

  function fail(e) {
    window.__errors.push(String(e && e.stack || e));
  }

  const run = {
    async snowplow() {
      await load("/modules/@snowplow/browser-tracker/dist/index.umd.min.js");
      const sp = window.snowplowBrowserTracking;
      sp.newTracker("sp", collector, {
        appId: "shop-snowplow",
        platform: "web",
        eventMethod: "post",
        bufferSize: 1,
        contexts: { webPage: true },
        cookieSameSite: "Lax",
      });
      sp.trackPageView();
      sp.trackStructEvent({ category: "shop", action: "add-to-basket", label: "sku-" + tag,
                            property: "size-m", value: 2 });
      sp.trackSelfDescribingEvent({
        event: { schema: "iglu:com.example/checkout/jsonschema/1-0-0",
                 data: { order: "o-" + tag, total: 42.5 } },
      });
      window.__queueKeys = ["snowplowOutQueue_sp_post2"];
    },

    async segment() {
      await load("/modules/@segment/analytics-next/dist/umd/index.js");
      const origin = location.origin;
      const host = collector.replace(/^https?:\/\//, "");
      const [analytics] = await window.AnalyticsNext.AnalyticsBrowser.load({
        writeKey: "wk-segment",
        cdnURL: origin + "/segment-cdn",
        cdnSettings: {
          integrations: { "Segment.io": { apiKey: "wk-segment", apiHost: host + "/v1",
                                          protocol: "http" } },
        },
      }, { integrations: { "Segment.io": { apiHost: host + "/v1", protocol: "http" } } });
      await analytics.page();
      await analytics.track("Product Added", { sku: "sku-" + tag });
      await analytics.track("Order Completed", { order_id: "o-" + tag, revenue: 42.5,
                                                 currency: "EUR" });
      window.__queueKeys = ["persisted-queue:v1:wk-segment:dest-Segment.io"];
    },

    async rudderstack() {
      await load("/modules/@rudderstack/analytics-js/dist/npm/legacy/bundled/umd/index.js");
      const ra = new window.rudderanalytics.RudderAnalytics();
      await new Promise(function (resolve) {
        ra.load("wk-rudderstack", collector, {
          logLevel: "ERROR",
          polyfillIfRequired: false,
          getSourceConfig: function () {
            return { source: { id: "src-test", name: "clickd test", enabled: true,
                               workspaceId: "ws-test", config: {}, destinations: [] } };
          },
          onLoaded: resolve,
        });
      });
      ra.page();
      ra.track("Product Added", { sku: "sku-" + tag });
      ra.track("Order Completed", { order_id: "o-" + tag, revenue: 42.5, currency: "EUR" });
      window.__queueKeys = null; // found by name in the driver (rudder's keys carry an id)
    },

    async ga4() {
      // gtag.js is not on npm: the page sends what gtag sends (TRACKERS.md), with
      // sendBeacon, a shared query and one event per body line.
      const start = Math.floor(Date.now() / 1000);
      const shared = new URLSearchParams({
        v: "2", tid: "G-CLICKD01", gtm: "45je4b10v9", _p: String(Date.now()),
        cid: "1234567890." + start, ul: "en-us", sr: "1280x720", sid: String(start), sct: "1",
        seg: "1", dl: location.href, dr: document.referrer, dt: document.title,
      });
      const first = new URLSearchParams(shared);
      first.set("en", "page_view");
      first.set("_fv", "1");
      first.set("_ss", "1");
      if (!navigator.sendBeacon(collector + "/g/collect?" + first.toString(), ""))
        throw new Error("sendBeacon refused the page view");
      const body = [
        "en=add_to_cart&ep.sku=sku-" + tag,
        "en=purchase&ep.transaction_id=o-" + tag + "&epn.value=42.5&cu=EUR",
      ].join("\r\n");
      if (!navigator.sendBeacon(collector + "/g/collect?" + shared.toString(), body))
        throw new Error("sendBeacon refused the batch");
      window.__queueKeys = [];
    },
  };

  (async function () {
    try {
      if (!run[tracker])
        throw new Error("unknown tracker " + tracker);
      await run[tracker]();
    } catch (e) {
      fail(e);
    }
    window.__sent = true;
  })();
})();
