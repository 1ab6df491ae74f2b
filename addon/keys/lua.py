"""Lua scripts that make budget admission and cost corrections atomic on a shared Redis.

One hash per budget and period, ``{corral:budget}:<budget id>:<period start>``, fields ``spent`` (USD of
recorded flows) and ``reserved`` (estimates of admitted requests still running), both in integer
nano-dollars so every gateway adds exactly. The ``{corral:budget}`` hash tag keeps all of them in one
Redis Cluster slot, so one script can check a key's, its team's and its tags' budgets together.
A hash exists once it was seeded from the database (the flows recorded before Redis counted them).
"""

# KEYS: one hash per budget. ARGV: estimate, then one limit per budget (nano-USD).
# Returns {0} when the estimate was reserved on all of them; {i, spent, reserved} for the first budget i
# without room; {-i} when budget i has no hash yet (the caller seeds it from the database and retries).
ADMIT = """
for i, key in ipairs(KEYS) do
  if redis.call('exists', key) == 0 then return {-i} end
end
local est = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local spent = tonumber(redis.call('hget', key, 'spent')) or 0
  local reserved = tonumber(redis.call('hget', key, 'reserved')) or 0
  if spent + reserved + est > tonumber(ARGV[i + 1]) then return {i, spent, reserved} end
end
for _, key in ipairs(KEYS) do redis.call('hincrby', key, 'reserved', ARGV[1]) end
return {0}
"""

# KEYS[1] the budget's hash. ARGV: spent from the database (nano-USD), expiry as epoch ms (0: never).
# The first seed wins: a hash another gateway made already counts flows the database may not have yet.
SEED = """
if redis.call('hsetnx', KEYS[1], 'spent', ARGV[1]) == 1 then
  redis.call('hsetnx', KEYS[1], 'reserved', 0)
  if tonumber(ARGV[2]) > 0 then redis.call('pexpireat', KEYS[1], ARGV[2]) end
end
return {tonumber(redis.call('hget', KEYS[1], 'spent')), tonumber(redis.call('hget', KEYS[1], 'reserved')) or 0}
"""

# KEYS: the hashes an admitted request reserved on. ARGV: its estimate, its exact charge (0 on release).
# The reservation is given back (never below zero) and the charge added; a hash that expired or was
# lost is left alone (the next seed reads the flow from the database).
SETTLE = """
local est, cost = tonumber(ARGV[1]), tonumber(ARGV[2])
for _, key in ipairs(KEYS) do
  if redis.call('exists', key) == 1 then
    local reserved = tonumber(redis.call('hget', key, 'reserved')) or 0
    redis.call('hincrby', key, 'reserved', -math.min(est, reserved))
    if cost > 0 then redis.call('hincrby', key, 'spent', ARGV[2]) end
  end
end
return 0
"""

# KEYS: budget hashes. Returns {spent, reserved, exists} per key, flattened.
READ = """
local out = {}
for _, key in ipairs(KEYS) do
  local exists = redis.call('exists', key)
  out[#out + 1] = tonumber(redis.call('hget', key, 'spent')) or 0
  out[#out + 1] = tonumber(redis.call('hget', key, 'reserved')) or 0
  out[#out + 1] = exists
end
return out
"""
