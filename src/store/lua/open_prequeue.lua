-- Opens a sale's pre-queue (src/store/line.rs): seals it unless sealed (its members take
-- the next numbers, in the order of their random keys), records how many of them are kept
-- unless recorded, and tells the given users' places.
-- KEYS: 1 the sale's line (hash, as hold_token.lua), 2 its pre-queue (sorted set of users).
-- ARGV: 1 members kept (stock-aware admission), 2.. users.
-- Returns {base, size, kept, cursor, numbers drawn, place of each user (0: unknown)}.
if redis.call('HEXISTS', KEYS[1], 's') == 0 then
  local base = tonumber(redis.call('HGET', KEYS[1], 'n') or '0') or 0
  local size = redis.call('ZCARD', KEYS[2])
  redis.call('HSET', KEYS[1], 's', 1, 'b', base, 'p', size, 'n', base + size)
end
local v = redis.call('HMGET', KEYS[1], 'b', 'p', 'n', 'c')
local base, size = tonumber(v[1]) or 0, tonumber(v[2]) or 0
redis.call('HSETNX', KEYS[1], 'k', math.min(size, tonumber(ARGV[1]) or size))
local kept = tonumber(redis.call('HGET', KEYS[1], 'k')) or size
local out = {base, size, kept, math.floor(tonumber(v[4]) or 0), tonumber(v[3]) or 0}
for i = 2, #ARGV do
  local r = redis.call('ZRANK', KEYS[2], ARGV[i])
  if r then
    out[#out + 1] = r + 1
  else
    out[#out + 1] = 0
  end
end
return out
