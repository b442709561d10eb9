-- The whole buyer flow over wrk's connections: each new user fetches a token, then the next
-- request orders with it. Point it at the sale's URL; the script adds /token and /order.
-- A crowd larger than the stock ends in 410 sold_out, which wrk counts as non-2xx.
-- Use one connection per thread (-c equal to -t): wrk keeps one Lua state per thread, and a
-- token must go back with the user it was issued to, which only one connection keeps in step.
--   wrk -t2 -c2 -d10s -s loadtest/wrk/order_flow.lua http://127.0.0.1:8080/sale/demo-phone
local n = 0
local prefix = "flow-" .. tostring(math.random(1, 1e9)) .. "-"
local ready = {}          -- tokens fetched, waiting for their order: { user, token }
local base

init = function(args)
  base = wrk.path:gsub("/$", "")
end

request = function()
  local next_order = table.remove(ready)
  if next_order then
    return wrk.format("POST", base .. "/order",
      { ["X-User-Id"] = next_order[1], ["X-Sale-Token"] = next_order[2], ["Content-Length"] = "0" }, nil)
  end
  n = n + 1
  last_user = prefix .. n
  return wrk.format("POST", base .. "/token", { ["X-User-Id"] = last_user, ["Content-Length"] = "0" }, nil)
end

response = function(status, headers, body)
  local token = status == 200 and body:match('"token":"(%x+)"')
  if token and last_user then
    table.insert(ready, { last_user, token })
    last_user = nil
  end
end
