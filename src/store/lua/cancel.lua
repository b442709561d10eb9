-- Cancel an order the backend gave up (unpaid), once however often it is asked.
-- KEYS: 1 order hash, 2 stock, 3 buyers hash, 4 outbox stream, 5 epoch.
-- ARGV: 1 '1' when a reserved order may be cancelled too (stream mode: the backend
--       consumes the outbox itself), else only a confirmed one; 2 how long a settled order
--       is kept for replays (ms).
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
local epoch = redis.call('GET', KEYS[5])
-- An order without its epoch predates their recording: it was reserved under the current
-- stock only if that is still the first loading (no operator load since, 'init-').
local same = (o[5] and o[5] == epoch) or (not o[5] and epoch and string.sub(epoch, 1, 5) == 'init-')
if same then
  remaining = redis.call('INCRBY', KEYS[2], qty)
  restocked = 1
end
if redis.call('HINCRBY', KEYS[3], o[2], -qty) <= 0 then
  redis.call('HDEL', KEYS[3], o[2])
end
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'rs', restocked)
if o[1] == 'reserved' then
  -- It settles now: kept store.replay_ttl, and as long as its token. (A confirmed order
  -- keeps the expiry it settled with.)
  redis.call('XDEL', KEYS[4], o[4])
  local t = redis.call('TIME')
  local now = t[1] * 1000 + math.floor(t[2] / 1000)
  local x = tonumber(redis.call('HGET', KEYS[1], 'x') or '0') or 0
  redis.call('PEXPIREAT', KEYS[1], math.max(now + tonumber(ARGV[2]), x))
end
return {'cancelled', restocked, remaining, o[2], qty}
