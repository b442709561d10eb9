-- POST /sale/{sku}/token: every request a different user, so each is a real token issue
-- (a store round trip) until the sale sells out or the per-IP limit bites.
--   wrk -t1 -c64 -d10s -s loadtest/wrk/token.lua http://127.0.0.1:8080/sale/demo-phone/token
local n = 0
local prefix = "wrk-" .. tostring(math.random(1, 1e9)) .. "-"

request = function()
  n = n + 1
  return wrk.format("POST", nil, { ["X-User-Id"] = prefix .. n, ["Content-Length"] = "0" }, nil)
end
