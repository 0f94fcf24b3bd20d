-- edgecert's Docker socket proxy: the rules that method-and-path ACLs cannot
-- express (haproxy.cfg has those). Three calls of edgecert's can do harm, so
-- each is checked here before it reaches the engine, by parsing what it
-- carries, never by matching text:
--
--   POST /containers/{id}/exec   the body is parsed as JSON (as the engine
--     will parse it: keys case-insensitively, escapes decoded); it may set
--     only Cmd, AttachStdout and AttachStderr, the rest at their defaults
--     (no User, not Privileged, no Env, no WorkingDir, no tty, no stdin);
--     the container must be a proxy edgecert manages (labelled
--     <prefix>.nginx, or nginx-proxy's com.github.nginx-proxy.nginx), and
--     Cmd must be a command edgecert runs in it: its config test (the
--     <prefix>.config_test label, or nginx -t) or its <prefix>.reload_command.
--   POST /exec/{id}/start        the body may ask for no tty and no detach.
--   POST /containers/{id}/kill   no body; the query is exactly
--     signal=<the container's reload signal>: <prefix>.signal, or HUP.
--
-- The container is looked up in the engine (GET /containers/{id}/json over
-- the socket) and the request is sent on to that container's full ID, so the
-- name cannot be moved to another container in between. A request whose
-- check fails or cannot be made is refused (403, with the reason, which the
-- proxy also logs). Variables: EDGECERT_LABEL_PREFIX (edgecert's label
-- prefix, default edgecert) and DOCKER_SOCKET (default /var/run/docker.sock).

local PREFIX = os.getenv("EDGECERT_LABEL_PREFIX") or "edgecert"
local ENGINE = os.getenv("DOCKER_SOCKET") or "/var/run/docker.sock"
local NGINX_PROXY = "com.github.nginx-proxy.nginx"
local MAX_BODY = 4096  -- edgecert's bodies are under 200 bytes
local RELOAD_SIGNALS = { HUP = true, USR1 = true, USR2 = true }

-- JSON -----------------------------------------------------------------

local NULL = setmetatable({}, { __tostring = function() return "null" end })
local ARRAY, OBJECT = {}, {}

local function is_array(v) return type(v) == "table" and getmetatable(v) == ARRAY end
local function is_object(v) return type(v) == "table" and getmetatable(v) == OBJECT end

local ESCAPES = { ['"'] = '"', ['\\'] = '\\', ['/'] = '/', b = '\b', f = '\f', n = '\n', r = '\r', t = '\t' }

-- decode parses s as one JSON value (RFC 8259, strictly: no trailing data,
-- no duplicate keys, no lone surrogates, valid UTF-8, depth at most 32).
-- It returns the value, or nil and why not.
local function decode(s)
  local pos = 1
  local function fail(what) error({ json = what .. " at byte " .. pos }, 0) end
  local function ws() pos = s:find("[^ \t\r\n]", pos) or #s + 1 end
  local function at(n) return s:sub(pos, pos + (n or 1) - 1) end

  local function str()
    pos = pos + 1 -- the opening quote
    local out = {}
    while true do
      local i = s:find('["\\\0-\31]', pos)
      if not i then fail("unterminated string") end
      out[#out + 1] = s:sub(pos, i - 1)
      pos = i
      local c = at()
      if c == '"' then
        pos = pos + 1
        break
      elseif c ~= '\\' then
        fail("control character in a string")
      end
      local e = s:sub(i + 1, i + 1)
      if ESCAPES[e] then
        out[#out + 1] = ESCAPES[e]
        pos = i + 2
      elseif e == 'u' then
        local hex = s:match("^%x%x%x%x", i + 2)
        if not hex then fail("bad \\u escape") end
        local cp = tonumber(hex, 16)
        pos = i + 6
        if cp >= 0xD800 and cp <= 0xDBFF then
          local lo = s:match("^\\u(%x%x%x%x)", pos)
          lo = lo and tonumber(lo, 16)
          if not lo or lo < 0xDC00 or lo > 0xDFFF then fail("lone surrogate") end
          cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
          pos = pos + 6
        elseif cp >= 0xDC00 and cp <= 0xDFFF then
          fail("lone surrogate")
        end
        out[#out + 1] = utf8.char(cp)
      else
        fail("bad escape")
      end
    end
    local r = table.concat(out)
    if not utf8.len(r) then fail("invalid UTF-8 in a string") end
    return r
  end

  local function number()
    local m = s:match("^-?%d+", pos)
    if not m then fail("not a JSON value") end
    if m:match("^-?0%d") then fail("a number with a leading zero") end
    local j = pos + #m
    local frac = s:match("^%.%d+", j)
    if frac then j = j + #frac elseif s:sub(j, j) == "." then fail("bad number") end
    local exp = s:match("^[eE][-+]?%d+", j)
    if exp then j = j + #exp elseif s:match("^[eE]", j) then fail("bad number") end
    local v = tonumber(s:sub(pos, j - 1))
    pos = j
    return v
  end

  local value
  value = function(depth)
    if depth > 32 then fail("nested too deep") end
    ws()
    local c = at()
    if c == '{' then
      pos = pos + 1
      local obj = setmetatable({}, OBJECT)
      ws()
      if at() == '}' then
        pos = pos + 1
        return obj
      end
      while true do
        ws()
        if at() ~= '"' then fail("want a key") end
        local k = str()
        ws()
        if at() ~= ':' then fail("want ':'") end
        pos = pos + 1
        if obj[k] ~= nil then fail("key " .. k .. " twice") end
        obj[k] = value(depth + 1)
        ws()
        c = at()
        pos = pos + 1
        if c == '}' then return obj end
        if c ~= ',' then
          pos = pos - 1
          fail("want ',' or '}'")
        end
      end
    elseif c == '[' then
      pos = pos + 1
      local arr = setmetatable({}, ARRAY)
      ws()
      if at() == ']' then
        pos = pos + 1
        return arr
      end
      while true do
        arr[#arr + 1] = value(depth + 1)
        ws()
        c = at()
        pos = pos + 1
        if c == ']' then return arr end
        if c ~= ',' then
          pos = pos - 1
          fail("want ',' or ']'")
        end
      end
    elseif c == '"' then
      return str()
    elseif at(4) == "true" then
      pos = pos + 4
      return true
    elseif at(5) == "false" then
      pos = pos + 5
      return false
    elseif at(4) == "null" then
      pos = pos + 4
      return NULL
    end
    return number()
  end

  local ok, v = pcall(function()
    local v = value(0)
    ws()
    if pos <= #s then fail("data after the value") end
    return v
  end)
  if ok then return v end
  if type(v) == "table" and v.json then return nil, "not JSON: " .. v.json end
  return nil, "not JSON: " .. tostring(v)
end

-- The engine ------------------------------------------------------------

-- inspect is the engine's view of a container (by name or ID): the parsed
-- body of GET /containers/{ref}/json, or nil and why not.
local function inspect(ref)
  if not ref:match("^[A-Za-z0-9_.-]+$") then return nil, "bad container reference" end
  local sock = core.tcp()
  sock:settimeout(5)
  if not sock:connect("unix@" .. ENGINE) then return nil, "the engine at " .. ENGINE .. " does not answer" end
  sock:send("GET /containers/" .. ref .. "/json HTTP/1.0\r\nHost: docker\r\n\r\n")
  local resp = sock:receive("*a")
  sock:close()
  if not resp then return nil, "the engine did not answer an inspect" end
  local head, body = resp:match("^(.-)\r\n\r\n(.*)$")
  local code = head and head:match("^HTTP/1%.%d (%d%d%d)")
  if code == "404" then return nil, "no container " .. ref end
  if code ~= "200" then return nil, "the engine answered an inspect with " .. tostring(code) end
  local c, err = decode(body)
  if not is_object(c) or type(c.Id) ~= "string" or not c.Id:match("^%x+$") then
    return nil, "the engine's inspect: " .. tostring(err or "no Id")
  end
  return c
end

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

local function fields(s)
  local t = {}
  for f in s:gmatch("%S+") do t[#t + 1] = f end
  return t
end

local function labels_of(c)
  local l = is_object(c.Config) and c.Config.Labels
  if is_object(l) then return l end
  return {}
end

-- managed says how edgecert treats a container, as its label parser does:
-- "edgecert" (labelled <prefix>.nginx, not false), "nginx-proxy" (only
-- nginx-proxy's label), or nil (not a proxy edgecert reloads).
local function managed(labels)
  local v = labels[PREFIX .. ".nginx"]
  if type(v) == "string" then
    local lv = trim(v):lower()
    if lv == "false" or lv == "0" or lv == "no" or lv == "" then return nil end
    return "edgecert"
  end
  if labels[NGINX_PROXY] ~= nil then return "nginx-proxy" end
  return nil
end

-- commands are the commands edgecert runs in a container with labels.
local function commands(labels)
  local kind = managed(labels)
  if kind == "nginx-proxy" then return { { "nginx", "-t" }, { "nginx", "-s", "reload" } } end
  if kind ~= "edgecert" then return {} end
  local out = {}
  local test = labels[PREFIX .. ".config_test"]
  if type(test) ~= "string" then
    out[#out + 1] = { "nginx", "-t" }
  elseif #fields(test) > 0 then
    out[#out + 1] = fields(test)
  end
  local reload = labels[PREFIX .. ".reload_command"]
  if type(reload) == "string" and #fields(reload) > 0 then out[#out + 1] = fields(reload) end
  return out
end

-- reload_signal is the signal edgecert sends a container, or nil.
local function reload_signal(labels)
  if managed(labels) ~= "edgecert" then return nil end
  local v = labels[PREFIX .. ".signal"]
  if type(v) ~= "string" then return "HUP" end
  v = trim(v):upper():gsub("^SIG", "")
  if RELOAD_SIGNALS[v] then return v end
  return nil
end

local function same(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do
    if a[i] ~= b[i] then return false end
  end
  return true
end

local function show(cmd)
  local q = {}
  for i, a in ipairs(cmd) do q[i] = string.format("%q", a) end
  return "[" .. table.concat(q, " ") .. "]"
end

-- The checks ------------------------------------------------------------

-- body is the request's body, or nil and why not: no chunked bodies, a
-- Content-Length that says what came, at most MAX_BODY bytes.
local function body(txn)
  if txn.f:req_hdr_cnt("transfer-encoding") > 0 then return nil, "chunked bodies are refused" end
  local n = txn.f:req_hdr_cnt("content-length")
  local cl = n == 1 and tonumber(txn.f:req_hdr("content-length")) or (n == 0 and 0) or nil
  if not cl then return nil, "a body without one plain Content-Length" end
  if cl > MAX_BODY then return nil, "a body over " .. MAX_BODY .. " bytes" end
  local b = txn.f:req_body() or ""
  if #b ~= cl then return nil, "a body shorter than its Content-Length" end
  return b
end

-- fields_ok checks a decoded body against allowed: each key (ASCII letters,
-- matched case-insensitively, as the engine does, and once) must be one of
-- allowed's, and allowed[key](value) must hold.
local function fields_ok(obj, allowed)
  if not is_object(obj) then return "the body is not a JSON object" end
  local seen = {}
  for k in pairs(obj) do
    if not k:match("^[A-Za-z]+$") or not allowed[k:lower()] then
      return "key " .. string.format("%q", k) .. " is not one edgecert sends"
    end
    if seen[k:lower()] then return "key " .. k .. " twice (keys are matched case-insensitively)" end
    seen[k:lower()] = true
  end
  for k, v in pairs(obj) do
    local why = allowed[k:lower()](v)
    if why then return k .. " " .. why end
  end
  return nil
end

local function is_false(v) if v ~= false then return "must be false" end end
local function is_bool(v) if type(v) ~= "boolean" then return "must be true or false" end end
local function is_empty_string(v) if v ~= "" then return "must be empty" end end
local function is_null(v) if v ~= NULL then return "must be null" end end
local function is_no_list(v) if v ~= NULL and not (is_array(v) and #v == 0) then return "must be null or empty" end end
local function is_cmd(v)
  if not is_array(v) or #v == 0 then return "must be a list of strings" end
  for _, a in ipairs(v) do
    if type(a) ~= "string" then return "must be a list of strings" end
  end
end

local EXEC_CREATE = {
  user = is_empty_string, privileged = is_false, tty = is_false, consolesize = is_null,
  attachstdin = is_false, attachstdout = is_bool, attachstderr = is_bool, detach = is_false,
  detachkeys = is_empty_string, env = is_no_list, workingdir = is_empty_string, cmd = is_cmd,
}
local EXEC_START = { detach = is_false, tty = is_false, consolesize = is_null }

-- container_of checks the container in path and returns it and the path
-- with its full ID, or nil and why not.
local function container_of(path, verb)
  local version, ref = path:match("^(/?v?[0-9.]*)/containers/([A-Za-z0-9_.-]+)/" .. verb .. "$")
  if not ref then return nil, "bad path" end
  local c, err = inspect(ref)
  if not c then return nil, err end
  return c, version .. "/containers/" .. c.Id .. "/" .. verb
end

local function check_exec_create(txn)
  local b, err = body(txn)
  if not b then return err end
  local req, derr = decode(b)
  if req == nil then return derr end
  local why = fields_ok(req, EXEC_CREATE)
  if why then return why end
  local cmd
  for k, v in pairs(req) do
    if k:lower() == "cmd" then cmd = v end
  end
  if not cmd then return "no Cmd" end
  local c, path = container_of(txn.sf:path(), "exec")
  if not c then return path end
  local name = type(c.Name) == "string" and c.Name:gsub("^/", "") or c.Id
  for _, allowed in ipairs(commands(labels_of(c))) do
    if same(cmd, allowed) then
      txn.http:req_set_path(path)
      return nil
    end
  end
  if not managed(labels_of(c)) then
    return "container " .. name .. " is not a proxy edgecert reloads (no " .. PREFIX .. ".nginx label)"
  end
  return "Cmd " .. show(cmd) .. " is not a command edgecert runs in container " .. name ..
      " (its " .. PREFIX .. ".config_test or " .. PREFIX .. ".reload_command label, or nginx -t)"
end

local function check_exec_start(txn)
  if txn.sf:query() ~= "" then return "a query string" end
  local b, err = body(txn)
  if not b then return err end
  local req, derr = decode(b)
  if req == nil then return derr end
  return fields_ok(req, EXEC_START)
end

local function check_kill(txn)
  local b, err = body(txn)
  if not b then return err end
  if #b > 0 then return "a body (the engine would read a signal from it)" end
  local sig = txn.sf:query():match("^signal=([A-Z0-9]+)$")
  if not sig then return "the query must be exactly signal=<HUP, USR1 or USR2>" end
  local c, path = container_of(txn.sf:path(), "kill")
  if not c then return path end
  local want = reload_signal(labels_of(c))
  if sig ~= want then
    local name = type(c.Name) == "string" and c.Name:gsub("^/", "") or c.Id
    return "signal " .. sig .. " is not container " .. name .. "'s reload signal (" .. tostring(want or "none: not a proxy edgecert signals") .. ")"
  end
  txn.http:req_set_path(path)
  return nil
end

-- edgecert_check runs the check for the request's call and sets
-- txn.edgecert_ok, or txn.edgecert_refused to the reason.
core.register_action("edgecert_check", { "http-req" }, function(txn)
  local path, method = txn.sf:path(), txn.sf:method()
  local why
  if method ~= "POST" then
    why = "method " .. method
  elseif path:match("/exec$") then
    why = check_exec_create(txn)
  elseif path:match("/start$") then
    why = check_exec_start(txn)
  elseif path:match("/kill$") then
    why = check_kill(txn)
  else
    why = "no check for " .. path
  end
  if why then
    why = why:sub(1, 300)
    txn:set_var("txn.edgecert_refused", why)
    txn:Warning("refused " .. method .. " " .. path .. ": " .. why)
  else
    txn:set_var("txn.edgecert_ok", "1")
  end
end, 0)
