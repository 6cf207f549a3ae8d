-- wrk script: durable single-key writes, 16-byte values, random keys out of
-- 65,536 in one store (the same key spread as the Rust benchmark's 64 x 1024).
-- Auth, if any, comes from the WRK_TOKEN environment variable.
local token = os.getenv("WRK_TOKEN")
local headers = { ["Content-Type"] = "application/octet-stream" }
if token and token ~= "" then
  headers["Authorization"] = "Bearer " .. token
end

request = function()
  local path = "/v1/kv?store=bench&key=k" .. tostring(math.random(0, 65535))
  return wrk.format("PUT", path, headers, "0123456789abcdef")
end
