-- wrk script: POST one chat completion (body from $BENCH_BODY, path from $BENCH_PATH) and print a
-- JSON summary line (extra request headers from $BENCH_HEADERS) with latency percentiles (microseconds), requests sent and completed, errors.
local body = os.getenv("BENCH_BODY") or '{"model":"bench","messages":[{"role":"user","content":"Say hello."}]}'
local path = os.getenv("BENCH_PATH") or "/v1/chat/completions"
local req = nil
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  sent = 0
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer sk-bench-not-a-real-key",
  }
  -- extra headers, one "name: value" per line (Portkey's provider and custom host)
  for line in (os.getenv("BENCH_HEADERS") or ""):gmatch("[^\n]+") do
    local name, value = line:match("^([^:]+):%s*(.*)$")
    if name and name:lower() == "authorization" then name = "Authorization" end  -- a gateway key replaces ours
    if name then headers[name] = value end
  end
  req = wrk.format("POST", path, headers, body)
end

function request()
  sent = sent + 1
  return req
end

function done(summary, latency, requests)
  local total_sent = 0
  for _, t in ipairs(threads) do
    total_sent = total_sent + (t:get("sent") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"sent":%d,"duration_us":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d}\n',
    summary.requests, total_sent, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
