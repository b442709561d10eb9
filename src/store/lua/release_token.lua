-- Lets go of a token's hold if this ticket holds it (its request was refused, or ended
-- leaving the token unspent): the token may be held again. Before the sale's pre-queue is
-- sealed, the user's place in it is given up too, if this ticket holds it (after the seal
-- the places are fixed: every instance reads the same). The ticket's record stays until it
-- runs out, so that any instance can still tell the ticket's holder that nothing was
-- reserved for it (410 ticket_lost: resubmit the token) rather than that it never was.
-- KEYS: 1 the token's hold, 2 the sale's line, 3 its pre-queue, 4 its members' tickets.
-- ARGV: 1 ticket, 2 user.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
if redis.call('HEXISTS', KEYS[2], 's') == 0 and redis.call('HGET', KEYS[4], ARGV[2]) == ARGV[1] then
  redis.call('ZREM', KEYS[3], ARGV[2])
  redis.call('HDEL', KEYS[4], ARGV[2])
end
return 1
