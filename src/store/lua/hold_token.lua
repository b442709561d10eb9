-- Holds a token for a queued request, so that the same token sent to another instance
-- joins that request instead of queueing twice.
-- A request that goes on to its queue draws the sale's next line number (the fleet's
-- admission order: src/store/line.rs) in the same step.
-- KEYS: 1 token record, 2 the token's hold, 3 the ticket's record, 4 the sale's line.
-- ARGV: 1 user, 2 ticket, 3 token, 4 hold until (Unix ms), 5 order key prefix.
-- Returns {'held', line number, the line's cursor}, {'queued', ticket}, or {'spent', kind,
-- order_id, remaining, 1, order_state} (as reserve.lua answers a replay).
local function draw()
  local n = redis.call('HINCRBY', KEYS[4], 'n', 1)
  local c = tonumber(redis.call('HGET', KEYS[4], 'c') or '0') or 0
  return {'held', n, math.floor(c)}
end
local tok = redis.call('HMGET', KEYS[1], 'u', 's', 'k', 'o', 'r')
if tok[1] then
  if tok[1] ~= ARGV[1] or tok[2] ~= 'spent' then
    -- Another user's: this request's own reserve step refuses it.
    return draw()
  end
  local state = ''
  if tok[3] == 'reserved' then
    state = redis.call('HGET', ARGV[5] .. tok[4], 'state') or 'reserved'
  end
  return {'spent', tok[3], tok[4], tonumber(tok[5]) or 0, 1, state}
end
local held = redis.call('GET', KEYS[2])
if held then
  return {'queued', held}
end
redis.call('SET', KEYS[2], ARGV[2], 'PXAT', ARGV[4])
redis.call('SET', KEYS[3], ARGV[3], 'PXAT', ARGV[4])
return draw()
