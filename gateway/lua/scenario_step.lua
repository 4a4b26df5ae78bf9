-- Fire one due scenario step exactly once: if the instance is unchanged since it was
-- read and this step entry is still ours to acknowledge, record the step and append its
-- delivery jobs in the same atomic step.
-- KEYS[1] steps stream, KEYS[2] instance hash, KEYS[3] listing sorted set,
-- KEYS[4..] delivery streams
-- ARGV[1] group, ARGV[2] step entry id, ARGV[3] expected rev, ARGV[4] new doc ('' to
-- leave the instance alone), ARGV[5] listing member, ARGV[6] now (ms),
-- ARGV[7] number of jobs, then (index into KEYS, job) pairs.
-- Returns 1 fired, 0 already handled elsewhere, -1 conflict (read again and retry).
if ARGV[4] ~= '' then
  local rev = redis.call('HGET', KEYS[2], 'rev') or '0'
  if rev ~= ARGV[3] then
    return -1
  end
end
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('XDEL', KEYS[1], ARGV[2])
if ARGV[4] ~= '' then
  redis.call('HINCRBY', KEYS[2], 'rev', 1)
  redis.call('HSET', KEYS[2], 'doc', ARGV[4])
  redis.call('ZADD', KEYS[3], ARGV[6], ARGV[5])
end
local i = 8
for _ = 1, tonumber(ARGV[7]) do
  redis.call('XADD', KEYS[tonumber(ARGV[i])], '*', 'j', ARGV[i + 1])
  i = i + 2
end
return 1
