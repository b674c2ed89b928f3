-- wrk script: POST 1 KiB events. PLANS plans are spread over the connections
-- (PLANS=1 puts every append on one chain, the hardest case for a journal).
-- PREFER=minimal asks for the short answer (RFC 7240 `Prefer: return=minimal`).
local plans = tonumber(os.getenv("PLANS") or "1")
local prefer = os.getenv("PREFER")
local pad = string.rep("x", 960)
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end

function init(args)
  local n = (id % plans)
  plan = string.format("0192f3a4-5b6c-7d8e-9f00-%012d", n)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if prefer and prefer ~= "" then
    wrk.headers["Prefer"] = "return=" .. prefer
  end
  wrk.body = '{"type":"ledger.transaction","actor":"bench","payload":{"pad":"' .. pad .. '"}}'
  wrk.path = "/api/plans/" .. plan .. "/events"
end

function response(status, headers, body)
  if status ~= 201 then
    io.stderr:write("unexpected status " .. status .. "\n")
  end
end
