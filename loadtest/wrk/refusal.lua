-- POST /sale/{sku}/order for a sold-out sale: the refusal path (410 sold_out, decided in
-- process). Run it against a sale with stock 0; bench/refusal.sh does, with a token it
-- signs for user crowd-member in BENCH_SALE_TOKEN (an unsigned one is refused 422).
--   wrk -t1 -c64 -d10s -s loadtest/wrk/refusal.lua http://127.0.0.1:8080/sale/phone/order
wrk.method = "POST"
wrk.headers["X-User-Id"] = "crowd-member"
wrk.headers["X-Sale-Token"] = os.getenv("BENCH_SALE_TOKEN") or ""
wrk.headers["Content-Length"] = "0"
