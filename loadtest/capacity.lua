-- wrk script of `python -m loadtest.capacity`: one endpoint per run, rotating users and tokens.
-- Arguments after `--`: the data file (a Lua table written by the runner) and the endpoint
-- (list, get, create or toggle). Each user has its own HS256 token and 20 seeded tasks; creates
-- go to other users, so every list stays at 20 tasks.
local data, endpoint
local counter = 0
local body = '{"title":"capacity","description":"created under load"}'

function init(args)
  data = dofile(args[1])
  endpoint = args[2]
end

function request()
  counter = counter + 1
  if endpoint == "create" then
    local w = data.writers[(counter % #data.writers) + 1]
    return wrk.format("POST", "/api/" .. w.id .. "/tasks",
      { ["Authorization"] = "Bearer " .. w.token, ["Content-Type"] = "application/json" }, body)
  end
  local u = data.users[(counter % #data.users) + 1]
  local headers = { ["Authorization"] = "Bearer " .. u.token }
  if endpoint == "list" then
    return wrk.format("GET", "/api/" .. u.id .. "/tasks", headers)
  end
  local task = u.tasks[(math.floor(counter / #data.users) % #u.tasks) + 1]
  if endpoint == "get" then
    return wrk.format("GET", "/api/" .. u.id .. "/tasks/" .. task, headers)
  end
  return wrk.format("PATCH", "/api/" .. u.id .. "/tasks/" .. task .. "/complete", headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'CAPACITY {"requests":%d,"duration_us":%d,"non_2xx":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"timeout":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
