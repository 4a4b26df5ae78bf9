-- Route a batch of events: for each event still pending in the router group, append its
-- delivery jobs, keep the event for replay, and acknowledge it in the same atomic step.
-- An event another router has already acknowledged (after a reclaim) is skipped, so
-- fan-out happens exactly once.
-- KEYS[1] events stream, KEYS[2..] delivery streams
-- ARGV[1] group, ARGV[2] number of events, ARGV[3] stored-event ttl (s), then per event:
--   entry id, stored-event key, encoded event, number of jobs, then per job:
--   index into KEYS, encoded job without its event (appended beside it, field 'e')
-- Returns the number of events routed.
local group = ARGV[1]
local count = tonumber(ARGV[2])
local ttl = ARGV[3]
local i = 4
local routed, deleting = 0, {}
for _ = 1, count do
  local entry = ARGV[i]
  local jobs = tonumber(ARGV[i + 3])
  if redis.call('XACK', KEYS[1], group, entry) == 1 then
    local event = ARGV[i + 2]
    redis.call('SET', ARGV[i + 1], event, 'EX', ttl)
    i = i + 4
    for _ = 1, jobs do
      redis.call('XADD', KEYS[tonumber(ARGV[i])], '*', 'j', ARGV[i + 1], 'e', event)
      i = i + 2
    end
    routed = routed + 1
    deleting[#deleting + 1] = entry
    if #deleting == 500 then -- well under Lua's limit on unpack()ed values
      redis.call('XDEL', KEYS[1], unpack(deleting))
      deleting = {}
    end
  else
    i = i + 4 + 2 * jobs
  end
end
-- Routed entries are deleted together: one call, not one per event.
if #deleting > 0 then
  redis.call('XDEL', KEYS[1], unpack(deleting))
end
return routed
