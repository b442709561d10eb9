-- Removes deliverers that are gone from a sale's consumer group: every gateway start adds
-- one (names are unique per process), and the group would grow with every restart.
-- Only a consumer that holds nothing (pending 0) and has not read for longer than the
-- threshold goes; checked and removed in one step, so none that just read is removed.
-- KEYS: 1 outbox stream.  ARGV: 1 group, 2 the caller (kept), 3 idle threshold (ms).
-- Returns how many were removed.
local removed = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #c, 2 do
    f[c[i]] = c[i + 1]
  end
  if f['name'] ~= ARGV[2] and f['pending'] == 0 and f['idle'] >= tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    removed = removed + 1
  end
end
return removed
