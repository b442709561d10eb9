-- Mark a reserved order delivered and take it out of the outbox.
-- KEYS: 1 order hash, 2 outbox stream.  ARGV: 1 deliverers' consumer group.
-- Returns 1 if it was reserved, else 0.
local o = redis.call('HMGET', KEYS[1], 'state', 'sid')
if o[1] ~= 'reserved' then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'confirmed')
-- The group may not exist (stream mode, or a deliverer that never read): pcall.
pcall(redis.call, 'XACK', KEYS[2], ARGV[1], o[2])
redis.call('XDEL', KEYS[2], o[2])
return 1
