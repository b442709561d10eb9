-- Issue a one-time token for a user, if the sale exists.
-- KEYS: 1 stock, 2 token hash.  ARGV: 1 user, 2 ttl (ms).
-- Returns 1 when issued, 0 when the sale is unknown.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if tonumber(ARGV[2]) > 0 then
  redis.call('HSET', KEYS[2], 'u', ARGV[1], 's', 'issued')
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 1
