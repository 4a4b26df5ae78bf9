-- Accept a batch of events, each exactly once: for each, if its id was not accepted
-- within the dedupe window, append it to the events stream and point its dedupe key at
-- the new entry, atomically. One call per group commit instead of one per event.
-- The key outlives the window (it is kept as long as the event is: replay finds the
-- event through it), so "seen within the window" is read from the entry id it holds,
-- whose first part is the time Redis accepted the event (ms).
-- KEYS[1] events stream
-- ARGV[1] dedupe window (s), ARGV[2] how long the key is kept (s, >= the window),
-- ARGV[3] dedupe key prefix, then per event: event id, encoded event
-- Returns, per event, its stream entry id, or false for a duplicate.
local window_ms, keep, prefix = tonumber(ARGV[1]) * 1000, ARGV[2], ARGV[3]
local now = redis.call('TIME')
local since = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - window_ms
local out = {}
for i = 4, #ARGV, 2 do
  local key = prefix .. ARGV[i]
  local seen = redis.call('GET', key)
  local at = seen and tonumber(string.match(seen, '^(%d+)'))
  if seen and (at == nil or at > since) then
    out[#out + 1] = false
  else
    local id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[i + 1])
    redis.call('SET', key, id, 'EX', keep)
    out[#out + 1] = id
  end
end
return out
