-- Accept a batch of events, each exactly once: for each, if its id was not accepted
-- within the dedupe window, append it to the events stream and point its dedupe key at
-- the new entry, atomically. One call per group commit instead of one per event.
-- The key outlives the window (it is kept as long as the event is: replay finds the
-- event through it), so "seen within the window" is read from the entry id it holds,
-- whose first part is the time Redis accepted the event (ms).
-- In the same step the event's entry joins the search indexes of its customer and its
-- invoice ref (sorted sets scored by acceptance ms): the archiver removes it when it
-- archives the event. Without an archive (index retention > 0), members older than the
-- retention are dropped here instead, and a TTL reaps an idle index.
-- KEYS[1] events stream, KEYS[2] (optional) index key prefix
-- ARGV[1] dedupe window (s), ARGV[2] how long the key is kept (s, >= the window),
-- ARGV[3] dedupe key prefix, then per event: event id, encoded event.
-- With KEYS[2]: ARGV[4] index retention (s; 0: the archiver trims), and per event also
-- customer id ('' none)
-- and invoice ref ('' none) after the encoded event.
-- Returns, per event, its stream entry id, or false for a duplicate.
local window_ms, keep, prefix = tonumber(ARGV[1]) * 1000, ARGV[2], ARGV[3]
local index, index_keep, first, stride = KEYS[2], 0, 4, 2
if index then
  index_keep, first, stride = tonumber(ARGV[4]), 5, 4
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local since = now_ms - window_ms
local out = {}
local function indexed(key, id)
  redis.call('ZADD', key, now_ms, id)
  if index_keep > 0 then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. (now_ms - index_keep * 1000))
    redis.call('EXPIRE', key, index_keep)
  end
end
for i = first, #ARGV, stride do
  local key = prefix .. ARGV[i]
  local seen = redis.call('GET', key)
  local at = seen and tonumber(string.match(seen, '^(%d+)'))
  if seen and (at == nil or at > since) then
    out[#out + 1] = false
  else
    local id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[i + 1])
    redis.call('SET', key, id, 'EX', keep)
    if index and ARGV[i + 2] ~= '' then
      indexed(index .. 'c:' .. ARGV[i + 2], id)
    end
    if index and ARGV[i + 3] ~= '' then
      indexed(index .. 'i:' .. ARGV[i + 3], id)
    end
    out[#out + 1] = id
  end
end
return out
