-- wrk script for tests/bench/rest: GETs with ids drawn at random from the loaded set.
-- Usage: wrk ... -s rest-random.lua http://host:port -- MODE IDFILE NPAT
--   MODE: read | identifier | obs | everything
--   IDFILE: one Patient id per line; line k is the Patient with identifier urn:bench:mrn|MRN<k-1>
local mode, ids, n
local codes = { "8867-4", "8480-6", "8462-4" }

function init(args)
	mode = args[1]
	ids = {}
	for line in io.lines(args[2]) do ids[#ids + 1] = line end
	n = #ids
	-- each wrk thread has its own Lua state: seed from the time and this state's table address
	local addr = tonumber(tostring(ids):match("0x(%x+)") or "0", 16) or 0
	math.randomseed(os.time() + addr % 1000003)
end

function request()
	local k = math.random(n)
	local path
	if mode == "read" then
		path = "/fhir/Patient/" .. ids[k]
	elseif mode == "identifier" then
		path = "/fhir/Patient?identifier=urn:bench:mrn|MRN" .. (k - 1)
	elseif mode == "obs" then
		path = "/fhir/Observation?patient=Patient/" .. ids[k] .. "&code=http://loinc.org|" ..
			codes[math.random(3)] .. "&date=ge2020-01-01"
	else
		path = "/fhir/Patient/" .. ids[k] .. "/$everything"
	end
	return wrk.format("GET", path)
end

-- wrk counts non-2xx/3xx answers in summary.errors.status: a fast error path must not pass
-- for a fast server.
function done(summary, latency, requests)
	io.write(string.format("wrkstat non2xx=%d errors=%d\n", summary.errors.status,
		summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
