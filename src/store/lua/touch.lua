-- A deliverer about to POST orders renews its hold on them: their pending entries' idle
-- time starts again, so no other deliverer takes them over (after claim_idle, which is
-- longer than a POST and a confirm) while the POST is in flight.
-- KEYS: 1 outbox stream, 2.. the orders' hashes.  ARGV: 1 group, 2 the deliverer.
-- Returns the positions (1-based, among KEYS[2..]) of the orders this deliverer still
-- owns; the others were taken over and are not its to deliver.
local owned = {}
for i = 2, #KEYS do
  local sid = redis.call('HGET', KEYS[i], 'sid')
  if sid then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], sid, sid, 1)
    if p[1] and p[1][2] == ARGV[2] then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, sid, 'JUSTID')
      owned[#owned + 1] = i - 1
    end
  end
end
return owned
