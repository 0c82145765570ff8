--- lunar.cli: the `lunar config` subcommands and `lunar plot` (bindings/main.c
-- runs `require('lunar.cli').main(args)` when the first argument is `config`
-- or `plot`).
--
--   lunar config show FILE [--world N] [key=value ...]   the resolved config
--                                            (config.dump, with each key's doc), the
--                                            model's size and the memory per rank
--                                            (lunar.memory), computed without allocating
--   lunar config keys                        every key: type, default, doc
--   lunar config keys --markdown             the same as a markdown table (the
--                                            README's config reference)
--   lunar config keys --update-readme [FILE] rewrites that section of FILE
--                                            (default README.md in lunar.home)
--   lunar config help
--   lunar profile ... / lunar search ...    the strategy search (lunar.strategy.cli)
--   lunar plot METRICS_FILE... [-o curves.png]  the loss, learning-rate and
--                                            test-accuracy curves (lunar.plot,
--                                            gnuplot); also writes curves.png.dat
--                                            and curves.png.gp
--
-- Each subcommand is a function that returns its output text (or raises an
-- error), so tests call them directly; `main` prints and sets the exit status:
-- 0 success, 1 a config error (bad key, include cycle, missing file, ...),
-- 2 a usage error. The output of `show` is itself a config file: comments plus
-- `return { ... }`, so `lunar config show A.lua K=V > B.lua` gives a config B
-- that resolves to the same values.
-- @module lunar.cli
local config = require('lunar.config')
local schema = require('lunar.schema')

local cli = {}

cli.README_BEGIN = '<!-- config-reference:begin -->'
cli.README_END = '<!-- config-reference:end -->'

local USAGE = [[
usage: lunar config show FILE [--world N] [key=value ...]
                                                the resolved config, the model's size and the
                                                memory per rank (lunar.memory) on N ranks
       lunar config keys [--markdown]           every config key: type, default, doc
       lunar config keys --update-readme [FILE] regenerate FILE's config reference
                                                (default: README.md of the repository)
       lunar config help                        this text
       lunar plot METRICS_FILE... [-o OUT.png]  loss, learning-rate and test-accuracy curves of
                                                one or more runs (default OUT: curves.png)
]]

--- A usage error: raised as a table so `main` can tell it from a config error.
local function usage_error(msg)
  error(setmetatable({ msg = msg, usage = true }, { __tostring = function(e) return e.msg end }), 0)
end

--- 1234567 -> "1,234,567".
function cli.thousands(n)
  local s = string.format('%d', n)
  local sign, digits = s:match('^(-?)(%d+)$')
  digits = digits:reverse():gsub('(%d%d%d)', '%1,'):reverse():gsub('^,', '')
  return sign .. digits
end

--- 86567656 -> "86.6M", 1844440680 -> "1844.4M" (millions, as papers write them).
local function millions(n) return string.format('%.1fM', n / 1e6) end

local function bytes(n)
  if n >= 2^30 then return string.format('%.1f GiB', n / 2^30) end
  return string.format('%.1f MiB', n / 2^20)
end

-- ---------------------------------------------------------------------------
-- model size

--- The model's size from a resolved config, without allocating it: the ViT's
-- modules are built (parameters declared, no storage) and counted.
-- @tparam table cfg a resolved config
-- @treturn table {params=, head=, backbone= (params without the classification
--   head), tokens=, mlp_hidden=, flops_per_image= (training, forward + backward)}
function cli.model_size(cfg)
  local models = require('lunar.models')
  local build = models.builder(cfg)
  if build then      -- MODEL = 'hybrid_vit' or a function: its modules, counted (nothing allocated)
    local model = build(cfg, require('lunar.nn'))
    local params, head = model:num_parameters(), model.head and model.head:num_parameters() or 0
    local tokens = model.num_tokens or 0
    return {params = params, head = head, backbone = params - head, tokens = tokens,
      mlp_hidden = math.floor(cfg.HIDDEN_SIZE * cfg.MLP_RATIO + 0.5), name = type(cfg.MODEL) == 'string' and
      cfg.MODEL or 'MODEL',
      flops_per_image = 6 * params * tokens + 12 * cfg.DEPTH * tokens * tokens * cfg.HIDDEN_SIZE}
  end
  local model = models.vit(cfg)
  local params = model:num_parameters()
  local head = 0
  for _, p in ipairs(model.head:parameters()) do
    local k = 1
    for _, s in ipairs(p.shape) do k = k * s end
    head = head + k
  end
  return {
    params = params, head = head, backbone = params - head, tokens = model.num_tokens,
    mlp_hidden = model.blocks['0'].mlp.hidden,
    flops_per_image = models.vit_train_flops_per_image(cfg, params),
  }
end

--- The text of `lunar config show`: a header, `return <config.dump>`, and the
-- model's size as comments.
-- @tparam string file the config file
-- @tparam[opt] {string,...} overrides `key=value` strings
-- @tparam[opt] integer world_size the ranks of the run (`--world N`): the data-parallel size
--   of the memory estimate (lunar.memory) when parallel.data is 0
-- @treturn string
-- @raise the errors of `config.load` (unknown key, include cycle, a key given
--   twice on the command line, ...)
function cli.config_show(file, overrides, world_size)
  if type(file) ~= 'string' or file == '' then usage_error('config show: missing FILE') end
  local cfg = config.load(file, overrides)
  local size = cli.model_size(cfg)
  local p = cfg.parallel
  local tp = p.tensor.mode == 'none' and 1 or p.tensor.size
  local lines = {}
  local function add(fmt, ...) lines[#lines + 1] = string.format(fmt, ...) end
  local ovs = overrides and #overrides > 0 and (' ' .. table.concat(overrides, ' ')) or ''
  add('-- %s%s, resolved (lunar config show)', file, ovs)
  add('return %s', config.dump(cfg, { comments = true }))
  add('-- model: %s %s%s, patch %d, width %d, depth %d, %d heads, MLP %d, %d classes, %d tokens',
    size.name or 'ViT', cfg.IMG_SIZE, cfg.IMG_DIMS == 3 and ' (3D)' or 'px', cfg.PATCH_SIZE, cfg.HIDDEN_SIZE, cfg.DEPTH,
    cfg.NUM_HEADS, size.mlp_hidden, cfg.NUM_CLASSES, size.tokens)
  add('-- parameters: %s (%s); without the classification head: %s (%s)', cli.thousands(size.params),
    millions(size.params), cli.thousands(size.backbone), millions(size.backbone))
  local split = p.pipeline * tp
  -- 2.5d's depth layers hold copies of the weights: they split over size / depth
  local wsplit = p.pipeline * (p.tensor.mode == '2.5d' and tp // (p.tensor.depth or 1) or tp)
  local state = string.format('-- fp32 weights + gradients + AdamW moments (16 B/parameter): %s per replica',
    bytes(16 * size.params))
  if split > 1 then
    state = state .. string.format(', %s per rank over pipeline %d x tensor %d%s', bytes(16 * size.params / wsplit),
      p.pipeline, tp, wsplit ~= split and string.format(' (weights over %d: depth copies)', wsplit // p.pipeline) or '')
  end
  add('%s', state)
  add('-- training FLOPs per image: %.3g (6 * params * tokens + 12 * depth * tokens^2 * width)',
    size.flops_per_image)
  local dom = type(p.domain) == 'table' and p.domain.size or p.domain or 1
  local split_all = split * dom
  local data
  if p.data > 0 then data = tostring(p.data)
  elseif split_all > 1 then data = string.format('world size / %d', split_all)
  else data = 'world size' end
  local axes, sizes = 'data x pipeline x tensor', string.format('(%s) x %d x %d', data, p.pipeline, tp)
  if dom > 1 then axes, sizes = axes .. ' x domain', sizes .. ' x ' .. dom end
  add('-- ranks = %s = %s; global batch = BATCH_SIZE x data x gradient_accumulation = %d x data x %d', axes, sizes,
    cfg.BATCH_SIZE, cfg.gradient_accumulation)
  if cfg.MODEL == nil or cfg.MODEL == 'vit' then
    local memory = require('lunar.memory')
    local world = world_size or (p.data > 0 and p.data * split) or split
    local est = memory.estimate(cfg, {world = world})
    local text = memory.describe(est)
    if p.data == 0 and not world_size and est.zero.stage > 0 then text = text .. '\n(data size 1 assumed: give --world N or parallel.data)' end
    if cfg.MEMORY_BUDGET and cfg.MEMORY_BUDGET > 0 then
      text = text .. '\nMEMORY_BUDGET ' .. memory.format_bytes(cfg.MEMORY_BUDGET) .. ' per rank'
    end
    add('%s', ('\n' .. text):gsub('\n', '\n-- '):sub(2))
  else
    -- a MODEL: the model state per rank (ZeRO's shard group: the data ranks of each domain coordinate)
    local memory = require('lunar.memory')
    local world = world_size or (p.data > 0 and p.data * split_all) or split_all
    local r = memory.replicated_state(cfg, size.params, {world = world})
    add('-- %s%s', memory.describe_replicated(r), p.data == 0 and not world_size and r.zero.stage > 0 and
      ' (data size 1 assumed: give --world N or parallel.data)' or '')
  end
  return table.concat(lines, '\n') .. '\n'
end

-- ---------------------------------------------------------------------------
-- keys

local function lua_literal(v)
  if type(v) == 'string' then return string.format('%q', v) end
  if type(v) == 'table' then return '{...}' end
  if math.type(v) == 'float' then
    local s = string.format('%.14g', v)
    if not s:find('[.eEna]') then s = s .. '.0' end
    return s
  end
  return tostring(v)
end

local function type_of(e)
  if e.fields then return 'dict' end
  if e.items then return 'list of ' .. e.items .. 's' end
  return e.type
end

local function doc_of(e)
  local doc = e.doc
  if e.enum then
    local vals = {}
    for i, v in ipairs(e.enum) do vals[i] = lua_literal(v) end
    doc = doc .. ' (one of ' .. table.concat(vals, ', ') .. ')'
  end
  return doc
end

--- The text of `lunar config keys`: one line per key (schema.help()).
-- @treturn string
function cli.config_keys()
  return schema.help()
end

--- The README's config reference: a markdown table of every key with its
-- type, default and doc, generated from lunar.schema.
-- @treturn string the table, ending with a newline
function cli.markdown_reference()
  local function cell(s) return (tostring(s):gsub('|', '\\|')) end
  local lines = {
    '| key | type | default | doc |',
    '|---|---|---|---|',
  }
  for _, e in ipairs(schema.keys()) do
    local default
    if e.fields then default = ''
    elseif e.default == nil then default = '(unset)'
    else default = '`' .. lua_literal(e.default) .. '`' end
    lines[#lines + 1] = string.format('| `%s` | %s | %s | %s |', e.key, type_of(e), cell(default),
      cell(doc_of(e)))
  end
  return table.concat(lines, '\n') .. '\n'
end

--- The whole generated README section, markers included.
-- @treturn string
function cli.readme_section()
  return cli.README_BEGIN .. '\n' ..
    '<!-- generated from lua/lunar/schema.lua by `build/lunar config keys --update-readme`; do not edit -->\n' ..
    '\n' .. cli.markdown_reference() .. '\n' .. cli.README_END
end

local function read_file(path)
  local f, err = io.open(path, 'rb')
  if not f then error('cannot open ' .. tostring(err), 0) end
  local s = f:read('a')
  f:close()
  return s
end

--- Splits a README into the text before the config reference section, the
-- section (markers included) and the text after it.
-- @treturn string,string,string before, section, after
-- @raise when the markers are missing or out of order
function cli.split_readme(text, path)
  local b = text:find(cli.README_BEGIN, 1, true)
  local e = text:find(cli.README_END, 1, true)
  if not b or not e or e < b then
    error(string.format('%s: no config reference section (a line %s, then a line %s)', path or 'README',
      cli.README_BEGIN, cli.README_END), 0)
  end
  local stop = e + #cli.README_END - 1
  return text:sub(1, b - 1), text:sub(b, stop), text:sub(stop + 1)
end

--- Rewrites the config reference section of a README in place.
-- @tparam[opt] string path default: README.md in lunar.home
-- @treturn string a line saying what was done
function cli.update_readme(path)
  path = path or ((lunar and lunar.home or '.') .. '/README.md')
  local text = read_file(path)
  local before, section, after = cli.split_readme(text, path)
  local fresh = cli.readme_section()
  if section == fresh then return path .. ': the config reference is up to date\n' end
  local f, err = io.open(path, 'wb')
  if not f then error('cannot write ' .. tostring(err), 0) end
  f:write(before, fresh, after)
  f:close()
  return path .. ': config reference regenerated\n'
end

-- ---------------------------------------------------------------------------
-- dispatch

local SUBCOMMANDS = { 'show', 'keys', 'help' }

--- `lunar config ...`: args are the words after `config`.
-- @treturn string the output
function cli.config(args)
  local sub = args[1]
  if sub == nil then usage_error('config: missing subcommand (show, keys, help)') end
  if sub == 'help' or sub == '--help' or sub == '-h' then return USAGE end
  if sub == 'show' then
    local file, overrides, world = nil, {}, nil
    local i = 2
    while i <= #args do
      local a = args[i]
      if a == '--world' then
        world = math.tointeger(tonumber(args[i + 1] or ''))
        if not world or world < 1 then usage_error("config show: --world needs a number of ranks >= 1") end
        i = i + 1
      elseif a:find('=', 1, true) and not a:match('^[^=]*/') then
        overrides[#overrides + 1] = a
      elseif a:sub(1, 1) == '-' then
        usage_error("config show: unknown option '" .. a .. "'")
      elseif file then
        usage_error("config show: one FILE expected, got '" .. file .. "' and '" .. a .. "'")
      else
        file = a
      end
      i = i + 1
    end
    return cli.config_show(file, overrides, world)
  end
  if sub == 'keys' then
    local mode, path = 'plain', nil
    local i = 2
    while i <= #args do
      local a = args[i]
      if a == '--markdown' then mode = 'markdown'
      elseif a == '--update-readme' then
        mode = 'update'
        if args[i + 1] and args[i + 1]:sub(1, 1) ~= '-' then path = args[i + 1]; i = i + 1 end
      else usage_error("config keys: unknown argument '" .. a .. "'") end
      i = i + 1
    end
    if mode == 'markdown' then return cli.markdown_reference() end
    if mode == 'update' then return cli.update_readme(path) end
    return cli.config_keys()
  end
  local msg = "config: unknown subcommand '" .. tostring(sub) .. "'"
  for _, s in ipairs(SUBCOMMANDS) do
    if s:sub(1, 2) == tostring(sub):sub(1, 2) then msg = msg .. " (did you mean '" .. s .. "'?)"; break end
  end
  usage_error(msg)
end

--- `lunar plot METRICS_FILE... [-o OUT]`: args are the words after `plot`.
-- @treturn string the output (points per curve and file, the files written)
function cli.plot(args)
  local files, out = {}, 'curves.png'
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == '-o' or a == '--output' then
      if not args[i + 1] then usage_error("plot: option '" .. a .. "' needs a file name") end
      out, i = args[i + 1], i + 1
    elseif a == '-h' or a == '--help' then
      return USAGE
    elseif a:sub(1, 1) == '-' then
      usage_error("plot: unknown option '" .. a .. "'")
    else
      files[#files + 1] = a
    end
    i = i + 1
  end
  if #files == 0 then usage_error('plot: no METRICS_FILE given') end
  local plot = require('lunar.plot')
  return plot.summary(files, out, plot.draw(files, out))
end

--- Runs a CLI command line and exits with its status (0, 1 or 2); output on
-- rank 0 only. args[1] is the command (`config` or `plot`).
-- @tparam {string,...} args the host's arguments after the program name
function cli.main(args)
  local cmd = args[1]
  local rest = table.move(args, 2, #args, 1, {})
  if cmd == 'profile' or cmd == 'search' then
    -- collective under mpirun (profile): errors go through the host, success returns to it
    return require('lunar.strategy.cli')[cmd](rest)
  end
  local ok, out = pcall(function()
    if cmd == 'config' then return cli.config(rest) end
    if cmd == 'plot' then return cli.plot(rest) end
    usage_error("unknown command '" .. tostring(cmd) .. "'")
  end)
  local main_rank = (lunar and lunar.rank or 0) == 0
  if ok then
    if main_rank then io.stdout:write(out); io.stdout:flush() end
    os.exit(0)
  end
  local usage = type(out) == 'table' and out.usage
  if main_rank then
    -- usage errors read "lunar config show: ...", config errors "lunar config: FILE: ...",
    -- plot errors "lunar plot: ..." (their message starts with "plot: ")
    local msg = type(out) == 'table' and (out.msg or out.message) or tostring(out)
    io.stderr:write((usage or cmd == 'plot') and 'lunar ' or 'lunar config: ', msg, '\n')
    if usage then io.stderr:write(USAGE) end
    io.stderr:flush()
  end
  os.exit(usage and 2 or 1)
end

return cli
