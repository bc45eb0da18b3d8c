-- The wrk script of `make bench`: what to send, and a count of every status received.
--
--   wrk ... -s bench/wrk.lua URL -- METHOD BODY ["Name: value" ...]
--
-- BODY may be empty. wrk's own "Non-2xx or 3xx" line only counts statuses above 399
-- and does not say which; counting here catches a 3xx too and names the codes, so a
-- scenario that "runs fast" because it is answered 401 or 429 cannot go unnoticed.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   wrk.method = args[1] or "GET"
   if args[2] and args[2] ~= "" then
      wrk.body = args[2]
   end
   for i = 3, #args do
      local name, value = args[i]:match("^([^:]+):%s*(.*)$")
      wrk.headers[name] = value
   end
   -- Read back by done() through thread:get; string keys because only plain values cross.
   statuses = {}
end

function response(status, headers, body)
   local key = tostring(status)
   statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
   local totals = {}
   local non2xx = 0
   for _, thread in ipairs(threads) do
      for key, count in pairs(thread:get("statuses")) do
         totals[key] = (totals[key] or 0) + count
         if key:sub(1, 1) ~= "2" then
            non2xx = non2xx + count
         end
      end
   end
   local parts = {}
   for key, count in pairs(totals) do
      table.insert(parts, key .. "=" .. count)
   end
   table.sort(parts)
   -- One line that bench/run.py parses; keep its shape in step with WRK_STATUS_LINE there.
   io.write(string.format("bench-statuses non2xx=%d %s\n", non2xx, table.concat(parts, " ")))
end
