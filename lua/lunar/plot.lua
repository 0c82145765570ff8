--- lunar.plot: the loss, learning-rate and test-accuracy curves of one or
-- several runs on one figure (`lunar plot`), drawn by gnuplot (Debian's
-- gnuplot-nox, pngcairo terminal) from a script this module writes.
--
--   local plot = require('lunar.plot')
--   local runs = plot.read_metrics('metrics.jsonl')   -- {loss = {{step, v}, ...}, lr = ..., test_accuracy = ...}
--   local counts = plot.draw({'a.jsonl', 'b.jsonl'}, 'curves.png')
--
-- draw writes three files: OUT (the PNG: three panels against the optimizer
-- step, loss, learning rate, test accuracy; one line per metrics file, titled
-- with its name), OUT.dat (the points plotted: for each file and curve one
-- block "# FILE CURVE" of "step value" lines, blocks separated by two blank
-- lines, gnuplot's `index`) and OUT.gp (the gnuplot script). A metrics file
-- is the JSON lines of lunar.log.metrics (METRICS_FILE): a line with `loss`
-- gives a loss point at its `step`, one with `lr` a learning-rate point, one
-- with `test_accuracy` an accuracy point.
-- @module lunar.plot
local json = require('lunar.json')

local plot = {}

--- The curves, in panel order: the metrics key and the panel's label.
plot.CURVES = {{'loss', 'train loss'}, {'lr', 'learning rate'}, {'test_accuracy', 'test accuracy'}}

--- Reads a JSON-lines metrics file: {loss = {{step, value}, ...}, lr = ...,
-- test_accuracy = ...}, in file order. Raises a user error naming the file
-- (and line) when it cannot be read, a line is not a JSON object, or a line
-- with a curve's key has no numeric step.
function plot.read_metrics(path)
  local f, err = io.open(path)
  if not f then lunar.error('plot: cannot open metrics file ' .. tostring(err)) end
  local curves = {}
  for _, c in ipairs(plot.CURVES) do curves[c[1]] = {} end
  local n = 0
  for line in f:lines() do
    n = n + 1
    if line:match('%S') then
      local ok, obj = pcall(json.decode, line)
      if not ok or type(obj) ~= 'table' then
        f:close()
        lunar.error(string.format('plot: %s:%d: not a JSON object: %s', path, n, tostring(obj)))
      end
      for _, c in ipairs(plot.CURVES) do
        local v = obj[c[1]]
        if type(v) == 'number' then
          if type(obj.step) ~= 'number' then
            f:close()
            lunar.error(string.format("plot: %s:%d: '%s' without a numeric 'step'", path, n, c[1]))
          end
          local pts = curves[c[1]]
          pts[#pts + 1] = {obj.step, v}
        end
      end
    end
  end
  f:close()
  return curves
end

--- A string as a gnuplot single-quoted string ('' stands for ').
local function gp_quote(s) return "'" .. s:gsub("'", "''") .. "'" end

--- A string as one word for /bin/sh.
local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

--- Whether gnuplot is on PATH.
function plot.have_gnuplot()
  return os.execute('command -v gnuplot >/dev/null 2>&1') == true
end

--- Draws the curves of the metrics files `files` into the PNG `out` (opts:
-- width, height in pixels, default 900 x 1000). Returns {file -> {loss = n,
-- lr = n, test_accuracy = n}} (points per curve). Raises a user error when
-- gnuplot is missing, a file cannot be read, or gnuplot fails (with its
-- message).
function plot.draw(files, out, opts)
  opts = opts or {}
  assert(type(files) == 'table' and #files > 0, 'plot.draw: files (a list of metrics files) is required')
  assert(type(out) == 'string' and out ~= '', 'plot.draw: out (the PNG path) is required')
  if not plot.have_gnuplot() then
    lunar.error('plot: gnuplot not found on PATH (Debian: apt-get install gnuplot-nox; scripts/install_deps.sh)')
  end
  local runs, counts = {}, {}
  for i, path in ipairs(files) do runs[i] = plot.read_metrics(path) end
  -- the data file: block (i - 1) * #CURVES + (c - 1) is curve c of file i
  local dat_path, gp_path = out .. '.dat', out .. '.gp'
  local dat = assert(io.open(dat_path, 'w'))
  local block, xmin, xmax = 0, math.huge, -math.huge
  local index = {}   -- index[c][i] = the block, or nil when the curve has no point
  for c, curve in ipairs(plot.CURVES) do index[c] = {} end
  for i, run in ipairs(runs) do
    counts[files[i]] = {}
    for c, curve in ipairs(plot.CURVES) do
      local pts = run[curve[1]]
      counts[files[i]][curve[1]] = #pts
      if block > 0 then dat:write('\n\n') end
      dat:write(string.format('# %s %s\n', files[i], curve[1]))
      for _, p in ipairs(pts) do
        dat:write(string.format('%.17g %.17g\n', p[1], p[2]))
        xmin, xmax = math.min(xmin, p[1]), math.max(xmax, p[1])
      end
      if #pts == 0 then dat:write('# (no points)\n') else index[c][i] = block end
      block = block + 1
    end
  end
  dat:close()
  local gp = {
    string.format('set terminal pngcairo size %d,%d noenhanced', opts.width or 900, opts.height or 1000),
    'set output ' .. gp_quote(out),
    'set datafile commentschars "#"',
    'set multiplot layout 3,1',
    'set grid',
    'set key outside right top',
    'set xlabel "optimizer step"',
    'set lmargin 12',   -- the same left edge in every panel, so the step axes line up
  }
  if xmin < xmax then gp[#gp + 1] = string.format('set xrange [%.17g:%.17g]', xmin, xmax) end
  for c, curve in ipairs(plot.CURVES) do
    gp[#gp + 1] = 'set ylabel ' .. gp_quote(curve[2])
    gp[#gp + 1] = curve[1] == 'lr' and 'set format y "%.1e"' or 'set format y "%g"'
    local terms = {}
    for i = 1, #files do
      if index[c][i] then
        terms[#terms + 1] = string.format('%s index %d using 1:2 with linespoints pt 7 ps 0.4 title %s',
          gp_quote(dat_path), index[c][i], gp_quote(files[i]))
      end
    end
    if #terms == 0 then   -- no file has this curve: an empty panel that says so
      gp[#gp + 1] = 'set label 1 "no data" at graph 0.5, 0.5 center'
      gp[#gp + 1] = 'plot [0:1] [0:1] 2 notitle'
      gp[#gp + 1] = 'unset label 1'
    else
      gp[#gp + 1] = 'plot ' .. table.concat(terms, ', ')
    end
  end
  gp[#gp + 1] = 'unset multiplot'
  local g = assert(io.open(gp_path, 'w'))
  g:write(table.concat(gp, '\n'), '\n')
  g:close()
  local log_path = out .. '.log'
  local ok = os.execute('gnuplot ' .. sh_quote(gp_path) .. ' >' .. sh_quote(log_path) .. ' 2>&1')
  local lf = io.open(log_path)
  local msg = lf and lf:read('a') or ''
  if lf then lf:close() end
  os.remove(log_path)
  if ok ~= true then
    lunar.error(string.format('plot: gnuplot failed on %s: %s', gp_path, msg:gsub('%s+$', '')))
  end
  return counts
end

--- The summary `lunar plot` prints: one line per file,
--   metrics.jsonl: loss 120 points, lr 120 points, test_accuracy 2 points
-- then "wrote OUT (data OUT.dat, script OUT.gp)".
function plot.summary(files, out, counts)
  local lines = {}
  for _, f in ipairs(files) do
    local parts = {}
    for _, curve in ipairs(plot.CURVES) do
      parts[#parts + 1] = string.format('%s %d points', curve[1], counts[f][curve[1]])
    end
    lines[#lines + 1] = f .. ': ' .. table.concat(parts, ', ')
  end
  lines[#lines + 1] = string.format('wrote %s (data %s.dat, script %s.gp)', out, out, out)
  return table.concat(lines, '\n') .. '\n'
end

--- The end of a training run (the examples): with PLOT_FILE set, rank 0
-- draws METRICS_FILE into it and logs where. A missing gnuplot is a user error.
function plot.at_end(cfg)
  if cfg.PLOT_FILE == '' or (lunar.rank or 0) ~= 0 then return end
  if cfg.METRICS_FILE == '' then lunar.error('PLOT_FILE needs METRICS_FILE (the curves are drawn from it)') end
  local counts = plot.draw({cfg.METRICS_FILE}, cfg.PLOT_FILE)
  io.stdout:write(plot.summary({cfg.METRICS_FILE}, cfg.PLOT_FILE, counts))
  io.stdout:flush()
end

return plot
