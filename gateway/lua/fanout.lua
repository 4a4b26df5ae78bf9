-- Route a batch of events: for each event still pending in the router group, append its
-- delivery jobs and acknowledge it in the same atomic step. An event another router has
-- already acknowledged (after a reclaim) is skipped, so fan-out happens exactly once.
-- KEYS[1] events stream, KEYS[2..] delivery streams
-- ARGV[1] group, ARGV[2] number of events, then per event:
--   entry id, number of jobs, then per job: index into KEYS, encoded job
-- Returns the number of events routed.
local group = ARGV[1]
local count = tonumber(ARGV[2])
local i = 3
local routed = 0
for _ = 1, count do
  local entry = ARGV[i]
  local jobs = tonumber(ARGV[i + 1])
  i = i + 2
  if redis.call('XACK', KEYS[1], group, entry) == 1 then
    for _ = 1, jobs do
      redis.call('XADD', KEYS[tonumber(ARGV[i])], '*', 'j', ARGV[i + 1])
      i = i + 2
    end
    redis.call('XDEL', KEYS[1], entry)
    routed = routed + 1
  else
    i = i + 2 * jobs
  end
end
return routed
