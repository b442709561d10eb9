-- Mark a reserved order delivered and take it out of the outbox.
-- KEYS: 1 order hash, 2 outbox stream.  Returns 1 if it was reserved, else 0.
local o = redis.call('HMGET', KEYS[1], 'state', 'sid')
if o[1] ~= 'reserved' then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'confirmed')
redis.call('XDEL', KEYS[2], o[2])
return 1
