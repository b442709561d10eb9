-- An instance that loaded a sale finds its stock gone: the store lost its state. It leaves
-- a tombstone in the epoch key, so that an instance starting for the first time (with no
-- memory of the sale) holds the sale too instead of loading the configured stock again.
-- KEYS: 1 stock, 2 epoch.  ARGV: 1 the tombstone ("lost-<the epoch remembered>").
-- Returns 1 when the tombstone was written, 0 when the stock is back or a marker exists.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX') then
  return 1
end
return 0
