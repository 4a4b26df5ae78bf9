-- Route a batch of events: for each event still pending in the router group, append its
-- delivery jobs and acknowledge it in the same atomic step. An event another router has
-- already acknowledged (after a reclaim) is skipped, so fan-out happens exactly once.
-- A routed event stays in the events stream: that is where replay finds it, until the
-- router trims entries older than the retention (cheaper than copying it to a key of
-- its own and deleting the entry: one write per event instead of three).
-- In the same step each job's delivery id joins its event's search index (a set,
-- ``ix:d:<event id>``), which the archiver empties as it archives the records.
-- KEYS[1] events stream, KEYS[2] routed-through mark, KEYS[3..] delivery streams
-- ARGV[1] group, ARGV[2] number of events, ARGV[3] index key prefix ('' for none),
-- ARGV[4] index TTL (s; 0: none, the archiver empties it), then per event:
--   entry id, encoded event, number of jobs, then per job:
--   index into KEYS, encoded job without its event (appended beside it, field 'e')
-- Returns the number of events routed.
local group = ARGV[1]
local count = tonumber(ARGV[2])
local index, index_keep = ARGV[3], ARGV[4]
local i = 5
local routed = 0
for _ = 1, count do
  local jobs = tonumber(ARGV[i + 2])
  if redis.call('XACK', KEYS[1], group, ARGV[i]) == 1 then
    local event = ARGV[i + 1]
    i = i + 3
    local indexed
    for _ = 1, jobs do
      redis.call('XADD', KEYS[tonumber(ARGV[i])], '*', 'j', ARGV[i + 1], 'e', event)
      if index ~= '' then
        -- A job's JSON opens with its id and event id (Delivery's first fields).
        local id, event_id = string.match(ARGV[i + 1], '^{"id":"([^"]+)","event_id":"([^"]+)"')
        if id then
          indexed = index .. 'd:' .. event_id
          redis.call('SADD', indexed, id)
        end
      end
      i = i + 2
    end
    if indexed and index_keep ~= '0' then
      redis.call('EXPIRE', indexed, index_keep)
    end
    routed = routed + 1
  else
    i = i + 3 + 2 * jobs
  end
end
-- The mark: every event at or below it is routed. Were the group lost (XGROUP DESTROY),
-- the router recreates it there, not at the stream's start, which would route again
-- every event kept for replay. It is the group's last-delivered id, or, while some
-- events are read but not routed yet, the id just below the oldest of them.
local mark
local pending = redis.call('XPENDING', KEYS[1], group)
if pending[1] == 0 then
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local fields = {}
    for f = 1, #info, 2 do
      fields[info[f]] = info[f + 1]
    end
    if fields['name'] == group then
      mark = fields['last-delivered-id']
    end
  end
else
  local ms, seq = string.match(pending[2], '^(%d+)-(%d+)$')
  if seq ~= '0' then
    mark = ms .. '-' .. string.format('%.0f', tonumber(seq) - 1)
  elseif ms ~= '0' then
    mark = string.format('%.0f', tonumber(ms) - 1) .. '-18446744073709551615'
  else
    mark = '0-0'
  end
end
if mark then
  redis.call('SET', KEYS[2], mark)
end
return routed
