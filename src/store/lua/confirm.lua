-- Mark a reserved order delivered and take it out of the outbox.
-- KEYS: 1 order hash, 2 outbox stream.
-- ARGV: 1 deliverers' consumer group, 2 the deliverer settling it ('' = not fenced),
--       3 how long a settled order is kept for replays (ms).
-- Fenced: only the deliverer whose pending entry it is may settle it, so a deliverer that
-- lost the order to another (which took it over after claim_idle) cannot settle it twice.
-- Returns confirmed | already_confirmed | compensated | not_owner | unknown.
local o = redis.call('HMGET', KEYS[1], 'state', 'sid')
if not o[1] then
  return 'unknown'
end
-- Cancelled only once confirmed (or consumed, in stream mode): it stays cancelled.
if o[1] == 'confirmed' or o[1] == 'cancelled' then
  return 'already_confirmed'
end
if o[1] == 'failed' then
  return 'compensated'
end
if ARGV[2] ~= '' then
  local p = redis.call('XPENDING', KEYS[2], ARGV[1], o[2], o[2], 1)
  if not p[1] or p[1][2] ~= ARGV[2] then
    return 'not_owner'
  end
end
redis.call('HSET', KEYS[1], 'state', 'confirmed')
redis.call('XACK', KEYS[2], ARGV[1], o[2])
redis.call('XDEL', KEYS[2], o[2])
-- Kept as long as the token naming it: a replay always finds what became of it.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local x = tonumber(redis.call('HGET', KEYS[1], 'x') or '0') or 0
redis.call('PEXPIREAT', KEYS[1], math.max(now + tonumber(ARGV[3]), x))
return 'confirmed'
