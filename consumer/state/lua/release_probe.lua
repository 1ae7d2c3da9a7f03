-- Give a circuit's probe lease back, only if it is still the caller's.
--
-- KEYS[1] the probe key (...:circuit:probe or ...:cc:<campaign>:probe)
-- ARGV[1] the owner token the caller's try_probe wrote as the key's value
-- A probe slower than its lease may find the key taken since by another replica's probe (or, on
-- the same replica, another batch's): deleting it then would let a third probe at once.
-- Returns 1 when the lease was the caller's and is released, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
