-- Lets go of a token's hold if this ticket holds it (its request was refused, or ended
-- leaving the token unspent): the token may be held again. The ticket's record stays until
-- it runs out, so that any instance can still tell the ticket's holder that nothing was
-- reserved for it (410 ticket_lost: resubmit the token) rather than that it never was.
-- KEYS: 1 the token's hold.  ARGV: 1 ticket.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
