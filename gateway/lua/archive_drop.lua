-- Drop delivery records the archiver has committed to the archive, each only if it has
-- not changed since it was read: a worker updating a record (a replay's new attempt)
-- moves its score in the history index in the same transaction, so a record whose score
-- is still at most the one read is the one archived. A script because the check and the
-- delete must be one step: a record written between them would otherwise be lost.
-- KEYS[1] history index; ARGV[1] record key prefix, then per record: id, score read.
-- Returns how many were dropped.
local dropped = 0
for i = 2, #ARGV, 2 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) <= tonumber(ARGV[i + 1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('DEL', ARGV[1] .. ARGV[i])
    dropped = dropped + 1
  end
end
return dropped
