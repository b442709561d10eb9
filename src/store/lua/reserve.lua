-- Spend a token on one order, atomically.
-- KEYS: 1 token hash, 2 stock, 3 buyers hash (user -> units), 4 outbox stream,
--       5 order hash (for the order id the caller generated)
-- ARGV: 1 user, 2 quantity, 3 per-user limit, 4 order id, 5 now (ms), 6 replay ttl (ms), 7 sku
-- Returns {kind, order_id, remaining, replayed} with kind one of
-- reserved | sold_out | limit | invalid | unknown_sale.
local tok = redis.call('HMGET', KEYS[1], 'u', 's', 'k', 'o', 'r')
if not tok[1] or tok[1] ~= ARGV[1] then
  return {'invalid', '', '0', '0'}
end
if tok[2] == 'spent' then
  return {tok[3], tok[4], tok[5], '1'}
end
local stock = redis.call('GET', KEYS[2])
if not stock then
  return {'unknown_sale', '', '0', '0'}
end
stock = tonumber(stock)
local qty = tonumber(ARGV[2])
local held = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
local kind, oid, remaining = 'reserved', '', stock
if held + qty > tonumber(ARGV[3]) then
  kind = 'limit'
elseif stock < qty then
  kind = 'sold_out'
else
  remaining = redis.call('DECRBY', KEYS[2], qty)
  redis.call('HINCRBY', KEYS[3], ARGV[1], qty)
  local sid = redis.call('XADD', KEYS[4], '*', 'order_id', ARGV[4], 'sku', ARGV[7],
    'user_id', ARGV[1], 'quantity', qty, 'reserved_at', ARGV[5])
  redis.call('HSET', KEYS[5], 'sku', ARGV[7], 'user_id', ARGV[1], 'quantity', qty,
    'reserved_at', ARGV[5], 'state', 'reserved', 'sid', sid)
  oid = ARGV[4]
end
redis.call('HSET', KEYS[1], 's', 'spent', 'k', kind, 'o', oid, 'r', remaining)
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return {kind, oid, tostring(remaining), '0'}
