-- Lets go of a token's hold if this ticket holds it (its request was refused after all).
-- KEYS: 1 the token's hold, 2 the ticket's record.  ARGV: 1 ticket.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
end
return 1
