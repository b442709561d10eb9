-- Undo a reserved order: stock and the user's count back, order failed, out of the outbox.
-- KEYS: 1 order hash, 2 stock, 3 buyers hash, 4 outbox stream.
-- ARGV: 1 deliverers' consumer group, 2 the deliverer settling it ('' = not fenced),
--       3 how long a settled order is kept for replays (ms).
-- Returns {outcome, remaining} with outcome restored | already_failed | confirmed |
-- not_owner | unknown | no_stock, and remaining an integer. no_stock: the sale's stock is
-- gone (the store lost it): putting units back would re-create it, so nothing changes
-- until an operator loads stock.
local o = redis.call('HMGET', KEYS[1], 'state', 'user_id', 'quantity', 'sid')
if not o[1] then
  return {'unknown', 0}
end
if o[1] == 'failed' then
  return {'already_failed', 0}
end
-- A cancelled order gave its units back then (it was confirmed, or consumed in stream
-- mode): never twice.
if o[1] == 'confirmed' or o[1] == 'cancelled' then
  return {'confirmed', 0}
end
if ARGV[2] ~= '' then
  local p = redis.call('XPENDING', KEYS[4], ARGV[1], o[4], o[4], 1)
  if not p[1] or p[1][2] ~= ARGV[2] then
    return {'not_owner', 0}
  end
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  return {'no_stock', 0}
end
local qty = tonumber(o[3])
local remaining = redis.call('INCRBY', KEYS[2], qty)
if redis.call('HINCRBY', KEYS[3], o[2], -qty) <= 0 then
  redis.call('HDEL', KEYS[3], o[2])
end
redis.call('HSET', KEYS[1], 'state', 'failed')
redis.call('XACK', KEYS[4], ARGV[1], o[4])
redis.call('XDEL', KEYS[4], o[4])
-- Kept as long as the token naming it: a replay always finds what became of it.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local x = tonumber(redis.call('HGET', KEYS[1], 'x') or '0') or 0
redis.call('PEXPIREAT', KEYS[1], math.max(now + tonumber(ARGV[3]), x))
return {'restored', remaining}
