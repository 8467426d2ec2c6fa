-- wrk.lua: the request generator of tests/bench/bench.sh, configured by the environment.
--
--   BENCH_METHOD        GET or POST (default GET)
--   BENCH_PATH          request path (default: the path of the URL)
--   BENCH_BODY_FILE     file whose bytes are the request body (POST)
--   BENCH_CONTENT_TYPE  Content-Type of the body (default application/json)
--   BENCH_AUTH          sent as "Authorization: Bearer <value>" when not empty
--   BENCH_SIGNED_FILE   Standard Webhooks deliveries, one "id timestamp signature"
--                       line each; every request carries the next line's headers,
--                       so each webhook-id is sent once (a reuse is counted)
--   BENCH_WRK_THREADS   wrk's -t, to split the lines and the request cap
--   BENCH_MAX           stop after about this many responses (0: only -d bounds it);
--                       each thread marks BENCH_RESULT.done.<n> when it has its share
--   BENCH_EXPECT        the status every response must have (default 200)
--   BENCH_RESULT        where done() writes its JSON summary
--   BENCH_RATE          about this many requests per second in all (0: as fast as
--                       the server answers); needs BENCH_CONNECTIONS, wrk's -c
--
-- Each wrk thread has its own Lua state: request()/response() count into
-- globals that done() reads back with thread:get().

local threads = {}

function setup(thread)
	table.insert(threads, thread)
	thread:set("tid", #threads)
end

local function slurp(path)
	local f = assert(io.open(path, "rb"))
	local s = f:read("*a")
	f:close()
	return s
end

local reqs, nreqs, idx = nil, 0, 0
local fixed
local limit = 0
local expect = tonumber(os.getenv("BENCH_EXPECT") or "200")
local pause_ms = 0	-- per connection between a response and its next request

-- globals read by done()
responses, unexpected, reused, first_bad = 0, 0, 0, ""

function init(args)
	local method = os.getenv("BENCH_METHOD") or "GET"
	local path = os.getenv("BENCH_PATH")	-- nil: the URL's path
	local nthreads = tonumber(os.getenv("BENCH_WRK_THREADS") or "1")
	local tid = wrk.thread:get("tid")
	local body, headers = nil, {}
	local auth = os.getenv("BENCH_AUTH") or ""

	if auth ~= "" then
		headers["Authorization"] = "Bearer " .. auth
	end

	if os.getenv("BENCH_BODY_FILE") then
		body = slurp(os.getenv("BENCH_BODY_FILE"))
		headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") or "application/json"
	end
	local rate = tonumber(os.getenv("BENCH_RATE") or "0")
	if rate > 0 then
		-- each connection waits (pause + round trip) per request; the round
		-- trip of an unloaded server is about a millisecond
		local conns = tonumber(os.getenv("BENCH_CONNECTIONS") or "1")
		pause_ms = math.max(0, math.floor(conns * 1000 / rate - 1 + 0.5))
	end
	local max = tonumber(os.getenv("BENCH_MAX") or "0")
	if max > 0 then
		limit = math.ceil(max / nthreads)
	end
	local signed = os.getenv("BENCH_SIGNED_FILE")
	if signed then
		-- this thread's share of the lines, formatted once up front
		reqs = {}
		local n = 0
		for line in io.lines(signed) do
			n = n + 1
			if n % nthreads == tid - 1 then
				local id, ts, sig = line:match("^(%S+) (%S+) (%S+)$")
				headers["webhook-id"] = id
				headers["webhook-timestamp"] = ts
				headers["webhook-signature"] = sig
				nreqs = nreqs + 1
				reqs[nreqs] = wrk.format(method, path, headers, body)
			end
		end
		assert(nreqs > 0, "no signed deliveries for this thread")
	else
		fixed = wrk.format(method, path, headers, body)
	end
end

function delay()
	return pause_ms
end

function request()
	if reqs == nil then
		return fixed
	end
	idx = idx + 1
	if idx > nreqs then
		reused = reused + 1	-- past the last line: ids repeat from here on
		return reqs[(idx - 1) % nreqs + 1]
	end
	return reqs[idx]
end

function response(status, headers, body)
	responses = responses + 1
	if status ~= expect then
		unexpected = unexpected + 1
		if first_bad == "" then
			first_bad = tostring(status) .. " " .. string.sub(body or "", 1, 200)
		end
	end
	if limit > 0 and responses == limit then
		-- this thread is done; bench.sh ends wrk (SIGINT: a normal
		-- summary) once every thread has left its mark
		local path = os.getenv("BENCH_RESULT")
		if path then
			local f = io.open(path .. ".done." .. wrk.thread:get("tid"), "w")
			if f then f:close() end
		end
		wrk.thread:stop()
	end
end

local function jstr(s)
	return '"' .. string.gsub(s, '[%c"\\]', function(c)
		return string.format("\\u%04x", string.byte(c))
	end) .. '"'
end

function done(summary, latency, requests)
	local resp, bad, reuse, first = 0, 0, 0, ""
	for _, t in ipairs(threads) do
		resp = resp + (t:get("responses") or 0)
		bad = bad + (t:get("unexpected") or 0)
		reuse = reuse + (t:get("reused") or 0)
		if first == "" then
			first = t:get("first_bad") or ""
		end
	end
	local e = summary.errors
	local out = string.format(
	    '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
	    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
	    '"unexpected_status":%d,"first_unexpected":%s,"reused_ids":%d,' ..
	    '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\n',
	    summary.requests, summary.duration, summary.bytes,
	    e.connect, e.read, e.write, e.status, e.timeout,
	    bad, jstr(first), reuse,
	    latency.mean, latency:percentile(50), latency:percentile(90),
	    latency:percentile(99), latency.max)
	local path = os.getenv("BENCH_RESULT")
	if path then
		local f = assert(io.open(path, "w"))
		f:write(out)
		f:close()
	else
		io.write(out)
	end
end
