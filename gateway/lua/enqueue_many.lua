-- Accept a batch of events, each exactly once: for each, if its id is unseen within the
-- dedupe window, append it to the events stream and remember the id, atomically. One
-- call per group commit instead of one per event.
-- KEYS[1] events stream
-- ARGV[1] dedupe window (seconds), ARGV[2] dedupe key prefix, then per event:
--   event id, encoded event
-- Returns, per event, its stream entry id, or false for a duplicate.
local ttl, prefix = ARGV[1], ARGV[2]
local out = {}
for i = 3, #ARGV, 2 do
  local key = prefix .. ARGV[i]
  if redis.call('EXISTS', key) == 1 then
    out[#out + 1] = false
  else
    local id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[i + 1])
    redis.call('SET', key, id, 'EX', ttl)
    out[#out + 1] = id
  end
end
return out
