-- Leases up to ARGV[1] permits from a sale's drain budget (a GCRA): the arithmetic of
-- src/store/lease.rs, run on the store's clock so that every instance draws on one budget.
-- KEYS[1] drain arrival time (µs), KEYS[2] drain rate an operator set (absent: ARGV[2]);
-- ARGV[3] the lease period in µs. Returns {granted, rate, next_in_us}.
local want = tonumber(ARGV[1])
local rate = tonumber(redis.call('GET', KEYS[2]) or ARGV[2])
if rate == nil or rate < 1 then rate = 1 end
rate = math.floor(rate)
local period = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local size = math.max(1, math.ceil(rate * period / 1000000))
local interval = 1000000 / rate
local tolerance = 2 * size * interval
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local available = math.max(0, math.floor((now + tolerance - tat) / interval))
local granted = math.min(want, available)
tat = tat + granted * interval
local need = math.min(math.max(want, 1), size)
local next_in = math.max(0, math.ceil(tat + need * interval - tolerance - now))
-- Once the arrival time has passed the key says nothing a missing key does not.
local ttl = math.ceil((tat - now) / 1000)
if ttl > 0 then
  redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', ttl)
else
  redis.call('DEL', KEYS[1])
end
return {granted, rate, next_in}
