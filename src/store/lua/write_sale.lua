-- Write a sale's definition if the book holds what the caller expects, one version on.
-- KEYS: 1 the book (hash: d:<sku> definition JSON, v:<sku> its version), 2 its revision.
-- ARGV: 1 sku, 2 the definition (JSON), 3 expected: 'absent' | 'any' | a version.
-- Returns {'written', version} or {'conflict', version or '', definition or ''}.
local v = redis.call('HGET', KEYS[1], 'v:' .. ARGV[1])
local want = ARGV[3]
local agrees = want == 'any' or (want == 'absent' and not v) or (v and v == want)
if not agrees then
  return {'conflict', v or '', redis.call('HGET', KEYS[1], 'd:' .. ARGV[1]) or ''}
end
local version = tonumber(v or '0') + 1
redis.call('HSET', KEYS[1], 'd:' .. ARGV[1], ARGV[2], 'v:' .. ARGV[1], version)
redis.call('INCR', KEYS[2])
return {'written', version}
