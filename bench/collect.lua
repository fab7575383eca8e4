-- bench/collect.lua - a wrk script that sends varied clickd beacons.
--
--   wrk -t1 -c50 -d10s -s bench/collect.lua http://127.0.0.1:PORT -- [key=value ...]
--
-- Script arguments (after --), all optional:
--   mode=get|post    GET /collect?<query> (default), or POST /collect with a JSON array
--   batch=N          beacons per POST body (default 10; mode=post only)
--   run=ID           prefix of every event ID (default: time-based); give each wrk run its
--                    own so that no two beacons of a benchmark share an eid (dedup would
--                    drop them and the count check would fail)
--   visitors=N       size of the visitor pool (default 20000)
--   novid_pct=P      percent of beacons without vid, so clickd sets a cookie (default 5)
--   conv_pct=P       percent of conversions with revenue (default 5)
--   ev_pct=P         percent of custom events (default 10)
--   tagged_pct=P     percent of beacons on a landing URL with UTM tags and/or a click ID
--                    (default 10); the others are on plain pages
--   ext_ref_pct=P    percent with a referrer from another site (default 15)
--   self_ref_pct=P   percent with a referrer from the page's own host (default 65); the
--                    rest have none (direct)
--   seed=N           random seed (default 1); the same seed gives the same mix
--
-- Every beacon has a unique eid: <run>-<thread>-<counter>. The mix: 3 app IDs, a visitor
-- pool, page URLs plain or tagged (UTM tags, click IDs: gclid, msclkid, fbclid, ... or
-- both); referrers from search engines, social sites, other sites, the same host, or none;
-- browser and bot user agents; page views, custom events, conversions with revenue. A
-- tagged URL or another site's referrer starts a new session in clickd, so tagged_pct
-- and ext_ref_pct set how many touchpoint records are written next to the events.
--
-- At the end the script prints one line that bench/run.sh parses:
--   WRK_RESULT {"requests":...,"duration_us":...,"non2xx":...,"p50_us":...,...}
-- ("non2xx" is wrk's count of answers with a status >= 400; clickd and nginx answer no 3xx.)

local mode, batch, run_id = "get", 10, nil
local visitors, novid_pct, conv_pct, ev_pct, seed = 20000, 5, 5, 10, 1
local tagged_pct, ext_ref_pct, self_ref_pct = 10, 15, 65

local threads = {}
local thread_id = 0
local counter = 0
local ts_base = 0

-- ---- the pools (built once per thread in init) ----

local function urlencode(s)
	return (s:gsub("[^%w%-%._~]", function(c)
		return string.format("%%%02X", string.byte(c))
	end))
end

local function json_string(s)
	return '"' .. s:gsub('[%c"\\]', function(c)
		return string.format("\\u%04x", string.byte(c))
	end) .. '"'
end

local apps = { "shop", "blog", "docs" }
local hosts = { shop = "shop.example", blog = "blog.example.org", docs = "docs.example.net" }
local paths = { "/", "/products/42", "/products/7?color=red", "/cart", "/checkout",
	"/blog/2024/launch", "/search?q=running+shoes", "/account/orders", "/pricing",
	"/de/produkte/schuh-%C3%BC" }
local utm_sets = {
	"utm_source=newsletter&utm_medium=email&utm_campaign=nov_sale",
	"utm_source=google&utm_medium=cpc&utm_campaign=brand&utm_term=running%20shoes",
	"utm_source=facebook&utm_medium=paid_social&utm_campaign=retarget&utm_content=carousel",
	"utm_source=partner42&utm_medium=affiliate&utm_campaign=q4",
	"utm_source=tiktok&utm_medium=social&utm_id=c-991",
}
local click_ids = { "gclid", "gbraid", "wbraid", "dclid", "msclkid", "fbclid", "ttclid",
	"li_fat_id", "twclid" }
local referrers = {
	"https://www.google.com/", "https://www.google.de/search?q=shoes", "https://www.bing.com/",
	"https://duckduckgo.com/", "https://m.facebook.com/", "https://t.co/abc123",
	"https://www.linkedin.com/feed/", "https://news.ycombinator.com/item?id=1",
	"https://partner.example.com/deals", "https://mail.google.com/",
}
local uas = {
	"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
	"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
	"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
	"Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
	"Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36",
	"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
}
local event_names = { "add_to_cart", "video_play", "signup_start", "scroll_90" }
local conv_names = { "purchase", "signup", "lead" }
local currencies = { "EUR", "USD", "GBP" }

-- Pages: { app, raw url }. Plain pages (internal navigation, most page views) and tagged
-- landing pages: with UTM tags, with a click ID, or both.
local plain_pages, tagged_pages = {}, {}
local function build_pages()
	for _, app in ipairs(apps) do
		for pi, path in ipairs(paths) do
			local base = "https://" .. hosts[app] .. path
			local sep = path:find("?", 1, true) and "&" or "?"
			plain_pages[#plain_pages + 1] = { app = app, url = base }
			for ui, utm in ipairs(utm_sets) do
				tagged_pages[#tagged_pages + 1] = { app = app, url = base .. sep .. utm }
				tagged_pages[#tagged_pages + 1] = { app = app, url = base .. sep .. utm .. "&" ..
					click_ids[((pi + ui) % #click_ids) + 1] .. "=abc" .. pi .. ui }
			end
			for ci, cid in ipairs(click_ids) do
				tagged_pages[#tagged_pages + 1] = { app = app, url = base .. sep .. cid ..
					"=Cj0KCQ" .. pi .. "x" .. ci }
			end
		end
	end
	for _, list in ipairs({ plain_pages, tagged_pages }) do
		for _, p in ipairs(list) do
			p.enc = urlencode(p.url)
			-- a same-host referrer for this page (internal navigation: not a new touch)
			p.self_ref = "https://" .. hosts[p.app] .. "/"
			p.self_ref_enc = urlencode(p.self_ref)
		end
	end
end

local ref_enc = {}
local function pick(t)
	return t[math.random(#t)]
end

-- ---- wrk hooks ----

function setup(thread)
	threads[#threads + 1] = thread
	thread:set("tid", #threads)
end

function init(args)
	for _, a in ipairs(args) do
		local k, v = a:match("^([%w_]+)=(.*)$")
		if k == "mode" then mode = v
		elseif k == "batch" then batch = tonumber(v)
		elseif k == "run" then run_id = v
		elseif k == "visitors" then visitors = tonumber(v)
		elseif k == "novid_pct" then novid_pct = tonumber(v)
		elseif k == "conv_pct" then conv_pct = tonumber(v)
		elseif k == "ev_pct" then ev_pct = tonumber(v)
		elseif k == "seed" then seed = tonumber(v)
		elseif k == "tagged_pct" then tagged_pct = tonumber(v)
		elseif k == "ext_ref_pct" then ext_ref_pct = tonumber(v)
		elseif k == "self_ref_pct" then self_ref_pct = tonumber(v)
		else error("collect.lua: unknown argument '" .. a .. "'") end
	end
	if mode ~= "get" and mode ~= "post" then error("collect.lua: mode must be get or post") end
	thread_id = tid or 0
	bench_mode, bench_batch = mode, batch -- globals, read by done() through threads[1]
	run_id = run_id or ("r" .. os.time())
	math.randomseed(seed * 7919 + thread_id)
	ts_base = os.time() * 1000
	build_pages()
	for i, r in ipairs(referrers) do ref_enc[i] = urlencode(r) end
end

-- One beacon as a list of {key, value} pairs (raw values; encoded by the caller).
local function beacon()
	counter = counter + 1
	local p = math.random(100) <= tagged_pct and pick(tagged_pages) or pick(plain_pages)
	local f = { { "eid", run_id .. "-" .. thread_id .. "-" .. counter }, { "aid", p.app } }
	if math.random(100) > novid_pct then
		f[#f + 1] = { "vid", "v" .. math.random(visitors) }
	end
	local roll = math.random(100)
	if roll <= conv_pct then
		f[#f + 1] = { "e", "cv" }
		f[#f + 1] = { "en", pick(conv_names) }
		f[#f + 1] = { "rev", string.format("%d.%02d", math.random(5, 400), math.random(0, 99)) }
		f[#f + 1] = { "cur", pick(currencies) }
		f[#f + 1] = { "uid", "u" .. math.random(visitors / 4) }
	elseif roll <= conv_pct + ev_pct then
		f[#f + 1] = { "e", "ev" }
		f[#f + 1] = { "en", pick(event_names) }
	end
	f[#f + 1] = { "url", p.url, p.enc }
	local r = math.random(100)
	if r <= ext_ref_pct then
		local i = math.random(#referrers)
		f[#f + 1] = { "ref", referrers[i], ref_enc[i] }
	elseif r <= ext_ref_pct + self_ref_pct then
		f[#f + 1] = { "ref", p.self_ref, p.self_ref_enc }
	end -- else: no referrer (direct)
	f[#f + 1] = { "ts", tostring(ts_base + counter) }
	return f
end

local function query(f)
	local parts = {}
	for i, kv in ipairs(f) do
		parts[i] = kv[1] .. "=" .. (kv[3] or urlencode(kv[2]))
	end
	return table.concat(parts, "&")
end

local function json_object(f)
	local parts = {}
	for i, kv in ipairs(f) do
		local v = kv[1] == "rev" and kv[2] or json_string(kv[2])
		parts[i] = json_string(kv[1]) .. ":" .. v
	end
	return "{" .. table.concat(parts, ",") .. "}"
end

function request()
	local headers = { ["User-Agent"] = pick(uas), ["Accept-Language"] = "en-US,en;q=0.9" }
	if mode == "get" then
		return wrk.format("GET", "/collect?" .. query(beacon()), headers)
	end
	local objs = {}
	for i = 1, batch do objs[i] = json_object(beacon()) end
	headers["Content-Type"] = "application/json"
	return wrk.format("POST", "/collect", headers, "[" .. table.concat(objs, ",") .. "]")
end

function done(summary, latency, requests)
	-- done() runs in wrk's main Lua state, where init() never ran: take the mode from a thread.
	local m, b = threads[1]:get("bench_mode") or mode, threads[1]:get("bench_batch") or batch
	local e = summary.errors
	io.write(string.format(
		'WRK_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"non2xx":%d,' ..
		'"err_connect":%d,"err_read":%d,"err_write":%d,"err_timeout":%d,' ..
		'"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
		'"mode":"%s","batch":%d}\n',
		summary.requests, summary.duration, summary.bytes, e.status,
		e.connect, e.read, e.write, e.timeout,
		latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
		latency.mean, m, m == "post" and b or 1))
end
