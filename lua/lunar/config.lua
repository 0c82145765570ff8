--- Configs as code (Colossal-AI style): a config file is a Lua chunk and the
-- globals it sets are the config.
--
--     -- configs/vit_tiny.lua
--     include 'base.lua'                          -- relative to this file
--     HIDDEN_SIZE = 192
--     SEQ_LENGTH = (IMG_SIZE // PATCH_SIZE)^2 + 1 -- reads of keys already set work
--     parallel = { pipeline = 2, tensor = { mode = '1d', size = 2 } }
--     parallel.pipeline_schedule = 'gpipe'        -- dicts are filled with defaults on assignment
--     local n = 4                                 -- locals are helpers, not config
--
-- Resolution order: the schema defaults (lunar.schema), then the config file
-- (an `include`d base first, then the file that includes it), then the
-- command line overrides (`key=value`). Every key is checked against the
-- schema: an unknown key, an ill-typed value, a value outside its enum or
-- bounds is an error that names the key and the file (or "command line").
--
-- Overrides win, and they are in place before the file runs: the file reads
-- the overridden values and its own assignments to an overridden key are
-- ignored. So keys a config computes from others (`if DATASET == 'cifar10'
-- then IN_CHANS = 3 end`) follow the command line.
--
-- Errors are user errors, raised with `lunar.error(msg)` (the host prints the
-- message without a traceback; the message has no position prefix of its
-- own; a Lua error inside a config file keeps its "file:line:").
--
-- The parts, one job each (lua/lunar/config/):
--   loader.lua     config files: include, globals as keys, resolution order
--   check.lua      values against lunar.schema: types, enums, bounds, derived keys
--   overrides.lua  `key=value` command-line overrides
--   dump.lua       a resolved config as Lua text that reads back equal
--   machine.lua    what a config asks of this machine (device, bf16)
--   text.lua       values as Lua text for messages and the dump
-- @module lunar.config
local loader = require('lunar.config.loader')

return {
  load = loader.load,
  from_table = loader.from_table,
  parse_overrides = require('lunar.config.overrides').parse_overrides,
  dump = require('lunar.config.dump').dump,
  check_machine = require('lunar.config.machine').check_machine,
}
