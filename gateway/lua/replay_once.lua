-- Queue a delivery again for a bulk replay job, once per job: the job's set of what it
-- replayed in this shard decides, in the same step as the queueing, so a job resumed
-- after a crash (its cursor saved a little behind) sends nothing twice. A dead letter
-- also leaves its stream here (XDEL decides against a replay by someone else).
-- KEYS[1] the job's replayed set, KEYS[2] dead-letter stream, KEYS[3] target stream,
-- KEYS[4] history index
-- ARGV[1] delivery id, ARGV[2] dead entry id ('' none), ARGV[3] job, ARGV[4] record key,
-- ARGV[5] record, ARGV[6] ttl (s), ARGV[7] now (ms)
-- Returns 1 queued, 0 already replayed by this job, -1 the dead letter is gone.
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then
  return 0
end
if ARGV[2] ~= '' and redis.call('XDEL', KEYS[2], ARGV[2]) == 0 then
  return -1
end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('XADD', KEYS[3], '*', 'j', ARGV[3])
redis.call('SET', ARGV[4], ARGV[5], 'EX', ARGV[6])
redis.call('ZADD', KEYS[4], ARGV[7], ARGV[1])
return 1
