-- Moves a sale's line cursor on the store's clock: the arithmetic of src/store/line.rs.
-- KEYS[1] the line (hash: n numbers drawn, c cursor, at µs it last moved; b, p, k a sealed
-- pre-queue's base, size and members kept), KEYS[2] drain rate an operator set (absent:
-- ARGV[1]); ARGV[2] the lease period (µs): at most two periods' worth of the rate in
-- force is passed at once (line::burst).
-- Returns {cursor, numbers drawn, rate}.
local rate = tonumber(redis.call('GET', KEYS[2]) or ARGV[1])
if rate == nil or rate < 1 then rate = 1 end
rate = math.floor(rate)
local most = 2 * math.max(1, math.ceil(rate * tonumber(ARGV[2]) / 1000000))
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local v = redis.call('HMGET', KEYS[1], 'n', 'c', 'at', 'b', 'p', 'k')
local n = tonumber(v[1]) or 0
local c = tonumber(v[2]) or 0
local at = tonumber(v[3])
local credit = most
if at then
  credit = math.min(most, math.max(0, now - at) * rate / 1000000)
end
c = math.min(n, c + credit)
-- The numbers of pre-queued requests told sold out at the opening hold nobody: passed.
local b, p, k = tonumber(v[4]), tonumber(v[5]), tonumber(v[6])
if b and p and k and c >= b + k and c < b + p then
  c = math.min(n, b + p)
end
redis.call('HSET', KEYS[1], 'c', string.format('%.3f', c), 'at', string.format('%d', now))
return {math.floor(c), n, rate}
