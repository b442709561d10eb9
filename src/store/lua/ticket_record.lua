-- What became of the request behind a ticket that held a token.
-- KEYS: 1 the ticket's record.  ARGV: 1 token record key prefix, 2 order key prefix (same
-- hash tag, same slot).
-- Returns {'none'}, {'queued'} (the token is unspent), or {kind, order_id, remaining, 1,
-- order_state} as reserve.lua answers a replay.
local token = redis.call('GET', KEYS[1])
if not token then
  return {'none'}
end
local tok = redis.call('HMGET', ARGV[1] .. token, 'u', 's', 'k', 'o', 'r')
if tok[2] ~= 'spent' then
  return {'queued'}
end
local state = ''
if tok[3] == 'reserved' then
  state = redis.call('HGET', ARGV[2] .. tok[4], 'state') or 'reserved'
end
return {tok[3], tok[4], tonumber(tok[5]) or 0, 1, state}
