-- Undo a reserved order: stock and the user's count back, order failed, out of the outbox.
-- KEYS: 1 order hash, 2 stock, 3 buyers hash, 4 outbox stream.
-- ARGV: 1 deliverers' consumer group.
-- Returns {outcome, remaining} with outcome restored | already_failed | confirmed | unknown.
local o = redis.call('HMGET', KEYS[1], 'state', 'user_id', 'quantity', 'sid')
if not o[1] then
  return {'unknown', '0'}
end
if o[1] == 'failed' then
  return {'already_failed', '0'}
end
if o[1] == 'confirmed' then
  return {'confirmed', '0'}
end
local qty = tonumber(o[3])
local remaining = redis.call('INCRBY', KEYS[2], qty)
if redis.call('HINCRBY', KEYS[3], o[2], -qty) <= 0 then
  redis.call('HDEL', KEYS[3], o[2])
end
redis.call('HSET', KEYS[1], 'state', 'failed')
pcall(redis.call, 'XACK', KEYS[4], ARGV[1], o[4])
redis.call('XDEL', KEYS[4], o[4])
return {'restored', tostring(remaining)}
