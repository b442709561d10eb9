-- Cancel an order the backend gave up (unpaid), once however often it is asked.
-- KEYS: 1 order hash, 2 stock, 3 buyers hash, 4 outbox stream, 5 epoch.
-- ARGV: 1 '1' when a reserved order may be cancelled too (stream mode: the backend
--       consumes the outbox itself), else only a confirmed one.
-- Returns {outcome, restocked, remaining, user, quantity} with outcome cancelled |
-- already_cancelled | not_delivered | compensated | no_stock | unknown.
-- The units go back only under the epoch the order was reserved in: an operator who loaded
-- stock since set what is for sale, and adding the unit on top would create it twice. The
-- user's count goes back either way (loading stock leaves the buyers as they are).
local o = redis.call('HMGET', KEYS[1], 'state', 'user_id', 'quantity', 'sid', 'e', 'rs')
if not o[1] then
  return {'unknown', 0, 0, '', 0}
end
local qty = tonumber(o[3]) or 0
if o[1] == 'failed' then
  return {'compensated', 0, 0, o[2], qty}
end
if o[1] == 'cancelled' then
  return {'already_cancelled', tonumber(o[6]) or 0,
    tonumber(redis.call('GET', KEYS[2]) or '0'), o[2], qty}
end
if o[1] == 'reserved' and ARGV[1] ~= '1' then
  return {'not_delivered', 0, 0, o[2], qty}
end
local stock = redis.call('GET', KEYS[2])
if not stock then
  return {'no_stock', 0, 0, o[2], qty}
end
local remaining = tonumber(stock)
local restocked = 0
if o[5] and o[5] == redis.call('GET', KEYS[5]) then
  remaining = redis.call('INCRBY', KEYS[2], qty)
  restocked = 1
end
if redis.call('HINCRBY', KEYS[3], o[2], -qty) <= 0 then
  redis.call('HDEL', KEYS[3], o[2])
end
if o[1] == 'reserved' then
  redis.call('XDEL', KEYS[4], o[4])
end
-- The order's expiry stands: it is kept store.replay_ttl from when it settled.
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'rs', restocked)
return {'cancelled', restocked, remaining, o[2], qty}
