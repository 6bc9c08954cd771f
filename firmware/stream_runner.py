"""Audio source for measuring files: 32-bit I2S words on stdin, one JSON line per interval on stdout.

Run by the host (`slm measure`) under the MicroPython unix port (or CPython with the host's shim):
    micropython stream_runner.py '{"rate": 48000, "interval_blocks": 1000, "sensitivity_dbfs": -26.0}'
stdin: little-endian int32 words until EOF. stdout: {"interval": i, "blocks": n, "levels": {...}} per interval,
then {"overall": {...}, "blocks": n}. With "raw": true each line also carries the integer results; with
"first_interval_blocks" the first interval is that many blocks (the rest "interval_blocks").
"""

import json
import sys

from meter import Meter

CHUNK_BLOCKS = 20


def _read_full(stream, mv):
    got = 0
    n = len(mv)
    while got < n:
        r = stream.readinto(mv[got:])
        if not r:
            break
        got += r
    return got


def main(argv):
    opts = json.loads(argv[1])
    meter = Meter(rate=opts["rate"], sensitivity_dbfs=opts.get("sensitivity_dbfs", -26.0),
                  calibration_db=opts.get("calibration_db", 0.0), eq=opts.get("eq"),
                  input_shift=opts.get("input_shift", 10), underrange_db=opts.get("underrange_db"))
    want_raw = opts.get("raw", False)
    interval_blocks = opts["interval_blocks"]
    target = opts.get("first_interval_blocks") or interval_blocks  # the first interval may be shorter
    block = meter.block
    buf = bytearray(4 * block * CHUNK_BLOCKS)
    mv = memoryview(buf)
    stdin = sys.stdin.buffer
    out = sys.stdout
    index = 0
    total_blocks = 0
    eof = False
    while not eof:
        todo = min(CHUNK_BLOCKS, target - meter.interval_blocks())
        got = _read_full(stdin, mv[:4 * block * todo])
        nb = got // (4 * block)
        if nb < todo:
            eof = True
        if nb:
            meter.process(buf, nb)
            total_blocks += nb
        if meter.interval_blocks() >= target or (eof and meter.interval_blocks() > 0):
            target = interval_blocks
            blocks = meter.interval_blocks()
            raw = meter.raw_interval() if want_raw else None
            rec = {"interval": index, "blocks": blocks, "levels": meter.close_interval()}
            if want_raw:
                rec["raw"] = raw
            out.write(json.dumps(rec) + "\n")
            index += 1
    rec = {"overall": meter.totals(), "blocks": total_blocks}
    if want_raw:
        rec["raw_totals"] = meter.totals_raw
    out.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main(sys.argv)
