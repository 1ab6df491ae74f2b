"""Lua scripts that make rate-limit admission and token corrections atomic on a shared Redis.

They use the `limits` package's own key layout, so its readers (``used``, ``wait_time``, `corral
limits`) see exactly what these scripts wrote:
- a moving window (requests) is a list of timestamps at ``LIMITS:<key>``, newest first;
- a sliding-window counter (tokens) is ``LIMITS:{<key>}`` (current) and ``LIMITS:{<key>}/-1``
  (previous); times in milliseconds, the current counter lives for two periods.

ADMIT checks every window of a request and charges them all only if all fit, in one script: Redis
runs a script alone, so two gateways can never both take the last slot.
"""

# KEYS: per window 1 key (moving) or 2 keys (counter: previous, current).
# ARGV: now, then per window: kind (0 moving, 1 counter), limit, expiry seconds, check amount, charge amount.
# Returns 0 when everything was charged, else the 1-based index of the first window that is full.
ADMIT = """
local now = tonumber(ARGV[1])
local windows = {}
local k, a = 1, 2
while a <= #ARGV do
  local w = {kind = tonumber(ARGV[a]), limit = tonumber(ARGV[a + 1]), expiry = tonumber(ARGV[a + 2]),
             check = tonumber(ARGV[a + 3]), charge = tonumber(ARGV[a + 4])}
  a = a + 5
  if w.kind == 0 then
    w.key = KEYS[k]; k = k + 1
  else
    w.prev = KEYS[k]; w.cur = KEYS[k + 1]; k = k + 2
  end
  windows[#windows + 1] = w
end
for i, w in ipairs(windows) do
  if w.check > w.limit then return i end
  if w.kind == 0 then
    local entry = redis.call('lindex', w.key, w.limit - w.check)
    if entry and tonumber(entry) >= now - w.expiry then return i end
  else
    local expiry = w.expiry * 1000
    local cur_ttl = tonumber(redis.call('pttl', w.cur))
    if cur_ttl > 0 and cur_ttl < expiry then
      redis.call('rename', w.cur, w.prev)
      redis.call('set', w.cur, 0, 'PX', cur_ttl + expiry)
    end
    local prev = tonumber(redis.call('get', w.prev)) or 0
    local prev_ttl = tonumber(redis.call('pttl', w.prev)) or 0
    local cur = tonumber(redis.call('get', w.cur)) or 0
    if prev_ttl < 0 then prev_ttl = 0 end
    if math.floor(prev * prev_ttl / expiry) + cur + w.check > w.limit then return i end
  end
end
for _, w in ipairs(windows) do
  if w.charge > 0 then
    if w.kind == 0 then
      for _ = 1, w.charge do redis.call('lpush', w.key, now) end
      redis.call('ltrim', w.key, 0, w.limit - 1)
      redis.call('expire', w.key, w.expiry)
    elseif redis.call('exists', w.cur) == 1 then
      redis.call('incrby', w.cur, w.charge)
    else
      redis.call('set', w.cur, w.charge, 'PX', w.expiry * 2000)
    end
  end
end
return 0
"""

# A token correction on a sliding-window counter: KEYS previous, current; ARGV expiry seconds, delta.
# A give-back never takes the current window below zero (the estimate may sit in a window that ended).
CORRECT = """
local expiry = tonumber(ARGV[1]) * 1000
local delta = tonumber(ARGV[2])
local cur_ttl = tonumber(redis.call('pttl', KEYS[2]))
if cur_ttl > 0 and cur_ttl < expiry then
  redis.call('rename', KEYS[2], KEYS[1])
  redis.call('set', KEYS[2], 0, 'PX', cur_ttl + expiry)
end
local cur = tonumber(redis.call('get', KEYS[2])) or 0
if delta < 0 and -delta > cur then delta = -cur end
if delta == 0 then return cur end
if redis.call('exists', KEYS[2]) == 1 then
  return redis.call('incrby', KEYS[2], delta)
end
redis.call('set', KEYS[2], delta, 'PX', expiry * 2)
return delta
"""
