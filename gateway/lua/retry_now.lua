-- Send at once a delivery waiting in the retries set for its next attempt: take it out
-- and queue it on its stream in one step. ZREM decides, so a worker promoting the same
-- job meanwhile (promote.lua) or a second operator queues it once.
-- KEYS[1] retries sorted set, KEYS[2] the job's stream, KEYS[3] history index
-- ARGV[1] member as parked, ARGV[2] job to queue, ARGV[3] record key, ARGV[4] record,
-- ARGV[5] ttl (s), ARGV[6] now (ms), ARGV[7] delivery id. Returns 1 if queued.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('XADD', KEYS[2], '*', 'j', ARGV[2])
redis.call('SET', ARGV[3], ARGV[4], 'EX', ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[7])
return 1
