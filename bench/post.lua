-- wrk script: POST the AdmissionReview in $BODY_FILE to the URL given on the command line.
-- With DISTINCT=1 every request carries a different pod (a counter replaces the pod-template-hash
-- label value), so no two requests are alike: the decision cache never hits.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local file = assert(io.open(os.getenv("BODY_FILE"), "rb"))
local body = file:read("*a")
file:close()
wrk.body = body

if os.getenv("DISTINCT") == "1" then
  local counter = 0
  local head, tail = body:match("^(.-)7d9f8c6b5(.*)$")
  request = function()
    counter = counter + 1
    return wrk.format(nil, nil, nil, head .. string.format("h%08d", counter) .. tail)
  end
end
