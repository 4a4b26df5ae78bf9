-- Accept an event exactly once: remember its id for the dedupe window and append it
-- to the events stream in one atomic step, so concurrent copies cannot both get in.
-- KEYS[1] dedupe key, KEYS[2] events stream
-- ARGV[1] dedupe window (seconds), ARGV[2] the encoded event
-- Returns the stream entry id, or false for a duplicate.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local id = redis.call('XADD', KEYS[2], '*', 'e', ARGV[2])
redis.call('SET', KEYS[1], id, 'EX', ARGV[1])
return id
