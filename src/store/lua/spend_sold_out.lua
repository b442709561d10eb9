-- Spends tokens with "sold out" as their outcome, as replay.lua does for a refusal at the
-- edge: the pre-queue's members told sold out at the opening. A token spent already, or
-- held by another ticket than the one given, is left alone; a hold of the given ticket is
-- let go.
-- KEYS: 1 stock, then for each token: its record, its hold.
-- ARGV: 1 replay ttl (ms), then for each token: user, ticket, the token's expiry (Unix ms).
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local remaining = tonumber(redis.call('GET', KEYS[1]) or '0')
local ttl = tonumber(ARGV[1])
local i = 0
while 2 * i + 3 <= #KEYS do
  local record, hold = KEYS[2 * i + 2], KEYS[2 * i + 3]
  local user, ticket, expiry = ARGV[3 * i + 2], ARGV[3 * i + 3], tonumber(ARGV[3 * i + 4])
  local held = redis.call('GET', hold)
  if redis.call('EXISTS', record) == 0 and (not held or held == ticket) then
    redis.call('HSET', record, 'u', user, 's', 'spent', 'k', 'sold_out', 'o', '', 'r', remaining)
    redis.call('PEXPIREAT', record, math.max(now + ttl, expiry))
    if held then
      redis.call('DEL', hold)
    end
  end
  i = i + 1
end
return 1
