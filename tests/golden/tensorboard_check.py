#!/usr/bin/env python3
"""tests/golden/tensorboard_check.py: reads Lunar's TensorBoard event files
with TensorBoard's own reader (tensorboard.backend.event_processing) and
checks them against the run's metrics file (JSON lines, METRICS_FILE).
Run by tests/fail/test_tensorboard.sh in a venv with PyPI's tensorboard.

  tensorboard_check.py run DIR METRICS PEAK_MIB NUM_PARAMS T0 T1 [--rate-factor F]
      every scalar of the event files in DIR equals the metrics file: the
      tags, the steps in order and the values (the f32 of the metrics value,
      exactly; with --rate-factor F, train/images_per_s only positive with
      the median ratio to the file's within a factor F, for a writer that
      times the steps with its own clock: one step lasts milliseconds here);
      memory/peak_bytes at every training step, positive, non-decreasing, at
      least the f32 weights (4 * NUM_PARAMS) and at most the run's peak
      (PEAK_MIB, the "peak memory: X MiB in tensors" line, 1 decimal);
      every wall_time in [T0, T1]; the records' CRCs hold (TensorBoard's
      record reader) and the first record is file_version brain.Event:2.
  tensorboard_check.py steps DIR TAG N
      TAG has the steps 1..N with the values 1/step (a writer that died
      without closing its file: tests/fail/test_tensorboard.sh).
Prints one "ok"/"FAIL" line per check and "N passed, N failed".
"""
import glob
import json
import os
import struct
import sys

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.compat.tensorflow_stub import errors
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New
from tensorboard.compat.proto import event_pb2

passed, failed = 0, 0


def check(name, cond, detail=''):
    global passed, failed
    if cond:
        passed += 1
        print('  ok ' + name)
    else:
        failed += 1
        print('  FAIL %s%s' % (name, (': ' + detail) if detail else ''))


def f32(v):
    return struct.unpack('<f', struct.pack('<f', v))[0]


def scalars(d):
    acc = event_accumulator.EventAccumulator(d, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return {t: acc.Scalars(t) for t in acc.Tags()['scalars']}


def records(path):
    """Every record of an event file through TensorBoard's record reader,
    which checks the length and data CRCs (DataLossError otherwise)."""
    r = PyRecordReader_New(path)
    out = []
    while True:
        try:
            r.GetNext()
        except errors.OutOfRangeError:
            return out
        ev = event_pb2.Event()
        ev.ParseFromString(r.record())
        out.append(ev)


def check_run(d, metrics, peak_mib, num_params, t0, t1, rate_factor):
    files = sorted(glob.glob(os.path.join(d, 'events.out.tfevents.*')))
    check('one event file in %s' % d, len(files) == 1, repr(files))
    if not files:
        return
    recs = []
    try:
        recs = records(files[0])
        check('every record passes the CRC checks (%d records)' % len(recs), True)
    except errors.DataLossError as e:
        check('every record passes the CRC checks', False, str(e))
    check('the first record is file_version brain.Event:2',
          bool(recs) and recs[0].file_version == 'brain.Event:2', repr(recs[:1]))
    walls = [ev.wall_time for ev in recs]
    check('wall times within the run [%.1f, %.1f]' % (t0, t1), all(t0 <= w <= t1 for w in walls),
          repr(walls[:3]))
    check('wall times do not decrease', walls == sorted(walls))

    lines = [json.loads(l) for l in open(metrics) if l.strip()]
    want = {}
    train_steps = []
    for obj in lines:
        if 'test_accuracy' in obj or 'test_loss' in obj:
            pairs = [('test_accuracy', 'test/accuracy'), ('test_loss', 'test/loss')]
        else:
            pairs = [('loss', 'train/loss'), ('lr', 'train/lr'), ('images_per_s', 'train/images_per_s')]
            train_steps.append(obj['step'])
        for key, tag in pairs:
            if key in obj:
                want.setdefault(tag, []).append((obj['step'], obj[key]))
    got = scalars(d)
    want_tags = set(want) | {'memory/peak_bytes'}
    check('tags %s' % sorted(want_tags), set(got) == want_tags, 'got %s' % sorted(got))
    for tag in sorted(want):
        g = [(e.step, e.value) for e in got.get(tag, [])]
        w = want[tag]
        steps_ok = [s for s, _ in g] == [s for s, _ in w]
        if tag == 'train/images_per_s' and rate_factor:
            ratios = sorted(gv / v for (_, gv), (_, v) in zip(g, w))
            vals_ok = steps_ok and all(gv > 0 for _, gv in g) and \
                1 / rate_factor <= ratios[len(ratios) // 2] <= rate_factor
        else:
            vals_ok = steps_ok and all(gv == f32(v) for (_, gv), (_, v) in zip(g, w))
        check('%s: %d points, steps and values as in the metrics file' % (tag, len(w)), steps_ok and vals_ok,
              'got %s, want %s' % (g[:4], w[:4]))
    mem = [(e.step, e.value) for e in got.get('memory/peak_bytes', [])]
    check('memory/peak_bytes at every training step (%d)' % len(train_steps), [s for s, _ in mem] == train_steps,
          'steps %s' % [s for s, _ in mem][:5])
    vals = [v for _, v in mem]
    check('memory/peak_bytes does not decrease', vals == sorted(vals))
    lo, hi = 4 * num_params, (peak_mib + 0.05) * 2**20
    check('memory/peak_bytes in [4 x params = %d, peak %.1f MiB]' % (lo, peak_mib),
          bool(vals) and vals[0] >= lo and vals[-1] <= hi, 'first %s last %s' % (vals[:1], vals[-1:]))


def check_steps(d, tag, n):
    got = scalars(d)
    g = [(e.step, e.value) for e in got.get(tag, [])]
    check('%s: steps 1..%d with 1/step, written before the process died' % (tag, n),
          g == [(s, f32(1.0 / s)) for s in range(1, n + 1)], repr(g))


def main(argv):
    if argv[1] == 'run':
        rf = float(argv[argv.index('--rate-factor') + 1]) if '--rate-factor' in argv else None
        check_run(argv[2], argv[3], float(argv[4]), int(argv[5]), float(argv[6]), float(argv[7]), rf)
    elif argv[1] == 'steps':
        check_steps(argv[2], argv[3], int(argv[4]))
    else:
        sys.exit('usage: tensorboard_check.py run|steps ...')
    print('%d passed, %d failed' % (passed, failed))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
