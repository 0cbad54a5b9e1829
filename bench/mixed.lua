-- The mixed workload (bench/mixed.py): 90 % reads over a fixed set of list pages and the
-- catalog's films, 10 % ratings. Arguments after `--`: seed, comma-separated film ids, write %.
-- request() picks from a seeded RNG per thread; response() counts statuses and X-Cache values;
-- done() sums every thread's counters and prints one MIXED_JSON line for the harness.

local PAGES = {
  "/movies?limit=50", "/movies?limit=20&offset=20", "/movies?limit=10&offset=40",
  "/movies?genre=Drama", "/movies?genre=Comedy&limit=20", "/movies?limit=5",
}

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_index", thread_count)
  table.insert(threads, thread)
end

local ids = {}
local write_pct = 10
sent = {list = 0, film = 0, rating = 0}
statuses = {}
cache = {HIT = 0, MISS = 0, BYPASS = 0, NONE = 0}

function init(args)
  local seed = tonumber(args[1]) or 12
  for id in string.gmatch(args[2] or "1", "[^,]+") do
    table.insert(ids, tonumber(id))
  end
  write_pct = tonumber(args[3]) or 10
  math.randomseed(seed + 7919 * (thread_index or 1))
end

local json_headers = {["Content-Type"] = "application/json"}

function request()
  local roll = math.random(100)
  if roll <= write_pct then
    sent.rating = sent.rating + 1
    local id = ids[math.random(#ids)]
    local body = string.format('{"user_id": %d, "score": %.1f}', math.random(5000),
      math.random(10) / 2)
    return wrk.format("POST", "/movies/" .. id .. "/ratings", json_headers, body)
  end
  if roll % 2 == 0 then
    sent.list = sent.list + 1
    return wrk.format("GET", PAGES[math.random(#PAGES)])
  end
  sent.film = sent.film + 1
  return wrk.format("GET", "/movies/" .. ids[math.random(#ids)])
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  local value = headers["x-cache"] or headers["X-Cache"]
  if value == "HIT" or value == "MISS" or value == "BYPASS" then
    cache[value] = cache[value] + 1
  else
    cache.NONE = cache.NONE + 1
  end
end

local function add_into(total, part)
  for k, v in pairs(part) do
    total[k] = (total[k] or 0) + v
  end
end

local function encode(map)
  local parts = {}
  for k, v in pairs(map) do
    table.insert(parts, string.format('"%s": %d', k, v))
  end
  table.sort(parts)
  return "{" .. table.concat(parts, ", ") .. "}"
end

function done(summary, latency, requests)
  local all_sent, all_statuses, all_cache = {}, {}, {}
  for _, thread in ipairs(threads) do
    add_into(all_sent, thread:get("sent"))
    add_into(all_statuses, thread:get("statuses"))
    add_into(all_cache, thread:get("cache"))
  end
  local e = summary.errors
  io.write(string.format(
    'MIXED_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"mean": %.2f, "max": %d, "p50": %d, "p90": %d, "p99": %d}, ' ..
    '"sent": %s, "statuses": %s, "cache": %s}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99),
    encode(all_sent), encode(all_statuses), encode(all_cache)))
end
