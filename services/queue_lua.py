"""The trajectory queue's Lua scripts (services/queue.py), each run atomically by Redis.

Every script touches only keys of one job (they share the `{job}` hash tag), so they stay legal on Redis
Cluster. KEYS and ARGV are documented above each script.
"""

# Admit trajectories while the stream has room. ARGV: max_len, then (id, payload) pairs.
# Room is counted in entries not yet delivered (the lag): entries a learner holds until its next
# checkpoint are bounded by the learner itself, and counting them would deadlock a learner that is
# waiting for one more group. Returns one status per pair: 'ok:<entry-id>', 'dup', or 'full'.
PUT = """
local out = {}
local maxlen = tonumber(ARGV[1])
local len = redis.call('XLEN', KEYS[1])
local ok, pend = pcall(redis.call, 'XPENDING', KEYS[1], 'learners')
if ok and pend then len = len - tonumber(pend[1]) end
for i = 2, #ARGV, 2 do
  if redis.call('SISMEMBER', KEYS[2], ARGV[i]) == 1 then
    out[#out + 1] = 'dup'
  elseif len >= maxlen then
    out[#out + 1] = 'full'
  else
    local id = redis.call('XADD', KEYS[1], '*', 't', ARGV[i], 'd', ARGV[i + 1])
    redis.call('SADD', KEYS[2], ARGV[i])
    len = len + 1
    out[#out + 1] = 'ok:' .. id
  end
end
local n = 0
for _, s in ipairs(out) do if string.sub(s, 1, 3) == 'ok:' then n = n + 1 end end
if n > 0 then redis.call('HINCRBY', KEYS[3], 'put', n) end
return out
"""

# Ack entries this consumer still owns. ARGV: group, consumer ('' = any), counter, ids...
ACK = """
local done = 0
for i = 4, #ARGV do
  local owned = true
  if ARGV[2] ~= '' then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
    owned = (#p == 1 and p[1][2] == ARGV[2])
  end
  if owned and redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    redis.call('XDEL', KEYS[1], ARGV[i])
    done = done + 1
  end
end
if done > 0 then redis.call('HINCRBY', KEYS[2], ARGV[3], done) end
return done
"""

# Heartbeat: reset the idle time of entries this consumer still owns. ARGV: group, consumer, ids...
# Returns the ids it no longer owns (re-delivered elsewhere, or acked).
TOUCH = """
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 1 and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
"""

# Move one pending entry to another stream (dead letters / stale) with a reason, atomically.
# ARGV: group, entry id, reason, deliveries, counter, cap (0 = uncapped)
MOVE = """
local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
local args = {KEYS[2]}
if tonumber(ARGV[6]) > 0 then
  args[#args + 1] = 'MAXLEN'; args[#args + 1] = '~'; args[#args + 1] = ARGV[6]
end
args[#args + 1] = '*'
if #e == 1 then
  for _, v in ipairs(e[1][2]) do args[#args + 1] = v end
end
for _, v in ipairs({'reason', ARGV[3], 'deliveries', ARGV[4], 'src', ARGV[2]}) do args[#args + 1] = v end
redis.call('XADD', unpack(args))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('HINCRBY', KEYS[3], ARGV[5], 1)
return 1
"""
