-- GET /sale/{sku}: the sale's public state, answered by the gateway from memory.
--   wrk -t1 -c64 -d10s -s loadtest/wrk/sale_status.lua http://127.0.0.1:8080/sale/demo-phone
wrk.method = "GET"
