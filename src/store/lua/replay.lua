-- A spent token's recorded outcome: how an instance that has no answer for a token learns
-- the first one before it refuses the request at its edge. Asked to, it also spends a token
-- this user has not spent, with the edge's answer (sold out) as its outcome: a request for
-- it that is still on its way (a reply held in the network, a retry queued elsewhere) then
-- replays that answer instead of reserving after the user was told sold out.
-- A token held by a queued request (hold_token.lua), on this instance or another, is that
-- request's to decide: its ticket is returned and the token left unspent, so that a double
-- click joins the request instead of spending the token as sold out under it.
-- KEYS: 1 token record, 2 stock, 3 the token's hold.
-- ARGV: 1 user, 2 order key prefix (same hash tag, same slot), 3 'spend' or '',
--       4 replay ttl (ms), 5 the token's expiry (Unix ms).
-- Returns {kind, order_id, remaining, replayed, order_state} as reserve.lua does (replayed
-- 0 when this call spent it), {'queued', ticket} when a queued request holds it, or
-- {'none'} when the token is unspent (and left so) or another user's.
local tok = redis.call('HMGET', KEYS[1], 'u', 's', 'k', 'o', 'r')
if not tok[1] then
  local held = redis.call('GET', KEYS[3])
  if held then
    return {'queued', held}
  end
  if ARGV[3] ~= 'spend' then
    return {'none'}
  end
  local t = redis.call('TIME')
  local now = t[1] * 1000 + math.floor(t[2] / 1000)
  local remaining = tonumber(redis.call('GET', KEYS[2]) or '0')
  redis.call('HSET', KEYS[1], 'u', ARGV[1], 's', 'spent', 'k', 'sold_out', 'o', '', 'r', remaining)
  redis.call('PEXPIREAT', KEYS[1], math.max(now + tonumber(ARGV[4]), tonumber(ARGV[5])))
  return {'sold_out', '', remaining, 0, ''}
end
if tok[1] ~= ARGV[1] or tok[2] ~= 'spent' then
  return {'none'}
end
local state = ''
if tok[3] == 'reserved' then
  state = redis.call('HGET', ARGV[2] .. tok[4], 'state') or 'reserved'
end
return {tok[3], tok[4], tonumber(tok[5]) or 0, 1, state}
