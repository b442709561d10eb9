-- The book of sale definitions, unless its revision is still the caller's.
-- KEYS: 1 the book (hash), 2 its revision.  ARGV: 1 the revision the caller knows.
-- Returns {revision} when unchanged, else {revision, field, value, field, value, ...}.
local rev = redis.call('GET', KEYS[2]) or '0'
if rev == ARGV[1] then
  return {rev}
end
local out = {rev}
for _, x in ipairs(redis.call('HGETALL', KEYS[1])) do
  out[#out + 1] = x
end
return out
