-- The instances sharing this store. KEYS[1]: zset id -> when its heartbeat expires (ms,
-- by the server's clock); KEYS[2]: hash id -> "incarnation address".
-- ARGV[1] id, ARGV[2] incarnation, ARGV[3] address, ARGV[4] ttl in ms: > 0 announces (or
-- renews) the member, 0 only lists, < 0 removes it. An id held by a live member of another
-- incarnation is neither taken over nor removed. Expired members are forgotten. Returns
-- 'ok' or 'taken', then the live members as id, "incarnation address" pairs.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[4])
local status = 'ok'
if ttl ~= 0 then
  local held = redis.call('HGET', KEYS[2], ARGV[1])
  local expires = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '0')
  local mine = (not held) or string.sub(held, 1, #ARGV[2] + 1) == ARGV[2] .. ' '
  if not mine and expires > now then
    status = 'taken'
  elseif ttl > 0 then
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
    redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ' ' .. ARGV[3])
  elseif mine then
    redis.call('ZREM', KEYS[1], ARGV[1])
    redis.call('HDEL', KEYS[2], ARGV[1])
  end
end
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, id in ipairs(gone) do
  redis.call('HDEL', KEYS[2], id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local out = {status}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  table.insert(out, id)
  table.insert(out, redis.call('HGET', KEYS[2], id) or '')
end
return out
