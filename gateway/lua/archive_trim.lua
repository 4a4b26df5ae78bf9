-- Trim archived events from the stream and drop their search index entries, in one step
-- (a search never finds an index entry whose event is gone from both tiers) and one
-- round trip: as a MULTI of ZREMs, the replies of two per event cost the archiver more
-- event-loop time than the rest of its pass.
-- KEYS[1] events stream, KEYS[2] search index prefix (``ix:``; ``c:``/``i:`` follow, as
-- in enqueue_many.lua); ARGV[1] the first entry id kept (XTRIM MINID, exact), then per
-- archived event: entry id, customer id ('' none), invoice ref ('' none).
-- Returns how many entries were trimmed.
local trimmed = redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
for i = 2, #ARGV, 3 do
  if ARGV[i + 1] ~= '' then
    redis.call('ZREM', KEYS[2] .. 'c:' .. ARGV[i + 1], ARGV[i])
  end
  if ARGV[i + 2] ~= '' then
    redis.call('ZREM', KEYS[2] .. 'i:' .. ARGV[i + 2], ARGV[i])
  end
end
return trimmed
