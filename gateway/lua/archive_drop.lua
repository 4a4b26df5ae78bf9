-- Drop delivery records the archiver has committed to the archive, each only if it has
-- not changed since it was read: a worker updating a record (a replay's new attempt)
-- moves its score in the history index in the same transaction, so a record whose score
-- is still at most the one read is the one archived. A script because the check and the
-- delete must be one step: a record written between them would otherwise be lost.
-- A dropped record also leaves its event's search index (``ix:d:<event id>``): from
-- then on the archive finds it by event.
-- KEYS[1] history index; ARGV[1] record key prefix, ARGV[2] event index key prefix,
-- then per record: id, score read, event id ('' if unknown).
-- Returns how many were dropped.
local dropped = 0
for i = 3, #ARGV, 3 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) <= tonumber(ARGV[i + 1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('DEL', ARGV[1] .. ARGV[i])
    if ARGV[i + 2] ~= '' then
      redis.call('SREM', ARGV[2] .. ARGV[i + 2], ARGV[i])
    end
    dropped = dropped + 1
  end
end
return dropped
