-- Load a sale's stock on start-up, never re-creating it silently.
-- KEYS: 1 stock, 2 epoch (which loading of the sale's stock this is).
-- ARGV: 1 configured stock, 2 a fresh epoch, 3 the epoch this instance remembers ('' none).
-- Returns {outcome, units, epoch} with outcome
--   held    - the store has the sale: its figure wins (an epoch is added if it had none);
--   created - first load: stock and epoch written;
--   lost    - the store has no stock although this instance loaded it before, or another
--             instance left a tombstone in the epoch key (mark_lost.lua): the store lost
--             its state, and writing the configured stock would sell it again.
local held = redis.call('GET', KEYS[1])
if held then
  local e = redis.call('GET', KEYS[2])
  if not e then
    e = ARGV[2]
    redis.call('SET', KEYS[2], e)
  end
  return {'held', held, e}
end
if ARGV[3] ~= '' or redis.call('EXISTS', KEYS[2]) == 1 then
  return {'lost', '0', ARGV[3]}
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
return {'created', ARGV[1], ARGV[2]}
