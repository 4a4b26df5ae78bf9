-- Write a scenario instance if nobody changed it since it was read (compare-and-set on
-- rev), moving its timers and listing entry in the same step.
-- KEYS[1] instance hash, KEYS[2] timers sorted set, KEYS[3] listing sorted set
-- ARGV[1] expected rev ('0' when absent), ARGV[2] new doc, ARGV[3] listing member,
-- ARGV[4] now (ms), ARGV[5] number of timers to remove, then members,
-- then the number of timers to add, then (due ms, member) pairs.
-- Returns 1 if written, 0 on a conflict (read again and retry).
local rev = redis.call('HGET', KEYS[1], 'rev') or '0'
if rev ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'rev', tonumber(rev) + 1, 'doc', ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
local i = 6
for _ = 1, tonumber(ARGV[5]) do
  redis.call('ZREM', KEYS[2], ARGV[i])
  i = i + 1
end
local adds = tonumber(ARGV[i])
i = i + 1
for _ = 1, adds do
  redis.call('ZADD', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
return 1
