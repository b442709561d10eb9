-- An operator sets a sale's stock: the figure and a new epoch, in one step.
-- KEYS: 1 stock, 2 epoch.  ARGV: 1 units, 2 the new epoch.
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
return ARGV[2]
