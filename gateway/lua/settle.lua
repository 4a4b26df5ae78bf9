-- Settle delivered jobs of one stream: acknowledge and delete each, and write its
-- record ("delivered", with its attempts) in the same atomic step, so a record says
-- delivered if and only if the job left its stream as delivered.
-- KEYS[1] delivery stream, KEYS[2] history index (sorted set)
-- ARGV[1] group, ARGV[2] record ttl (s), ARGV[3] now (ms), ARGV[4] record key prefix,
-- then per job: entry id, delivery id, encoded record.
local group, ttl, now, prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
for i = 5, #ARGV, 3 do
  redis.call('XACK', KEYS[1], group, ARGV[i])
  redis.call('XDEL', KEYS[1], ARGV[i])
  redis.call('SET', prefix .. ARGV[i + 1], ARGV[i + 2], 'EX', ttl)
  redis.call('ZADD', KEYS[2], now, ARGV[i + 1])
end
return (#ARGV - 4) / 3
