-- Sets a sale's drain rate to ARGV[2] only if the stored rate is still ARGV[1] (or none is
-- stored): a steering computed from an older rate never overwrites a rate an operator or
-- a new definition stored meanwhile. KEYS[1] the drain rate. Returns 1 if set, else 0.
local now = redis.call('GET', KEYS[1])
if now and now ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
