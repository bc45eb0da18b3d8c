-- The wrk script of `make bench`: what to send, and a count of every status received.
--
--   wrk ... -s bench/wrk.lua URL -- METHOD BODY ["Name: value" ...]
--
-- BODY may be empty, or "@FILE": one body per line of FILE, each request one of them at
-- random (orders of products spread over a catalog). An argument "@paths=FILE" after
-- BODY is no header: each request goes to one of FILE's paths (one a line, with its query)
-- at random, so that reads miss what the server caches. wrk's own "Non-2xx or 3xx" line only counts statuses above 399
-- and does not say which; counting here catches a 3xx too and names the codes, so a
-- scenario that "runs fast" because it is answered 401 or 429 cannot go unnoticed.
--
-- A header given as "Name: {unique}" gets a value of its own in every request:
-- <run nonce>-<thread>-<counter>, the nonce read from /dev/urandom once per wrk run, so
-- that neither two threads nor two runs (warm-up, measurement) ever send the same one
-- (an Idempotency-Key per order). Such a run builds every request anew (wrk.format, a
-- little more client CPU) and done() also says how many requests were sent, so that the
-- ones still in flight when wrk hung up at its deadline can be accounted for.

local threads = {}
local nonce = nil

local function random_hex(bytes)
   local source = assert(io.open("/dev/urandom", "rb"))
   local raw = source:read(bytes)
   source:close()
   return (raw:gsub(".", function(c) return string.format("%02x", string.byte(c)) end))
end

function setup(thread)
   table.insert(threads, thread)
   nonce = nonce or random_hex(6)
   thread:set("unique_prefix", nonce .. "-" .. #threads .. "-")
end

function init(args)
   wrk.method = args[1] or "GET"
   bodies = nil
   if args[2] and args[2]:sub(1, 1) == "@" then
      bodies = {}
      for line in io.lines(args[2]:sub(2)) do
         table.insert(bodies, line)
      end
      math.randomseed(tonumber(random_hex(4), 16))
   elseif args[2] and args[2] ~= "" then
      wrk.body = args[2]
   end
   local unique = {}
   paths = nil
   for i = 3, #args do
      local name, value = args[i]:match("^([^:]+):%s*(.*)$")
      if args[i]:sub(1, 7) == "@paths=" then
         -- Not a header: each request one of the paths (with query) of the file, at random.
         paths = {}
         for line in io.lines(args[i]:sub(8)) do
            table.insert(paths, line)
         end
         math.randomseed(tonumber(random_hex(4), 16))
      elseif value == "{unique}" then
         table.insert(unique, name)
      else
         wrk.headers[name] = value
      end
   end
   -- Read back by done() through thread:get; string keys because only plain values cross.
   statuses = {}
   sent = -1  -- -1: requests are not counted (a static request, built once by wrk)
   if #unique > 0 or bodies or paths then
      sent = 0
      -- Defined only here: wrk builds the request once unless a request() global exists
      -- after init(), and a per-request build is slower for the fixed-request scenarios.
      request = function()
         sent = sent + 1
         for _, name in ipairs(unique) do
            wrk.headers[name] = unique_prefix .. sent
         end
         if bodies then
            wrk.body = bodies[math.random(#bodies)]
         end
         if paths then
            return wrk.format(nil, paths[math.random(#paths)])
         end
         return wrk.format()
      end
   end
end

function response(status, headers, body)
   local key = tostring(status)
   statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
   local totals = {}
   local non2xx = 0
   local sent_total = 0
   for _, thread in ipairs(threads) do
      for key, count in pairs(thread:get("statuses")) do
         totals[key] = (totals[key] or 0) + count
         if key:sub(1, 1) ~= "2" then
            non2xx = non2xx + count
         end
      end
      local sent = thread:get("sent")
      if sent_total >= 0 and sent >= 0 then
         sent_total = sent_total + sent
      else
         sent_total = -1
      end
   end
   local parts = {}
   for key, count in pairs(totals) do
      table.insert(parts, key .. "=" .. count)
   end
   table.sort(parts)
   -- Lines that bench/drivers.py parses; keep their shape in step with Wrk.parse there.
   io.write(string.format("bench-statuses non2xx=%d %s\n", non2xx, table.concat(parts, " ")))
   if sent_total >= 0 then
      io.write(string.format("bench-sent %d\n", sent_total))
   end
end
