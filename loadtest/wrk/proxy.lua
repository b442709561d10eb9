-- Passthrough: GET of whatever path the URL names, proxied unchanged to the upstream.
--   wrk -t1 -c64 -d10s -s loadtest/wrk/proxy.lua http://127.0.0.1:8080/
wrk.method = "GET"
wrk.headers["Accept"] = "application/json"
