-- GET /sale/tickets/{ticket} with a well-formed ticket id nobody holds: the polling route's
-- lookup and its 404 unknown_ticket.
--   wrk -t1 -c64 -d10s -s loadtest/wrk/ticket.lua http://127.0.0.1:8080/sale/tickets/
wrk.method = "GET"
request = function()
  return wrk.format(nil, wrk.path:gsub("/$", "") .. "/" .. string.format("%032x", math.random(1, 2^31)), nil, nil)
end
