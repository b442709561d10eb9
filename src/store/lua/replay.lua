-- A spent token's recorded outcome: how an instance that has no answer for a token learns
-- the first one before it refuses the request at its edge. Asked to, it also spends a token
-- this user holds unspent, with the edge's answer (sold out) as its outcome: a request for
-- it that is still on its way (a reply held in the network, a retry queued elsewhere) then
-- replays that answer instead of reserving after the user was told sold out.
-- KEYS: 1 token hash, 2 stock.
-- ARGV: 1 user, 2 order key prefix (same hash tag, same slot), 3 'spend' or '',
--       4 replay ttl (ms).
-- Returns {kind, order_id, remaining, replayed, order_state} as reserve.lua does (replayed
-- 0 when this call spent it), or {'none'} when the token is not this user's or unknown.
local tok = redis.call('HMGET', KEYS[1], 'u', 's', 'k', 'o', 'r')
if tok[1] ~= ARGV[1] then
  return {'none'}
end
if tok[2] ~= 'spent' then
  if ARGV[3] ~= 'spend' then
    return {'none'}
  end
  local remaining = tonumber(redis.call('GET', KEYS[2]) or '0')
  redis.call('HSET', KEYS[1], 's', 'spent', 'k', 'sold_out', 'o', '', 'r', remaining)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {'sold_out', '', remaining, 0, ''}
end
local state = ''
if tok[3] == 'reserved' then
  state = redis.call('HGET', ARGV[2] .. tok[4], 'state') or 'reserved'
end
return {tok[3], tok[4], tonumber(tok[5]) or 0, 1, state}
