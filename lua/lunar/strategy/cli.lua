--- lunar.strategy.cli: `lunar profile` and `lunar search` (lunar.cli.main
-- hands them here).
--
--   [mpirun -np N] lunar profile --config C [--out PROFILE] [--batches 1,2,4] [--reps 3] [key=value ...]
--       measures this machine (lunar.strategy.profile) and writes PROFILE (default
--       profile.json; a name ending in .lua gives a Lua file)
--   lunar search --config C --profile PROFILE --world N --memory-budget BYTES [--out STRATEGY.lua]
--                [--global-batch 64,128] [--layerwise | --global] [--top 5] [key=value ...]
--       (--layerwise: per-block tensor sizes too, predicted only; --global: every block alike,
--       all checkpointed or none: what a hand-written global layout does)
--       Galvatron's search (lunar.strategy.search): prints the best strategy with its
--       predicted step time and per-rank memory beside the next-best few, and writes it
--       as a config (default strategy.lua) that trains as is:
--       mpirun -np N build/lunar examples/train_with_engine.lua --config STRATEGY.lua
--
-- Errors (a missing option, a bad size, a profile of another model: warned, a
-- budget nothing fits: the smallest memory found) are user errors, printed
-- once without a traceback; the exit status is 1.
-- @module lunar.strategy.cli
local config = require('lunar.config')
local memory = require('lunar.memory')

local M = {}

M.USAGE = [[
usage: [mpirun -np N] lunar profile --config C [--out PROFILE] [--batches 1,2,4] [--reps 3] [key=value ...]
       lunar search --config C --profile PROFILE --world N --memory-budget BYTES [--out STRATEGY.lua]
                    [--global-batch B1,B2] [--layerwise | --global] [--top K] [key=value ...]
]]

local function fail(fmt, ...)
  lunar.error(string.format(fmt, ...))
end

local function parse(cmd, args, with_value, flags)
  local o, overrides = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if with_value[a] then
      if not args[i + 1] then fail("lunar %s: option '%s' needs a value\n%s", cmd, a, M.USAGE) end
      o[a:sub(3)] = args[i + 1]
      i = i + 1
    elseif flags[a] then
      o[a:sub(3)] = true
    elseif a == '-h' or a == '--help' then
      o.help = true
    elseif a:sub(1, 1) == '-' then
      fail("lunar %s: unknown option '%s'\n%s", cmd, a, M.USAGE)
    elseif a:find('=', 1, true) then
      overrides[#overrides + 1] = a
    else
      fail("lunar %s: unexpected argument '%s'\n%s", cmd, a, M.USAGE)
    end
    i = i + 1
  end
  return o, overrides
end

local function int_list(cmd, key, text)
  local out = {}
  for w in tostring(text):gmatch('[^,]+') do
    local n = math.tointeger(tonumber(w))
    if not n or n < 1 then fail("lunar %s: --%s takes integers >= 1 separated by commas, got '%s'", cmd, key, text) end
    out[#out + 1] = n
  end
  return out
end

local function load_config(cmd, o, overrides)
  if not o.config then fail('lunar %s: --config C is required\n%s', cmd, M.USAGE) end
  local cfg = config.load(o.config, overrides)
  if cfg.MODEL ~= nil and cfg.MODEL ~= 'vit' then
    fail("lunar %s: %s: config key 'MODEL' (models as code) is not searched yet; the cost model is the built-in " ..
      "ViT's (MODEL = nil)", cmd, o.config)
  end
  return cfg
end

local function say(s) if (lunar.rank or 0) == 0 then io.stdout:write(s, '\n'); io.stdout:flush() end end

--- `lunar profile ...`
function M.profile(args)
  local o, overrides = parse('profile', args, {['--config'] = true, ['--out'] = true, ['--batches'] = true,
    ['--reps'] = true}, {})
  if o.help then say(M.USAGE) return end
  local cfg = require('lunar.parallel').same_on_every_rank(load_config, 'profile', o, overrides)
  if cfg.NUM_THREADS and cfg.NUM_THREADS > 0 then lunar.set_num_threads(cfg.NUM_THREADS) end
  local out = o.out or 'profile.json'
  local prof_mod = require('lunar.strategy.profile')
  local prof = prof_mod.run(cfg, {batches = o.batches and int_list('profile', 'batches', o.batches),
    reps = o.reps and int_list('profile', 'reps', o.reps)[1]})
  prof_mod.write(prof, out)
  say(string.format('profile of %d rank(s) written to %s', lunar.comm.world():size(), out))
end

--- `lunar search ...`
function M.search(args)
  local o, overrides = parse('search', args, {['--config'] = true, ['--profile'] = true, ['--world'] = true,
    ['--memory-budget'] = true, ['--out'] = true, ['--global-batch'] = true, ['--top'] = true},
    {['--layerwise'] = true, ['--global'] = true})
  if o.help then say(M.USAGE) return end
  local cfg = load_config('search', o, overrides)
  if not o.profile then fail('lunar search: --profile PROFILE is required (write one with `lunar profile`)') end
  local world = math.tointeger(tonumber(o.world or ''))
  if not world or world < 1 then fail("lunar search: --world N (ranks, an integer >= 1) is required, got '%s'",
    tostring(o.world)) end
  if not o['memory-budget'] then fail("lunar search: --memory-budget BYTES (per rank, e.g. '2GiB') is required") end
  local budget, why = memory.parse_bytes(o['memory-budget'])
  if not budget or budget <= 0 then fail("lunar search: --memory-budget '%s' %s", o['memory-budget'],
    why or 'must be > 0') end
  local profile = require('lunar.strategy.profile')
  local prof = profile.read(o.profile)
  for _, d in ipairs(profile.differences(prof, cfg)) do
    io.stderr:write(string.format('lunar search: warning: the profile %s was measured for another model or ' ..
      'machine: %s\n', o.profile, d))
  end
  local search = require('lunar.strategy.search')
  local res = search.run(cfg, prof, {world = world, budget = budget,
    global_batches = o['global-batch'] and int_list('search', 'global-batch', o['global-batch']),
    layerwise = o.layerwise, global = o.global})
  if not res.best then
    local small = res.smallest
    fail('lunar search: no strategy fits %s per rank on %d ranks (%d combinations tried); the smallest memory ' ..
      'found is %s (%s)%s', memory.format_bytes(budget), world, res.considered,
      small and memory.format_bytes(small.min_memory) or '?',
      small and string.format('pipeline %d, ZeRO %d, %d micro-batches, every block checkpointed', small.pp,
        small.zero, small.m) or 'no combination',
      #res.ranked > 0 and '; the strategies that fit need what this build lacks' or '')
  end
  local top = o.top and int_list('search', 'top', o.top)[1] or 5
  say(string.format('searched %d combinations for %d ranks under %s per rank (profile %s):', res.considered, world,
    memory.format_bytes(budget), o.profile))
  say('best:   ' .. search.describe(res.best))
  if res.fastest ~= res.best then say('fastest (not runnable here): ' .. search.describe(res.fastest)) end
  local shown = 0
  for _, r in ipairs(res.ranked) do
    if r ~= res.best and r ~= res.fastest and shown < top - 1 then
      shown = shown + 1
      say(string.format('next %d: %s', shown, search.describe(r)))
    end
  end
  local out = o.out or 'strategy.lua'
  search.write_config(cfg, res, out, {world = world, budget = budget, profile_path = o.profile})
  say('written to ' .. out .. ': mpirun -np ' .. world .. ' build/lunar examples/train_with_engine.lua --config ' .. out)
  return res
end

return M
