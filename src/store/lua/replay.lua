-- A spent token's recorded outcome, read only: how an instance that has no answer for a
-- token learns the first one before it refuses the request at its edge.
-- KEYS: 1 token hash.  ARGV: 1 user, 2 order key prefix (same hash tag, same slot).
-- Returns {kind, order_id, remaining, 1, order_state} as reserve.lua does, or {'none'}
-- when the token is not this user's spent token.
local tok = redis.call('HMGET', KEYS[1], 'u', 's', 'k', 'o', 'r')
if tok[1] ~= ARGV[1] or tok[2] ~= 'spent' then
  return {'none'}
end
local state = ''
if tok[3] == 'reserved' then
  state = redis.call('HGET', ARGV[2] .. tok[4], 'state') or 'reserved'
end
return {tok[3], tok[4], tonumber(tok[5]) or 0, 1, state}
