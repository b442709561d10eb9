-- Records one instance's pending requests of a sale and sums the other instances'.
-- KEYS: 1 the sale's pending hash (instance -> "count until_ms").
-- ARGV: 1 this instance, 2 its pending count, 3 how long the count holds (ms).
-- Returns the other instances' pending requests whose counts have not run out.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ttl = tonumber(ARGV[3])
if tonumber(ARGV[2]) > 0 and ttl > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. (now + ttl))
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local others, last = 0, 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local n, untill = string.match(all[i + 1], '^(%d+) (%d+)$')
  if not n or tonumber(untill) <= now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    last = math.max(last, tonumber(untill))
    if all[i] ~= ARGV[1] then
      others = others + tonumber(n)
    end
  end
end
-- The hash lives as long as its longest count: it goes when every instance has stopped
-- reporting (one instance's short count must not cut the others').
if last > 0 then
  redis.call('PEXPIREAT', KEYS[1], last)
end
return others
