-- cbd's Redis Functions library (docs/REDIS.md): one function per
-- operation, each atomic in Redis. The rules follow
-- daemon/breaker/memory_store.cpp rule for rule; time comes from Redis's
-- TIME (or, under --test-clock, from the daemon), so every host agrees.
--
-- cbd loads this text with FUNCTION LOAD when it connects, after two
-- generated parts (redis_functions.cpp): the `#!lua name=` line, whose
-- name carries a digest of the whole library so that two cbd versions on
-- one Redis each call their own, and the constants (limits, state, cause
-- and status names, hash field and key name parts) as Lua `local`s made
-- from the C++ definitions. This file holds no such literal
-- (tests/unit/redis_test.cpp checks).
--
-- The library is loaded once; what one call works on lives in the
-- locals below, set afresh by begin() at the start of every call (Redis
-- runs one function at a time, so calls never share them).

-- KEYS: 1 circuit hash, 2 probe permits (zset: permit -> lease end),
-- 3 generation counter, 4 the key's policy override (hash), 5 the events
-- channel, 6 the key index (zset, all scores 0, for listing).
-- ARGV: what policy_over() reads the daemon's policy numbers from, from
-- argv_at on (a batch's entries share the function's ARGV).
local ARGV, argv_at
local ck, probes_key, gen_key, pol_key, events_key, index_key
local key, op, max_circuits, now
-- Keys under the prefix, derived from the index key's name (kept while
-- calls use the same prefix).
local pfx, deadlines_key, policies_key, counts_key
local c, changed, tr
-- What acquire and report answer beyond the circuit: observe mode's
-- would-deny, and the rate rule's window ({calls, failures, slow}).
local would_deny, win
-- The key's trip-rule state (docs/REDIS.md), only for circuits that use it.
local rule_key, ring_key
local function set_rule_keys()
  rule_key = pfx .. K_RULE .. key
  ring_key = pfx .. K_RING .. key
end

-- A batch call's time, read once for all its entries (nil outside one).
local batch_now
-- One operation's call: its keys are keys[k + 1 .. k + 6], its arguments
-- args[a + 1 .. a + n] (a call alone: k = a = 0, n = #args; a batch's
-- entry: where it sits in the batch's, without copying them).
local function begin(keys, k, args, a, n)
  ARGV, argv_at = args, a
  ck, probes_key, gen_key = keys[k + 1], keys[k + 2], keys[k + 3]
  pol_key, events_key, index_key = keys[k + 4], keys[k + 5], keys[k + 6]
  key = args[a + 1]
  op = {unpack(args, a + A_OP, a + n - TRAILING_ARGS)}
  local index_pfx = string.sub(index_key, 1, #index_key - #K_INDEX)
  if index_pfx ~= pfx then
    pfx = index_pfx
    deadlines_key = pfx .. K_DEADLINES
    policies_key = pfx .. K_POLICIES
    counts_key = pfx .. K_COUNTS
  end
  max_circuits = tonumber(args[a + n - 1])
  if args[a + n] ~= '' then
    now = tonumber(args[a + n]) -- the daemon's test clock
  elseif batch_now then
    now = batch_now
  else
    local tm = redis.call('TIME')
    now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
  end
  c, changed, tr = nil, false, nil
  would_deny, win = false, nil
  set_rule_keys()
end

local function fail(what)
  error({err = ERR_BACKEND .. ' ' .. what})
end

local function too_many(what)
  error({err = ERR_TOO_MANY .. ' ' .. what})
end

-- Redis's own errors on cbd's keys (a key of the wrong type, edited by
-- hand) become backend errors naming the key; the others (a read-only
-- replica, out of memory) stay what they are: outages.
local function rcall(cmd, rkey, ...)
  local r = redis.pcall(cmd, rkey, ...)
  if type(r) == 'table' and r.err then
    local code = string.match(r.err, '^(%u+)')
    if code == 'WRONGTYPE' or code == 'ERR' then fail('Redis key ' .. rkey .. ': ' .. r.err) end
    error(r)
  end
  return r
end

local function decimal(n)
  return string.format('%d', n)
end

local function shown(v)
  if not v then return 'no value' end
  return string.format('%q', string.sub(tostring(v), 1, SHOWN_BYTES))
end

-- `where` says where the value is: redis_key(k), or the import's circuit.
local function redis_key(k)
  return 'Redis key ' .. k
end

local function bad(where, field, v, want)
  fail(where .. (field and (' field ' .. field) or '') .. ' holds ' .. shown(v) ..
       ', not ' .. want)
end

-- An integer in lo..hi in decimal digits (no sign, no point), or nil.
-- The upper bound is compared as digits: past 2^53 a Lua number rounds.
local top_digits = {}
local function int_in(v, lo, hi)
  if type(v) ~= 'string' then return nil end
  -- The common case, cheaply: a number of so few digits is exact.
  local len = #v
  if len > 0 and len <= EXACT_DIGITS and not string.find(v, '%D') then
    local n = tonumber(v)
    if n < lo or n > hi then return nil end
    return n
  end
  local digits = string.match(v, '^0*(%d+)$')
  if not digits then return nil end
  local top = top_digits[hi]
  if not top then top = decimal(hi); top_digits[hi] = top end
  if #digits >= #top and (#digits > #top or digits > top) then return nil end
  local n = tonumber(digits)
  if n < lo then return nil end
  return n
end

local function int_field(where, field, v, lo, hi)
  local n = int_in(v, lo, hi)
  if not n then bad(where, field, v, 'an integer from ' .. decimal(lo) .. ' to ' .. decimal(hi)) end
  return n
end

local function is_state(s)
  return s == CLOSED or s == OPEN or s == HALF_OPEN
end

-- The common case of load(), cheaply: an unpinned circuit whose five
-- counts and times are plain numbers of at most EXACT_DIGITS digits (so
-- exact, and in range). Anything else (a pin, a value out of the
-- ordinary) answers nil and is read by read_circuit below, which checks
-- every field and names what is wrong.
local function read_plain_circuit(h)
  local s, fc, sc, lft, lsc, gen = h[I_STATE], h[I_FC], h[I_SC], h[I_LFT], h[I_LSC], h[I_GEN]
  if h[I_PS] or not (fc and sc and lft and lsc and gen) or not is_state(s) then return nil end
  if #fc > EXACT_DIGITS or #sc > EXACT_DIGITS or #lft > EXACT_DIGITS or #lsc > EXACT_DIGITS or
     #gen > EXACT_DIGITS then
    return nil
  end
  if not string.find(fc .. ' ' .. sc .. ' ' .. lft .. ' ' .. lsc .. ' ' .. gen,
                     '^%d+ %d+ %d+ %d+ %d+$') then
    return nil
  end
  return {state = s, fc = tonumber(fc), sc = tonumber(sc), lft = tonumber(lft), lsc = tonumber(lsc),
          gen = tonumber(gen)}
end

-- A circuit from its fields in hash order (HMGET, or an import's
-- arguments), checked as the protocol checks an import: `where` names
-- the source in errors.
local function read_circuit(where, h)
  if not is_state(h[I_STATE]) then bad(where, F_STATE, h[I_STATE], 'a state') end
  local r = {state = h[I_STATE],
             fc = int_field(where, F_FC, h[I_FC], 0, MAX_INT),
             sc = int_field(where, F_SC, h[I_SC], 0, MAX_INT),
             lft = int_field(where, F_LFT, h[I_LFT], 0, MAX_INT),
             lsc = int_field(where, F_LSC, h[I_LSC], 0, MAX_INT),
             gen = int_field(where, F_GEN, h[I_GEN], 0, MAX_INT)}
  if h[I_PS] and h[I_PS] ~= '' then
    if h[I_PS] ~= CLOSED and h[I_PS] ~= OPEN then bad(where, F_PS, h[I_PS], 'open or closed') end
    r.ps = h[I_PS]
    r.pu = int_field(where, F_PU, h[I_PU], 0, MAX_INT)
    local reason = h[I_PR]
    if type(reason) ~= 'string' or #reason > MAX_REASON_BYTES or string.find(reason, '%c') then
      bad(where, F_PR, reason, 'a reason of at most ' .. decimal(MAX_REASON_BYTES) ..
          ' bytes without control characters')
    end
    r.pr = reason
    r.puid = int_field(where, F_PUID, h[I_PUID], 0, MAX_UID)
    r.ppid = int_field(where, F_PPID, h[I_PPID], 0, MAX_PID)
  end
  return r
end

-- A key's policy override, checked as `configure` checks one. Fields with
-- keep[i] false are about to be replaced and are not read.
local function read_override(rkey, keep)
  -- Most keys have none: one EXISTS is cheaper than reading every field.
  if rcall('EXISTS', rkey) == 0 then return {} end
  local o = rcall('HMGET', rkey, unpack(POLICY_FIELDS))
  local out = {}
  for i = 1, POLICY_FIELD_COUNT do
    if o[i] and (not keep or keep[i]) then
      out[i] = int_field(redis_key(rkey), POLICY_FIELDS[i], o[i], POLICY_MIN[i], POLICY_MAX[i])
    end
  end
  return out
end

-- The daemon's policy for the key with the key's override from Redis on
-- top. As in PolicySet: unless some layer sets probeLeaseMs (the daemon
-- sends 0 when none of its own does), the lease is the reset timeout.
local function policy_over(o)
  local p = {}
  for i = 1, POLICY_FIELD_COUNT do p[i] = o[i] or tonumber(ARGV[argv_at + A_POLICY + i - 1]) end
  if not o[PF_PROBE_LEASE] and p[PF_PROBE_LEASE] == 0 then p[PF_PROBE_LEASE] = p[PF_RESET_TIMEOUT] end
  if not o[PF_RESET_TIMEOUT_MAX] and p[PF_RESET_TIMEOUT_MAX] == 0 then
    p[PF_RESET_TIMEOUT_MAX] = p[PF_RESET_TIMEOUT]
  end
  return p
end

local function policy()
  return policy_over(read_override(pol_key))
end

-- As Policy::open_time_ms: resetTimeoutMs doubled once per re-open in a
-- row, at most resetTimeoutMaxMs.
local function open_time(p, reopens)
  local base = p[PF_RESET_TIMEOUT]
  local cap = math.max(base, p[PF_RESET_TIMEOUT_MAX])
  local t = base
  local i = 0
  while i < reopens and t < cap do
    if t > cap / 2 then t = cap else t = t * 2 end
    i = i + 1
  end
  return math.min(t, cap)
end

local function rule_int(field, lo, hi)
  local v = rcall('HGET', rule_key, field)
  if not v then return 0 end
  return int_field(redis_key(rule_key), field, v, lo, hi)
end

local function reopens()
  return rule_int(RF_REOPENS, 0, MAX_REOPENS)
end

local function next_generation()
  local g = rcall('GET', gen_key)
  if g and int_field(redis_key(gen_key), nil, g, 0, MAX_INT) >= MAX_INT then
    fail('Redis key ' .. gen_key .. ': the generation counter is at its maximum (' ..
         decimal(MAX_INT) .. ')')
  end
  return rcall('INCR', gen_key)
end

-- Counts and times stop at MAX_INT rather than leave the range.
local function bump(n)
  if n < MAX_INT then return n + 1 end
  return n
end

local function count(field, by)
  rcall('HINCRBY', counts_key, field, by)
end

-- Takes a circuit about to be removed or replaced out of the counts,
-- whatever else it holds (reset and import must work on a bad circuit).
local function uncount(rkey)
  local h = redis.pcall('HMGET', rkey, F_STATE, F_PS)
  if type(h) ~= 'table' or h.err then return end
  if is_state(h[1]) then count(h[1], -1) end
  if h[2] then count(COUNT_PINNED, -1) end
end

local function load(create)
  local h = rcall('HMGET', ck, unpack(CIRCUIT_FIELDS))
  if not h[I_STATE] then
    -- A hash without a state is not a circuit nobody made yet.
    if rcall('EXISTS', ck) == 1 then bad(redis_key(ck), F_STATE, h[I_STATE], 'a state') end
    if not create then return false end
    if rcall('ZCARD', index_key) >= max_circuits then too_many('the shared store holds its maximum number of circuits') end
    c = {state = CLOSED, fc = 0, sc = 0, lft = 0, lsc = now, gen = next_generation()}
    rcall('ZADD', index_key, 0, key)
    changed = true
    return true
  end
  c = read_plain_circuit(h) or read_circuit(redis_key(ck), h)
  c.was = {c.fc, c.sc, c.lft, c.lsc, c.gen}
  c.was_state = c.state
  c.was_pinned = c.ps ~= nil
  return true
end

local function publish(from, to, cause)
  -- Numbers as decimal strings: cjson writes 14 significant digits.
  rcall('PUBLISH', events_key, cjson.encode({EV_TRANSITION, key, from, to, decimal(now), cause,
    decimal(c.gen), c.state, decimal(c.fc), decimal(c.sc), decimal(c.lft), decimal(c.lsc),
    c.ps or '', decimal(c.pu or 0), c.pr or '', decimal(c.puid or 0), decimal(c.ppid or 0)}))
end

local function transition(to, cause)
  c.gen = next_generation() -- first: it is the one step that can fail
  local from = c.state
  c.state = to
  c.lsc = now
  if to == CLOSED then c.fc = 0; c.sc = 0 elseif to == HALF_OPEN then c.sc = 0 end
  rcall('DEL', probes_key)
  -- A failed probe (reported, or its lease ran out) re-opens for longer
  -- each time in a row; closing starts over. The run and the window judge
  -- the period that ended: the next one starts empty.
  local again = 0
  if cause == CAUSE_PROBE_FAILURE or cause == CAUSE_LEASE_EXPIRED then
    again = math.min(reopens() + 1, MAX_REOPENS)
  elseif to ~= CLOSED then
    again = reopens()
  end
  rcall('DEL', rule_key, ring_key)
  if again > 0 then rcall('HSET', rule_key, RF_REOPENS, decimal(again)) end
  changed = true
  tr = {from, to, cause}
  publish(from, to, cause)
end

local function lift_pin(cause)
  c.gen = next_generation()
  c.ps = nil; c.pu = nil; c.pr = nil; c.puid = nil; c.ppid = nil
  changed = true
  tr = {c.state, c.state, cause}
  publish(c.state, c.state, cause)
end

-- What time alone decides: an expired pin lifts; an expired probe lease
-- counts as a failed probe and re-opens the circuit.
local function settle()
  if c.ps and c.pu ~= 0 and now >= c.pu then lift_pin(CAUSE_FORCE_EXPIRED) end
  -- Leases exist only while half-open: every transition drops them.
  if c.state == HALF_OPEN and rcall('ZCOUNT', probes_key, '-inf', now) > 0 then
    c.fc = bump(c.fc)
    c.lft = now
    transition(OPEN, CAUSE_LEASE_EXPIRED)
  end
  -- What time decided is not the operation's own transition: its event
  -- went out; the reply shows only what the operation itself did (as in
  -- memory).
  tr = nil
end

-- The hot path passes numbers to redis.call as they are: Redis 7 writes
-- a Lua number argument in full (%.17g), exact up to MAX_INT, so the
-- string.format of decimal() is not needed there.
local function save()
  if not changed then return end
  local w = c.was
  if not w then
    rcall('HSET', ck, F_STATE, c.state, F_FC, c.fc, F_SC, c.sc, F_LFT, c.lft, F_LSC, c.lsc, F_GEN, c.gen)
  else
    -- Only what changed (a failure writes two fields, not six).
    local a, n = {}, 0
    if c.state ~= c.was_state then a[n + 1] = F_STATE; a[n + 2] = c.state; n = n + 2 end
    if c.fc ~= w[1] then a[n + 1] = F_FC; a[n + 2] = c.fc; n = n + 2 end
    if c.sc ~= w[2] then a[n + 1] = F_SC; a[n + 2] = c.sc; n = n + 2 end
    if c.lft ~= w[3] then a[n + 1] = F_LFT; a[n + 2] = c.lft; n = n + 2 end
    if c.lsc ~= w[4] then a[n + 1] = F_LSC; a[n + 2] = c.lsc; n = n + 2 end
    if c.gen ~= w[5] then a[n + 1] = F_GEN; a[n + 2] = c.gen; n = n + 2 end
    if n > 0 then rcall('HSET', ck, unpack(a, 1, n)) end
  end
  if c.ps then
    rcall('HSET', ck, F_PS, c.ps, F_PU, decimal(c.pu), F_PR, c.pr, F_PUID, decimal(c.puid),
          F_PPID, decimal(c.ppid))
  elseif c.was_pinned then
    rcall('HDEL', ck, F_PS, F_PU, F_PR, F_PUID, F_PPID)
  end
  if c.state ~= c.was_state then
    if c.was_state then count(c.was_state, -1) end
    count(c.state, 1)
  end
  local pinned = c.ps ~= nil
  if pinned ~= (c.was_pinned == true) then count(COUNT_PINNED, pinned and 1 or -1) end
end

-- Settles circuit `k` (not the call's own key; a page or the sweep's):
-- false when there is none. Leaves it in `c`.
local function settle_key(k)
  key = k; ck = pfx .. K_CIRCUIT .. k; probes_key = pfx .. K_PROBES .. k; pol_key = pfx .. K_POLICY .. k
  set_rule_keys()
  tr = nil; changed = false; c = nil
  if not load(false) then return false end
  settle()
  save()
  return true
end

-- A circuit a page shows (`h`: its fields as HMGET gave them), settled
-- first when time has decided something for it, as memory's list and
-- export do. Answers its fields and the circuit read from them.
local function shown_circuit(k, rkey, h)
  local r = read_circuit(redis_key(rkey), h)
  local due = (r.ps and r.pu ~= 0 and now >= r.pu) or
              (r.state == HALF_OPEN and rcall('ZCOUNT', pfx .. K_PROBES .. k, '-inf', now) > 0)
  if not due then return h, r end
  settle_key(k)
  h = rcall('HMGET', rkey, unpack(CIRCUIT_FIELDS))
  return h, read_circuit(redis_key(rkey), h)
end

local function result(status, allowed, permit, retry_after)
  save()
  return {status, c.state, c.fc, c.sc, c.lft, c.lsc, c.gen, c.ps or '', c.pu or 0, c.pr or '',
          c.puid or 0, c.ppid or 0, tr and tr[1] or '', tr and tr[2] or '', tr and tr[3] or '',
          allowed or 0, permit or '', retry_after or 0, would_deny and 1 or 0, win and 1 or 0,
          win and win[1] or 0, win and win[2] or 0, win and win[3] or 0}
end

-- The rate rule's window (as MemoryCircuitStore::RuleWindow): its shape
-- (type, size) in the rule hash; a count window's totals and next position
-- there too, its calls in the ring string (one digit each: FAILED_BIT +
-- SLOW_BIT); a time window's WINDOW_BUCKETS buckets as fields of the hash.
local function bucket_ms(size)
  return math.max(1, math.floor((size + WINDOW_BUCKETS - 1) / WINDOW_BUCKETS))
end

local function bucket_fields()
  local f = {}
  for i = 0, WINDOW_BUCKETS - 1 do
    f[#f + 1] = BF_INDEX .. i; f[#f + 1] = BF_CALLS .. i
    f[#f + 1] = BF_FAILURES .. i; f[#f + 1] = BF_SLOW .. i
  end
  return f
end

-- The window as stored; `fresh` when none is, or one of another shape
-- (the next call starts it over).
local function read_window(p)
  -- A count window holds at most MAX_COUNT_WINDOW calls, whatever the
  -- layers made of it (as Policy::window_size() in C++).
  local size = p[PF_WINDOW_SIZE]
  if p[PF_WINDOW_TYPE] == WINDOW_COUNT then size = math.min(size, MAX_COUNT_WINDOW) end
  local w = {type = p[PF_WINDOW_TYPE], size = size, calls = 0, failures = 0,
             slow = 0, head = 0, buckets = {}, fresh = true}
  local h = rcall('HMGET', rule_key, RF_TYPE, RF_SIZE, RF_CALLS, RF_FAILURES, RF_SLOW, RF_HEAD)
  if not h[1] then return w end
  local where = redis_key(rule_key)
  local t = int_field(where, RF_TYPE, h[1], WINDOW_COUNT, WINDOW_TIME)
  local z = int_field(where, RF_SIZE, h[2], 1, POLICY_MAX[PF_WINDOW_SIZE])
  if t ~= w.type or z ~= w.size then return w end
  w.fresh = false
  if t == WINDOW_COUNT then
    w.calls = int_field(where, RF_CALLS, h[3], 0, z)
    w.failures = int_field(where, RF_FAILURES, h[4], 0, w.calls)
    w.slow = int_field(where, RF_SLOW, h[5], 0, w.calls)
    w.head = int_field(where, RF_HEAD, h[6], 0, z - 1)
    return w
  end
  local names = bucket_fields()
  local v = rcall('HMGET', rule_key, unpack(names))
  for i = 0, WINDOW_BUCKETS - 1 do
    local j = i * 4
    if v[j + 1] then
      w.buckets[i] = {index = int_field(where, names[j + 1], v[j + 1], 0, MAX_INT),
                      calls = int_field(where, names[j + 2], v[j + 2], 0, MAX_BUCKET_COUNT),
                      failures = int_field(where, names[j + 3], v[j + 3], 0, MAX_BUCKET_COUNT),
                      slow = int_field(where, names[j + 4], v[j + 4], 0, MAX_BUCKET_COUNT)}
    end
  end
  return w
end

local function window_totals(w)
  if w.fresh then return 0, 0, 0 end
  if w.type == WINDOW_COUNT then return w.calls, w.failures, w.slow end
  local current = math.floor(now / bucket_ms(w.size))
  local calls, failures, slow = 0, 0, 0
  for _, b in pairs(w.buckets) do
    if b.index > current - WINDOW_BUCKETS and b.index <= current then
      calls = calls + b.calls; failures = failures + b.failures; slow = slow + b.slow
    end
  end
  return calls, failures, slow
end

local function window_add(w, failed, slow)
  if w.fresh then
    rcall('DEL', ring_key)
    rcall('HDEL', rule_key, RF_CALLS, RF_FAILURES, RF_SLOW, RF_HEAD, unpack(bucket_fields()))
    rcall('HSET', rule_key, RF_TYPE, decimal(w.type), RF_SIZE, decimal(w.size))
    w.fresh = false
  end
  local code = (failed and FAILED_BIT or 0) + (slow and SLOW_BIT or 0)
  if w.type == WINDOW_COUNT then
    if w.calls == w.size then -- full: the oldest call leaves
      local old = rcall('GETRANGE', ring_key, w.head, w.head)
      local o = int_field(redis_key(ring_key), nil, old, 0, FAILED_BIT + SLOW_BIT)
      if o % 2 == 1 then w.failures = w.failures - 1 end
      if o >= SLOW_BIT then w.slow = w.slow - 1 end
    else
      w.calls = w.calls + 1
    end
    rcall('SETRANGE', ring_key, w.head, decimal(code))
    if failed then w.failures = w.failures + 1 end
    if slow then w.slow = w.slow + 1 end
    w.head = (w.head + 1) % w.size
    rcall('HSET', rule_key, RF_CALLS, decimal(w.calls), RF_FAILURES, decimal(w.failures),
          RF_SLOW, decimal(w.slow), RF_HEAD, decimal(w.head))
    return
  end
  local index = math.floor(now / bucket_ms(w.size))
  local slot = index % WINDOW_BUCKETS
  local b = w.buckets[slot]
  if not b or b.index ~= index then
    b = {index = index, calls = 0, failures = 0, slow = 0}
    w.buckets[slot] = b
  end
  b.calls = math.min(b.calls + 1, MAX_BUCKET_COUNT)
  if failed then b.failures = math.min(b.failures + 1, MAX_BUCKET_COUNT) end
  if slow then b.slow = math.min(b.slow + 1, MAX_BUCKET_COUNT) end
  rcall('HSET', rule_key, BF_INDEX .. slot, decimal(b.index), BF_CALLS .. slot, decimal(b.calls),
        BF_FAILURES .. slot, decimal(b.failures), BF_SLOW .. slot, decimal(b.slow))
end

-- The window acquire and report answer, for a circuit on the rate rule.
local function show_window(p)
  if p[PF_TRIP_RULE] ~= RULE_RATE then return end
  win = {window_totals(read_window(p))}
end

-- A closed circuit's report under its trip rule: counts it, and opens the
-- circuit when the rule says so.
local function trip(p, failed, slow)
  local rule = p[PF_TRIP_RULE]
  if rule == RULE_COUNT then
    if failed and c.fc >= p[PF_FAILURE_THRESHOLD] then transition(OPEN, CAUSE_THRESHOLD) end
  elseif rule == RULE_CONSECUTIVE then
    if not failed then
      rcall('HDEL', rule_key, RF_RUN)
      return
    end
    local run = math.min(rule_int(RF_RUN, 0, MAX_INT) + 1, MAX_INT)
    if run >= p[PF_FAILURE_THRESHOLD] then
      transition(OPEN, CAUSE_CONSECUTIVE)
    else
      rcall('HSET', rule_key, RF_RUN, decimal(run))
    end
  else
    local w = read_window(p)
    window_add(w, failed, slow)
    local calls, failures, slows = window_totals(w)
    -- A count window never holds more calls than its size: its minimum is
    -- at most that.
    local minimum = p[PF_MINIMUM_CALLS]
    if w.type == WINDOW_COUNT then minimum = math.min(minimum, w.size) end
    if calls == 0 or calls < minimum then return end
    if failures * PERCENT >= p[PF_FAILURE_RATE] * calls then
      transition(OPEN, CAUSE_FAILURE_RATE)
    elseif p[PF_SLOW_DURATION] > 0 and slows * PERCENT >= p[PF_SLOW_RATE] * calls then
      transition(OPEN, CAUSE_SLOW_CALL_RATE)
    end
  end
end

-- A circuit's fields as a paged script answers them: the hash's own
-- strings (HMGET, in hash order), once read_circuit has checked them.
local function append_fields(out, h, r)
  local n = #out
  for i = 1, CIRCUIT_FIELD_COUNT do
    n = n + 1
    out[n] = (r.ps or i < I_PS) and h[i] or ''
  end
end

-- The operations, each run by a function of its own (registered below).
local ops = {}

-- op: ARG_TRUE to create the circuit if unknown, else answer the default snapshot
-- without creating it (a read-level peer; generation 0).
ops.get = function()
  if not load(op[1] == ARG_TRUE) then
    c = {state = CLOSED, fc = 0, sc = 0, lft = 0, lsc = now, gen = 0}
    return result(ST_OK)
  end
  settle()
  return result(ST_OK)
end

ops.success = function()
  load(true); settle()
  c.sc = bump(c.sc); changed = true
  return result(ST_OK)
end

ops.failure = function()
  load(true); settle()
  c.fc = bump(c.fc); c.lft = now; changed = true
  return result(ST_OK)
end

-- op: to, expected state or '', expected generation or ''.
ops.transition = function()
  load(true); settle()
  if (op[2] ~= '' and op[2] ~= c.state) or (op[3] ~= '' and tonumber(op[3]) ~= c.gen) then
    return result(ST_CONFLICT)
  end
  if c.ps then return result(ST_FORCED) end
  transition(op[1], CAUSE_MANUAL)
  return result(ST_OK)
end

-- Reset is how an operator clears a circuit, whatever it holds: it reads
-- nothing it would have to refuse.
ops.reset = function()
  if rcall('EXISTS', ck) == 0 then return {ST_OK, 0} end
  uncount(ck)
  rcall('DEL', ck, probes_key, rule_key, ring_key)
  rcall('ZREM', index_key, key)
  rcall('ZREM', deadlines_key, key)
  rcall('PUBLISH', events_key, cjson.encode({EV_RESET, key, decimal(now)}))
  return {ST_OK, 1}
end

-- The policy is read first: a bad override is refused before anything is
-- written.
ops.acquire = function()
  local p = policy()
  load(true); settle()
  local function answer(allowed, permit, wait)
    show_window(p)
    return result(ST_OK, allowed, permit, wait)
  end
  -- Disabled: every call goes ahead. Observe: the decision is made and
  -- shown, never enforced.
  if p[PF_MODE] == MODE_DISABLED then return answer(1, '', 0) end
  local function deny(wait)
    if p[PF_MODE] == MODE_OBSERVE then
      would_deny = true
      return answer(1, '', 0)
    end
    return answer(0, '', wait)
  end
  if c.ps then
    if c.ps == CLOSED then return answer(1, '', 0) end
    return deny(c.pu ~= 0 and c.pu - now or p[PF_RESET_TIMEOUT])
  end
  if c.state == CLOSED then return answer(1, '', 0) end
  if c.state == OPEN then
    local elapsed = now - c.lsc
    local open_for = open_time(p, reopens())
    if elapsed < open_for then return deny(math.min(open_for - elapsed, MAX_INT)) end
    -- The first caller after the open time moves it to half-open, once.
    transition(HALF_OPEN, CAUSE_TIMEOUT)
  end
  if rcall('ZCARD', probes_key) >= p[PF_HALF_OPEN_MAX] then return deny(p[PF_RESET_TIMEOUT]) end
  local permit = string.format('%x%08x', c.gen, rcall('INCR', pfx .. K_PERMITS) % PERMIT_MODULUS)
  local lease_end = now + p[PF_PROBE_LEASE]
  rcall('ZADD', probes_key, lease_end, permit)
  rcall('ZADD', deadlines_key, 'LT', lease_end, key)
  rcall('PEXPIRE', probes_key, p[PF_PROBE_LEASE] + PROBES_GRACE_MS)
  return answer(1, permit, 0)
end

-- op: outcome, generation or '', permit or '', durationMs or ''.
ops.report = function()
  local p = policy()
  load(true); settle()
  local function answer(status)
    show_window(p)
    return result(status)
  end
  -- Disabled: nothing is recorded.
  if p[PF_MODE] == MODE_DISABLED then return answer(ST_OK) end
  if op[2] ~= '' and tonumber(op[2]) ~= c.gen then return answer(ST_STALE) end
  local failure = op[1] == OUTCOME_FAILURE
  local ignored = op[1] == OUTCOME_IGNORED
  local slow = p[PF_SLOW_DURATION] > 0 and op[4] ~= '' and tonumber(op[4]) >= p[PF_SLOW_DURATION]
  local function record()
    if failure then c.fc = bump(c.fc); c.lft = now else c.sc = bump(c.sc) end
    changed = true
  end
  if not c.ps and c.state == HALF_OPEN then
    if op[3] == '' or not rcall('ZSCORE', probes_key, op[3]) then
      -- Observe lets calls through without permits; their reports count,
      -- but only probes move a half-open circuit.
      if p[PF_MODE] == MODE_OBSERVE then
        if not ignored then record() end
        return answer(ST_OK)
      end
      return answer(ST_NO_PERMIT)
    end
    rcall('ZREM', probes_key, op[3])
    if ignored then return answer(ST_OK) end -- the permit is back; nothing counts
    record()
    if failure then transition(OPEN, CAUSE_PROBE_FAILURE)
    elseif c.sc >= p[PF_SUCCESS_THRESHOLD] then transition(CLOSED, CAUSE_PROBE_SUCCESS) end
  elseif not ignored then
    record()
    -- Pinned: recorded, nothing moves. Open: a late report, recorded only.
    if not c.ps and c.state == CLOSED then trip(p, failure, slow) end
  end
  return answer(ST_OK)
end

-- op: state, ttl ms (0 = none), reason, uid, pid.
ops.force = function()
  load(true); settle()
  local ttl = tonumber(op[2])
  c.ps = op[1]; c.pu = ttl > 0 and now + ttl or 0; c.pr = op[3]
  c.puid = tonumber(op[4]); c.ppid = tonumber(op[5])
  transition(op[1], CAUSE_FORCE)
  if ttl > 0 then rcall('ZADD', deadlines_key, 'LT', c.pu, key) end
  return result(ST_OK)
end

ops.unforce = function()
  load(true); settle()
  if c.ps then lift_pin(CAUSE_UNFORCE) end
  return result(ST_OK)
end

-- op: ARG_TRUE to drop the override first; then per policy field, '' to
-- keep, ARG_REMOVE to remove, or the new value. Without changes (the
-- `policy` op) nothing is written. Answers the override after.
ops.policy = function()
  local clear = op[1] == ARG_TRUE
  local keep, writes = {}, clear
  for i = 1, POLICY_FIELD_COUNT do
    keep[i] = not clear and op[1 + i] == ''
    if op[1 + i] ~= '' then writes = true end
  end
  local had = rcall('EXISTS', pol_key) == 1
  local o = {}
  if not clear then o = read_override(pol_key, keep) end
  local any = false
  for i = 1, POLICY_FIELD_COUNT do
    local v = op[1 + i]
    if v == ARG_REMOVE then o[i] = nil elseif v ~= '' then o[i] = tonumber(v) end
    if o[i] then any = true end
  end
  if writes then
    -- Fields that hold only together are judged on the policy the key would
    -- have, whichever layer set each (as MemoryCircuitStore::configure).
    -- The words are common/policy.cpp's (the differential fuzzer holds
    -- them equal).
    local p = policy_over(o)
    if p[PF_RESET_TIMEOUT_MAX] < p[PF_RESET_TIMEOUT] then
      error({err = ERR_INVALID .. " policy field '" .. POLICY_FIELDS[PF_RESET_TIMEOUT_MAX] .. "' (" ..
             decimal(p[PF_RESET_TIMEOUT_MAX]) .. ') must not be below ' ..
             POLICY_FIELDS[PF_RESET_TIMEOUT] .. ' (' .. decimal(p[PF_RESET_TIMEOUT]) .. ')'})
    end
    if p[PF_WINDOW_TYPE] == WINDOW_COUNT and p[PF_WINDOW_SIZE] > MAX_COUNT_WINDOW then
      error({err = ERR_INVALID .. " policy field '" .. POLICY_FIELDS[PF_WINDOW_SIZE] ..
             "' must be at most " .. decimal(MAX_COUNT_WINDOW) ..
             ' calls for a count window (a time window: at most ' .. decimal(MAX_TIME_WINDOW) ..
             ' ms)'})
    end
    -- Key overrides count against --max-circuits, as in memory.
    if any and not had and rcall('ZCARD', policies_key) >= max_circuits then too_many('the shared store holds its maximum number of key policies') end
    rcall('DEL', pol_key)
    for i = 1, POLICY_FIELD_COUNT do
      if o[i] then rcall('HSET', pol_key, POLICY_FIELDS[i], decimal(o[i])) end
    end
    if any then rcall('ZADD', policies_key, 0, key) else rcall('ZREM', policies_key, key) end
  end
  local out = {ST_OK}
  for i = 1, POLICY_FIELD_COUNT do out[#out + 1] = o[i] and decimal(o[i]) or '' end
  return out
end

-- One call of a `list` page. op: prefix, after ('' = from the prefix on),
-- matches wanted, state filter ('' = any), most keys to examine (at most
-- SCAN_PER_CALL). Answers {PAGE_END or PAGE_MORE, the last key examined,
-- keys examined, then 12 fields per circuit: key, then the 11 circuit
-- fields}. Every circuit examined is checked, matching or not.
ops.list = function()
  local prefix, after, want, filter = op[1], op[2], tonumber(op[3]), op[4]
  local budget = math.min(tonumber(op[5]), SCAN_PER_CALL)
  local start = (after ~= '' and after >= prefix) and ('(' .. after) or ('[' .. prefix)
  local keys = rcall('ZRANGEBYLEX', index_key, start, '+', 'LIMIT', 0, budget)
  local out = {PAGE_MORE, '', 0}
  local found = 0
  for _, k in ipairs(keys) do
    if string.sub(k, 1, #prefix) ~= prefix then out[1] = PAGE_END; return out end
    out[2] = k
    out[3] = out[3] + 1
    local rkey = pfx .. K_CIRCUIT .. k
    local h = rcall('HMGET', rkey, unpack(CIRCUIT_FIELDS))
    if h[I_STATE] or rcall('EXISTS', rkey) == 1 then
      local r
      h, r = shown_circuit(k, rkey, h)
      if filter == '' or r.state == filter then
        out[#out + 1] = k
        append_fields(out, h, r)
        found = found + 1
        if found == want then return out end
      end
    end
  end
  if #keys < budget then
    out[1] = PAGE_END
  else
    -- Is there another key in the range? Then the page goes on; else the
    -- caller need not call again (nor answer a `next`).
    local beyond = rcall('ZRANGEBYLEX', index_key, '(' .. keys[#keys], '+', 'LIMIT', 0, 1)
    if not beyond[1] or string.sub(beyond[1], 1, #prefix) ~= prefix then out[1] = PAGE_END end
  end
  return out
end

-- One call of an `export` page. op: prefix, after, keys wanted. Every key
-- with a circuit or a policy override, in key order; each call reads at
-- most SCAN_PER_CALL keys of each index. Answers {PAGE_END or PAGE_MORE,
-- the key to go on after, then 17 fields per key: key, the 11 circuit
-- fields ('' state: no circuit), the 5 policy override fields}.
ops.export = function()
  local prefix, after, want = op[1], op[2], tonumber(op[3])
  local start = (after ~= '' and after >= prefix) and ('(' .. after) or ('[' .. prefix)
  local function take(set)
    local got = rcall('ZRANGEBYLEX', set, start, '+', 'LIMIT', 0, SCAN_PER_CALL)
    local ks = {}
    for _, k in ipairs(got) do
      if string.sub(k, 1, #prefix) ~= prefix then return ks, false end
      ks[#ks + 1] = k
    end
    return ks, #got == SCAN_PER_CALL
  end
  local a, a_full = take(index_key)
  local b, b_full = take(policies_key)
  -- Past the last key of a full take, that index holds keys not read yet:
  -- the merge is complete only up to the smaller such key.
  local cut = nil
  if a_full then cut = a[#a] end
  if b_full and (not cut or b[#b] < cut) then cut = b[#b] end
  local keys, i, j = {}, 1, 1
  while #keys < want do
    local k
    if i <= #a and (j > #b or a[i] <= b[j]) then
      k = a[i]
      if j <= #b and b[j] == k then j = j + 1 end
      i = i + 1
    elseif j <= #b then
      k = b[j]; j = j + 1
    else
      break
    end
    if cut and k > cut then break end
    keys[#keys + 1] = k
  end
  local out = {PAGE_END, ''}
  if #keys == want then out[1] = PAGE_MORE; out[2] = keys[#keys]
  elseif cut then out[1] = PAGE_MORE; out[2] = cut end
  for _, k in ipairs(keys) do
    out[#out + 1] = k
    local rkey = pfx .. K_CIRCUIT .. k
    local h = rcall('HMGET', rkey, unpack(CIRCUIT_FIELDS))
    if h[I_STATE] or rcall('EXISTS', rkey) == 1 then
      local r
      h, r = shown_circuit(k, rkey, h)
      append_fields(out, h, r)
    else
      for _ = 1, CIRCUIT_FIELD_COUNT do out[#out + 1] = '' end
    end
    local o = read_override(pfx .. K_POLICY .. k)
    for f = 1, POLICY_FIELD_COUNT do out[#out + 1] = o[f] and decimal(o[f]) or '' end
  end
  return out
end

-- op: ARG_TRUE with a circuit; then the 11 circuit fields in hash order (ps
-- '' = not pinned); then the policy override's fields ('' = not set).
-- Makes the key hold exactly that; everything is checked before anything
-- changes.
ops.import = function()
  local with_circuit = op[1] == ARG_TRUE
  local fields = {unpack(op, 2, 1 + CIRCUIT_FIELD_COUNT)}
  local pol = {unpack(op, 2 + CIRCUIT_FIELD_COUNT, 1 + CIRCUIT_FIELD_COUNT + POLICY_FIELD_COUNT)}
  local r = nil
  local where = 'the imported circuit ' .. key
  if with_circuit then r = read_circuit(where, fields) end
  local o, any = {}, false
  for f = 1, POLICY_FIELD_COUNT do
    if pol[f] ~= '' then o[f] = int_field(where, POLICY_FIELDS[f], pol[f], POLICY_MIN[f], POLICY_MAX[f]); any = true end
  end
  local current_gen = rcall('GET', gen_key)
  if current_gen then current_gen = int_field(redis_key(gen_key), nil, current_gen, 0, MAX_INT) end
  if r and rcall('EXISTS', ck) == 0 and rcall('ZCARD', index_key) >= max_circuits then too_many('the shared store holds its maximum number of circuits') end
  if any and rcall('EXISTS', pol_key) == 0 and rcall('ZCARD', policies_key) >= max_circuits then
    too_many('the shared store holds its maximum number of key policies')
  end
  uncount(ck)
  rcall('DEL', ck, probes_key, rule_key, ring_key)
  if r then
    rcall('HSET', ck, F_STATE, r.state, F_FC, decimal(r.fc), F_SC, decimal(r.sc), F_LFT, decimal(r.lft),
          F_LSC, decimal(r.lsc), F_GEN, decimal(r.gen))
    count(r.state, 1)
    if r.ps then
      rcall('HSET', ck, F_PS, r.ps, F_PU, decimal(r.pu), F_PR, r.pr, F_PUID, decimal(r.puid),
            F_PPID, decimal(r.ppid))
      count(COUNT_PINNED, 1)
      if r.pu ~= 0 then rcall('ZADD', deadlines_key, r.pu, key) end
    end
    rcall('ZADD', index_key, 0, key)
    -- Generations stay unique: the counter moves past the imported one
    -- (both are at most MAX_INT, so INCR keeps working up to there).
    if (current_gen or 0) < r.gen then rcall('SET', gen_key, decimal(r.gen)) end
  else
    rcall('ZREM', index_key, key)
  end
  rcall('DEL', pol_key)
  for f = 1, POLICY_FIELD_COUNT do
    if o[f] then rcall('HSET', pol_key, POLICY_FIELDS[f], decimal(o[f])) end
  end
  if any then rcall('ZADD', policies_key, 0, key) else rcall('ZREM', policies_key, key) end
  return {ST_OK}
end

-- Applies what time alone decides to circuits nobody touches: every cbd
-- runs it every 100 ms (as the memory store's timer); at most
-- SWEEP_PER_CALL keys a run. A circuit holding a bad value leaves the
-- deadlines (its error is answered, naming it) so that it cannot stop the
-- sweep of the others. Answers {ST_OK, keys settled, circuits in the index,
-- closed, open, half-open, pinned, the first error or ''}.
ops.sweep = function()
  local due = rcall('ZRANGEBYSCORE', deadlines_key, '-inf', now, 'LIMIT', 0, SWEEP_PER_CALL)
  local first_error = ''
  for _, k in ipairs(due) do
    local ok, e = pcall(function()
      if not settle_key(k) then
        rcall('ZREM', deadlines_key, k)
        return
      end
      local next_at = nil
      local first = rcall('ZRANGE', probes_key, 0, 0, 'WITHSCORES')
      if first[2] then next_at = tonumber(first[2]) end
      if c.ps and c.pu ~= 0 and (not next_at or c.pu < next_at) then next_at = c.pu end
      if next_at then rcall('ZADD', deadlines_key, next_at, k) else rcall('ZREM', deadlines_key, k) end
    end)
    if not ok then
      redis.pcall('ZREM', deadlines_key, k)
      if first_error == '' then first_error = type(e) == 'table' and e.err or tostring(e) end
    end
  end
  local counts = redis.pcall('HMGET', counts_key, CLOSED, OPEN, HALF_OPEN, COUNT_PINNED)
  if type(counts) ~= 'table' or counts.err then counts = {} end
  local out = {ST_OK, #due, rcall('ZCARD', index_key)}
  for f = 1, 4 do out[#out + 1] = counts[f] or 0 end
  out[#out + 1] = first_error
  return out
end

-- Registered from a function of its own: Lua allows the main chunk 200
-- locals, and the constants and the rules take most of them.
local function register_all()
  -- One call per operation: FCALL <prefix><name> 6 KEYS... ARGV...
  -- (While a library loads, Redis offers no ipairs.)
  for i = 1, #OP_NAMES do
    local name = OP_NAMES[i]
    local body = ops[name]
    if not body then error('the library has no operation ' .. name) end
    redis.register_function(FUNCTION_PREFIX .. name, function(keys, args)
      batch_now = nil
      begin(keys, 0, args, 0, #args)
      return body()
    end)
  end

  -- Several operations in one call, each as if called alone, in order:
  -- FCALL <prefix>batch 6*N KEYS... then per entry its name, its ARGV's
  -- length and its ARGV. Answers one reply per entry; an entry that fails
  -- answers its error in its place, and the others still run (as separate
  -- calls would).
  local function run_entry(body, keys, k, args, a, n)
    begin(keys, k, args, a, n)
    return body()
  end

  redis.register_function(FUNCTION_PREFIX .. BATCH_NAME, function(keys, args)
    -- One instant for the whole batch, as for the entries of one
    -- reportBatch in memory: Redis's clock is read once.
    local tm = redis.call('TIME')
    batch_now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
    local out = {}
    local at, entry = 1, 0
    while at <= #args do
      local body = ops[args[at]]
      local n = tonumber(args[at + 1])
      if not body or not n then
        error({err = ERR_BACKEND .. ' a batch entry names no operation of this library'})
      end
      local ok, r = pcall(run_entry, body, keys, entry * KEYS_PER_CALL, args, at + 1, n)
      entry = entry + 1
      -- A caught error comes back as its text (Redis 7 turns the error
      -- tables it raises, and ours, into strings): keep its code word
      -- (TOO_MANY_CIRCUITS, CBD_BACKEND_ERROR, OOM...), and give a Lua
      -- error one, as Redis does for a call alone.
      if ok then
        out[entry] = r
      elseif type(r) == 'table' and r.err then
        out[entry] = r
      elseif string.find(tostring(r), '^%u[%u_]* ') then
        out[entry] = {err = tostring(r)}
      else
        out[entry] = {err = 'ERR ' .. tostring(r)}
      end
      at = at + 2 + n
    end
    return out
  end)
end
register_all()
