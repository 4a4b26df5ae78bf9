-- Move one dead letter back to a stream, once: XDEL decides, so two operators replaying
-- the same entry at once queue it a single time.
-- KEYS[1] dead-letter stream, KEYS[2] target stream, KEYS[3] history index
-- ARGV[1] dead entry id, ARGV[2] field name ('j' job, 'e' event), ARGV[3] payload,
-- ARGV[4] record key ('' for none), ARGV[5] record, ARGV[6] ttl (s), ARGV[7] now (ms),
-- ARGV[8] delivery id. Returns 1 if moved.
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('XADD', KEYS[2], '*', ARGV[2], ARGV[3])
if ARGV[4] ~= '' then
  redis.call('SET', ARGV[4], ARGV[5], 'EX', ARGV[6])
  redis.call('ZADD', KEYS[3], ARGV[7], ARGV[8])
end
return 1
