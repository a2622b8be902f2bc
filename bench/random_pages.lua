-- wrk script: 100-segment pages at random places in a flow of one-second segments, so that
-- neither the database's cache nor the signed-URL window sees one page over and over.
-- Arguments (after "--"): the flow id and its segment count.
local flow, count

function init(args)
  flow, count = args[1], tonumber(args[2])
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end

function request()
  local at = math.random(0, count - 100)
  return wrk.format("GET", "/flows/" .. flow .. "/segments?limit=100&timerange=[" .. at .. ":0_" .. (at + 100) .. ":0)")
end
