-- Add (or, negative, take away) units of a live sale atomically, racing with no reservation.
-- KEYS: 1 stock.  ARGV: 1 delta, 2 largest stock allowed.
-- Returns {outcome, units}: added | unknown_sale | out_of_range (units = stock now).
local held = redis.call('GET', KEYS[1])
if not held then
  return {'unknown_sale', 0}
end
local after = tonumber(held) + tonumber(ARGV[1])
if after < 0 or after > tonumber(ARGV[2]) then
  return {'out_of_range', tonumber(held)}
end
return {'added', redis.call('INCRBY', KEYS[1], ARGV[1])}
