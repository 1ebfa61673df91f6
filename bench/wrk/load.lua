-- wrk script for bench/: unique POST bodies per request, answer checks, and a JSON summary.
-- Arguments after "--" are key=value pairs:
--   mode    gql_add | commet_add | paygentic_add | body | get | mix
--   path    request path (default "/")
--   auth    Authorization header value (or the x-api-key value for commet_add)
--   salt    digits that make account numbers unique across runs
--   org     Paygentic organizationId (paygentic_add)
--   body    file holding a fixed body (body, mix)
--   every   mix: one gql_add in this many requests (default 10)
--   ok      substring a good answer must contain; bad: substrings ("|"-separated) it must not

local threads = {}
local next_id = 1

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local opts = {}
local fixed_body = nil
local n = 0
answers = 0
failed = 0
sample = ""

local function read_file(name)
  local handle = assert(io.open(name, "rb"))
  local text = handle:read("*a")
  handle:close()
  return text
end

function init(args)
  for _, arg in ipairs(args) do
    local key, value = string.match(arg, "^([%w_]+)=(.*)$")
    if key then opts[key] = value end
  end
  opts.mode = opts.mode or "get"
  opts.path = opts.path or "/"
  opts.salt = opts.salt or "1"
  opts.every = tonumber(opts.every or "10")
  if opts.body then fixed_body = read_file(opts.body) end
end

local function account_number()
  return string.format("%s%d%09d", opts.salt, id, n)
end

local function reference()
  return string.format("pgw_bench%s%02d%019d", opts.salt, id, n)
end

local function gql_add()
  local body = '{"query": "mutation($input: AddBankAccountInput!) { addBankAccount(input: $input) '
    .. '{ __typename ... on AddBankAccountSuccess { bankAccount { id last4 } } } }", '
    .. '"variables": {"input": {"bankAccount": {"accountNumber": "' .. account_number()
    .. '", "holderName": "Bench Holder", "routingNumber": "021000021"}}}}'
  return wrk.format("POST", opts.path,
    {["Content-Type"] = "application/json", ["Authorization"] = opts.auth}, body)
end

local function commet_add()
  local body = '{"accountNumber": "' .. account_number() .. '", "accountHolderName": '
    .. '"Bench Holder", "routingNumber": "021000021", "setDefault": false}'
  return wrk.format("POST", opts.path, {
    ["Content-Type"] = "application/json",
    ["Accept"] = "application/json",
    ["x-api-key"] = opts.auth,
    ["commet-version"] = "2026-07-11",
    ["Idempotency-Key"] = reference(),
  }, body)
end

local function paygentic_add()
  local body = '{"organizationId": "' .. opts.org .. '", "countryCode": "US", '
    .. '"bankName": "Bench Bank", "currency": "USD", "accountNumber": "' .. account_number()
    .. '", "routingNumber": "021000021", "accountHolderName": "Bench Holder", '
    .. '"accountHolderType": "company", "metadata": {"gatewayReference": "' .. reference() .. '"}}'
  return wrk.format("POST", opts.path, {
    ["Content-Type"] = "application/json",
    ["Accept"] = "application/json",
    ["Authorization"] = opts.auth,
  }, body)
end

local function fixed()
  return wrk.format("POST", opts.path,
    {["Content-Type"] = "application/json", ["Authorization"] = opts.auth}, fixed_body)
end

local function get()
  return wrk.format("GET", opts.path, {["Accept"] = "application/json", ["Authorization"] = opts.auth})
end

function request()
  n = n + 1
  local mode = opts.mode
  if mode == "gql_add" then return gql_add() end
  if mode == "commet_add" then return commet_add() end
  if mode == "paygentic_add" then return paygentic_add() end
  if mode == "body" then return fixed() end
  if mode == "mix" then
    if n % opts.every == 0 then return gql_add() end
    return fixed()
  end
  return get()
end

function response(status, headers, body)
  answers = answers + 1
  local good = status >= 200 and status < 300
  if good and opts.ok and not string.find(body, opts.ok, 1, true) then good = false end
  if good and opts.bad then
    for marker in string.gmatch(opts.bad, "[^|]+") do
      if string.find(body, marker, 1, true) then good = false end
    end
  end
  if not good then
    failed = failed + 1
    if sample == "" then sample = status .. " " .. string.sub(body, 1, 300) end
  end
end

local function quote(text)
  text = string.gsub(text, '[%c"\\]', function(c) return string.format("\\u%04x", string.byte(c)) end)
  return '"' .. text .. '"'
end

function done(summary, latency, requests)
  local failures, answered, first = 0, 0, ""
  for _, thread in ipairs(threads) do
    failures = failures + (thread:get("failed") or 0)
    answered = answered + (thread:get("answers") or 0)
    local s = thread:get("sample") or ""
    if first == "" then first = s end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"duration_us": %d, "requests": %d, "answers": %d, "failed": %d, '
      .. '"socket_errors": %d, "timeouts": %d, "status_errors": %d, "bytes": %d, '
      .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d, '
      .. '"sample": %s}\n',
    summary.duration, summary.requests, answered, failures,
    e.connect + e.read + e.write, e.timeout, e.status, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max, quote(first)))
end
