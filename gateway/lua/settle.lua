-- Settle delivered jobs of one stream: acknowledge and delete each, and write its
-- record ("delivered", with its attempts) in the same atomic step, so a record says
-- delivered if and only if the job left its stream as delivered.
-- KEYS[1] delivery stream, KEYS[2] history index (sorted set)
-- ARGV[1] group, ARGV[2] record ttl (s), ARGV[3] now (ms), ARGV[4] record key prefix,
-- then per job: entry id, delivery id, encoded record.
-- XACK, XDEL and ZADD take many jobs at once: one call each per chunk, not per job
-- (each call from Lua costs Redis more than the work it does here).
local group, ttl, now, prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local CHUNK = 500 -- well under Lua's limit on unpack()ed values
local ids, scored = {}, {}
local function flush()
  if #ids > 0 then
    redis.call('XACK', KEYS[1], group, unpack(ids))
    redis.call('XDEL', KEYS[1], unpack(ids))
    redis.call('ZADD', KEYS[2], unpack(scored))
    ids, scored = {}, {}
  end
end
for i = 5, #ARGV, 3 do
  redis.call('SET', prefix .. ARGV[i + 1], ARGV[i + 2], 'EX', ttl)
  ids[#ids + 1] = ARGV[i]
  scored[#scored + 1] = now
  scored[#scored + 1] = ARGV[i + 1]
  if #ids == CHUNK then
    flush()
  end
end
flush()
return (#ARGV - 4) / 3
