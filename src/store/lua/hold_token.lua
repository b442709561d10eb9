-- Holds a token for a queued request, so that the same token sent to another instance
-- joins that request instead of queueing twice.
-- In the same step the request enters the sale's line (src/store/line.rs): into the
-- pre-queue while it is not sealed and ARGV[6] gives a key (one place a user: a user in it
-- already is answered with the ticket holding that place, this token left unheld and
-- unspent), else
-- with the next number (sealing the pre-queue first: its members come before every later
-- number).
-- KEYS: 1 token record, 2 the token's hold, 3 the ticket's record, 4 the sale's line
-- (hash: n numbers drawn, c cursor, at; s sealed, b base, p pre-queue size, k kept),
-- 5 the sale's pre-queue (sorted set: user by random key), 6 its members' tickets (hash:
-- user -> ticket).
-- ARGV: 1 user, 2 ticket, 3 token, 4 hold until (Unix ms), 5 order key prefix,
-- 6 the pre-queue key ('' for the back of the line).
-- Returns {'held', line number, the line's cursor}, {'prequeued'}, {'queued', ticket},
-- {'placed', ticket} (the user's place in the pre-queue is that ticket's), or
-- {'spent', kind, order_id, remaining, 1, order_state} (as reserve.lua answers a replay).
local prequeue = ARGV[6] ~= '' and redis.call('HEXISTS', KEYS[4], 's') == 0
local function expire(key)
  if redis.call('PTTL', key) == -1 then
    redis.call('PEXPIREAT', key, ARGV[4])
  else
    redis.call('PEXPIREAT', key, ARGV[4], 'GT')
  end
end
local function enter()
  if prequeue then
    redis.call('ZADD', KEYS[5], ARGV[6], ARGV[1])
    redis.call('HSET', KEYS[6], ARGV[1], ARGV[2])
    expire(KEYS[5])
    expire(KEYS[6])
    return {'prequeued'}
  end
  if redis.call('HEXISTS', KEYS[4], 's') == 0 then
    local base = tonumber(redis.call('HGET', KEYS[4], 'n') or '0') or 0
    local size = redis.call('ZCARD', KEYS[5])
    redis.call('HSET', KEYS[4], 's', 1, 'b', base, 'p', size, 'n', base + size)
  end
  local n = redis.call('HINCRBY', KEYS[4], 'n', 1)
  local c = tonumber(redis.call('HGET', KEYS[4], 'c') or '0') or 0
  return {'held', n, math.floor(c)}
end
local tok = redis.call('HMGET', KEYS[1], 'u', 's', 'k', 'o', 'r')
if tok[1] then
  if tok[1] ~= ARGV[1] or tok[2] ~= 'spent' then
    -- Another user's: this request's own reserve step refuses it.
    return enter()
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
if prequeue then
  local first = redis.call('HGET', KEYS[6], ARGV[1])
  if first then
    return {'placed', first}
  end
end
redis.call('SET', KEYS[2], ARGV[2], 'PXAT', ARGV[4])
redis.call('SET', KEYS[3], ARGV[3], 'PXAT', ARGV[4])
return enter()
