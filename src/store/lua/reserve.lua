-- Spend a token on one order, atomically. The gateway signed the token and checked the
-- signature at its edge; here it is only checked unspent (or spent by this user: a replay)
-- and unexpired.
-- KEYS: 1 token record, 2 stock, 3 buyers hash (user -> units), 4 outbox stream,
--       5 order hash (for the order id the caller generated), 6 the stock's epoch
-- ARGV: 1 user, 2 quantity, 3 per-user limit, 4 order id, 5 replay ttl (ms), 6 sku,
--       7 order key prefix (a replayed order's hash is prefix .. id: same hash tag, same slot),
--       8 the token's expiry (Unix ms)
-- Returns {kind, order_id, remaining, replayed, order_state} with kind one of
-- reserved | sold_out | limit | invalid | unknown_sale; remaining and replayed are integers
-- (never tostring: Lua prints large figures as 2e+14); order_state is the order's state
-- now (a replay answers it, not the state it had when first reserved).
local tok = redis.call('HMGET', KEYS[1], 'u', 's', 'k', 'o', 'r')
if tok[1] then
  if tok[1] ~= ARGV[1] or tok[2] ~= 'spent' then
    return {'invalid', '', 0, 0, ''}
  end
  local state = ''
  if tok[3] == 'reserved' then
    state = redis.call('HGET', ARGV[7] .. tok[4], 'state') or 'reserved'
  end
  return {tok[3], tok[4], tonumber(tok[5]) or 0, 1, state}
end
-- The store's clock, not the caller's: every instance judges expiries and delivery
-- deadlines by it.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local expires = tonumber(ARGV[8])
if expires < now then
  return {'invalid', '', 0, 0, ''}
end
local stock = redis.call('GET', KEYS[2])
if not stock then
  return {'unknown_sale', '', 0, 0, ''}
end
stock = tonumber(stock)
local qty = tonumber(ARGV[2])
local held = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
local kind, oid, remaining, state = 'reserved', '', stock, ''
if held + qty > tonumber(ARGV[3]) then
  kind = 'limit'
elseif stock < qty then
  kind = 'sold_out'
else
  remaining = redis.call('DECRBY', KEYS[2], qty)
  redis.call('HINCRBY', KEYS[3], ARGV[1], qty)
  local sid = redis.call('XADD', KEYS[4], '*', 'order_id', ARGV[4], 'sku', ARGV[6],
    'user_id', ARGV[1], 'quantity', qty, 'reserved_at', now)
  -- The epoch tells a later cancel whether the stock was loaded afresh since; the token's
  -- expiry keeps the order's record as long as the token's once it settles.
  redis.call('HSET', KEYS[5], 'sku', ARGV[6], 'user_id', ARGV[1], 'quantity', qty,
    'reserved_at', now, 'state', 'reserved', 'sid', sid,
    'e', redis.call('GET', KEYS[6]) or '', 'x', expires)
  oid = ARGV[4]
  state = 'reserved'
end
-- Kept for replays, and until the token expires: a token is spent once, ever.
redis.call('HSET', KEYS[1], 'u', ARGV[1], 's', 'spent', 'k', kind, 'o', oid, 'r', remaining)
redis.call('PEXPIREAT', KEYS[1], math.max(now + tonumber(ARGV[5]), expires))
return {kind, oid, remaining, 0, state}
