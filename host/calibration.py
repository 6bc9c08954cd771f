"""Field calibration of a meter in place: against an acoustic calibrator, side by side with a class 1 reference meter,
and calibrator checks for drift — each recorded on the device, so that later, when a complaint is disputed, anyone
can show which calibration applied to which data.

Functions over an open ``DeviceLink`` (slm.link); they read the device's ``interval`` records (LAeq, LCeq, LZeq per
interval, normally 1 s) and talk the ``calibrate`` / ``cal_history`` commands of docs/protocol.md::

    with DeviceLink(port) as link:
        r = calibrate_with_calibrator(link, 94.0, operator="Li Wei", instrument="B&K 4231 s/n 2345678")
        r = calibrate_with_reference(link, [70.1, 75.2, 80.0], instrument="NTi XL2 s/n A2A-12345-E0")
        r = calibrate_with_reference(link, ask=lambda i, window: float(input("reference LAeq: ")))
        r = check_with_calibrator(link, 94.0)
        history = read_history(link)

Method (standards reference, "Field calibration of a MEMS sensor against references"):

- **Calibrator** (IEC 60942, 94 or 114 dB at 1 kHz on the microphone through an adapter): wait for the level to
  settle (3 intervals within 0.3 dB, at most ``MAX_SETTLE_S``), then measure a window (default 10 s). The tone must be
  there and be a steady 1 kHz tone: the firmware reports no frequency, so the test is that LCeq and LZeq agree with
  LAeq within ``TONE_WEIGHTING_DB`` (0.2 dB; A, C and Z weightings meet only near 1 kHz: A is -0.8 dB at 800 Hz and
  +0.6 dB at 1250 Hz), and that the window's 1 s levels spread by at most ``TONE_SPREAD_DB`` (0.3 dB; a class 1
  calibrator fluctuates by 0.07 dB). The reading must be within ±10 dB of the calibrator level (else: the wrong
  ``level_db`` or no tone at all, the level far below). New offset = current offset + (level - reading); refused
  beyond ±``OFFSET_LIMIT_DB`` (10 dB).
- **Reference meter** (side by side, ≤ 10-20 cm apart, same windows, LAeq): one window per level (the user starts
  each, or without prompts each window after the first waits for the level to change by ``LEVEL_CHANGE_DB``); each
  window starts once the level has settled (3 intervals within 1 dB), and a level step during it (an interval more
  than ``STEP_DB`` from the window's level) drops the window: it is measured again after the new level settles, so
  a window never straddles a change of level. The reference LAeq of each window is typed in (``ask``) or given
  beforehand (``reference_values``, in the order of the levels): without prompts the values go to the first run of
  windows whose levels step as the values do (each level relative to the first, within ``SERIES_TOLERANCE_DB``),
  so a series started in the middle of a cycle of levels waits for the first level to come round again. (Levels
  in equal steps cannot be told apart this way: a run started one step below the first level would be matched one
  step off, as it would in order. Start such a series at its first level; the offset then shows the mistake.)
  Reference values below ``max(35 dB(A), microphone self-noise + 10 dB)`` are refused (the self-noise lifts the
  reading there), as are non-numbers. The device applies one offset, so the offset is the mean of (reference -
  reading) (the least-squares offset at slope 1); the residuals are what is left after it. With levels spanning
  5 dB or more a free least-squares line reading = slope · reference + intercept judges the linearity: **linear
  when |slope - 1| ≤ 0.02 and every residual ≤ 0.3 dB** (the standard's tolerance for a 1-10 dB step is ±0.3 dB for
  class 1; 0.02 is 0.2 dB over a 10 dB span). A non-linear result is refused: self-noise, background noise or a
  reference in another place is the likely cause, and one offset would not fix it.
- **Check**: the calibrator, measured as above, changes nothing; drift = reading - level - (offset now - offset of
  the calibration in force), i.e. how far the meter has moved since that calibration (both methods leave the meter
  reading true levels, so the calibrator should read its level). Over ``DRIFT_LIMIT_DB`` (0.5 dB, GB 3096-2008:
  calibrate before and after, a difference over 0.5 dB invalidates the data) the check is flagged: data since the
  last good check are invalid. The check is recorded in the history whatever it finds.

Uncertainty (GUM, expanded with k = 2): the root sum of squares of the standard uncertainties in ``BUDGETS`` (the
calibrator's 0.16 dB is the standards reference's figure for class 1; the others are this module's stated
estimates) plus the measured terms: repeatability (each window's standard deviation / sqrt(intervals); it counts the
sound's own fluctuation, which the reference meter shares, so it is conservative) and, with a reference meter, the
scatter of (reference - reading) between levels (standard deviation / sqrt(levels)).

Refusals raise ``CalibrationRefused`` (``code`` and a one-line reason) and change nothing on the device; bad input
(a reference that is not a number or is below the range, a window too short) raises ``ValueError`` before anything
is measured. Every successful run is one ``calibrate`` command: the device appends the record to its history and,
for the calibrator and reference methods, sets ``calibration_db`` (with ``calibration_method``/``calibration_time``)
all or nothing; the new offset applies only from then on.
"""

from __future__ import annotations

import datetime
import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from slm.errors import OperationError
from slm.link import DeviceError, DeviceLink, LinkError

OFFSET_LIMIT_DB = 10.0  # |calibration_db| after a calibration
PLAUSIBLE_DB = 10.0  # calibrator: |reading - level| (a bigger gap is the wrong level or no tone)
NO_TONE_DB = 30.0  # calibrator: a reading this far below the level means no calibrator on the microphone
TONE_WEIGHTING_DB = 0.2  # |LCeq - LAeq| and |LZeq - LAeq| of a 1 kHz tone
TONE_SPREAD_DB = 0.3  # max - min of the window's interval LAeq for a calibrator tone
SETTLE_INTERVALS = 3  # intervals in a row within the spread limit before the window starts
MAX_SETTLE_S = 15.0  # then measure anyway (and let the checks say what is wrong)
REFERENCE_SPREAD_DB = 2.0  # reference method: a window whose interval levels spread more is not steady
LEVEL_CHANGE_DB = 3.0  # reference method without prompts: the next level differs at least this much
LEVEL_CHANGE_TIMEOUT_S = 180.0  # device seconds to wait for it
STEP_DB = 0.75  # reference method: an interval this far from the window's level is a step: measure again after it
# (steady pink noise keeps 1 s levels within ±0.2 dB; 0.75 dB catches an interval with 9 % of it at a level 5 dB on)
MAX_STEP_RESTARTS = 5  # then keep the window (and let the steadiness check judge it)
SERIES_TOLERANCE_DB = 1.0  # reference values given: the levels must step as the values do, within this
SLOPE_TOLERANCE = 0.02
RESIDUAL_LIMIT_DB = 0.3
SLOPE_MIN_SPAN_DB = 5.0  # levels must span this much for the slope to mean anything
MIN_REFERENCE_DB = 35.0
SELF_NOISE_MARGIN_DB = 10.0
DEFAULT_SELF_NOISE_DBA = 33.0  # INMP441; used when the board profile is unknown to this host
DRIFT_LIMIT_DB = 0.5  # GB 3096-2008
MAX_LEVELS = 12  # readings per record on the device
RECORD_LIMIT_BYTES = 700  # the device stores at most 800 with its own fields (n, previous_offset_db)

# Standard uncertainties (dB) of the type-B terms, per method. The calibrator figure is the standards reference's;
# the others are estimates stated here so that a report can quote them.
BUDGETS: dict[str, dict[str, float]] = {
    "calibrator": {
        "calibrator level (class 1, IEC 60942)": 0.16,
        "coupling of the adapter to the MEMS port": 0.10,
        "frequency response: 1 kHz calibration used on field sounds": 0.10,
        "temperature between calibration and use": 0.05,
    },
    "reference": {
        "reference meter (class 1, calibrated on site with a class 1 calibrator)": 0.20,
        "position: meters 10-20 cm apart": 0.10,
        "frequency response: test spectrum vs field sounds": 0.10,
        "temperature between calibration and use": 0.05,
    },
    "check": {  # the same calibrator on the same meter: its level cancels; re-seating and temperature do not
        "coupling of the adapter to the MEMS port (re-seating)": 0.10,
        "temperature between calibration and check": 0.05,
    },
}
RESOLUTION_U = 0.01 / math.sqrt(12)  # 0.01 dB display resolution, rectangular


class CalibrationError(OperationError):
    """The calibration could not be done (the link, lost records, the device's reply); nothing was changed unless
    the message says so. One line; exit 1."""


class CalibrationRefused(CalibrationError):
    """The measurement does not support a calibration (``code``: no_tone, offset_limit, not_1khz, unstable, overload,
    underrange, unsteady, no_level_change, levels_mismatch, nonlinear, implausible_level); nothing was changed on the
    device."""

    def __init__(self, code: str, reason: str):
        self.code = code
        self.reason = reason
        super().__init__(reason)


# ----------------------------------------------------------------------------------------------- measurement

def energy_mean(levels: Sequence[float]) -> float:
    """The level of the mean power of equal-length intervals (dB)."""
    return 10 * math.log10(sum(10 ** (v / 10) for v in levels) / len(levels))


@dataclass
class Window:
    """One measuring window: the device's interval records over it (per-interval LAeq, LCeq, LZeq)."""

    start_ms: int
    end_ms: int
    laeq: list[float]
    lceq: list[float]
    lzeq: list[float]
    overload: bool = False
    underrange: bool = False
    host_start: str = ""  # host time (ISO 8601) of the window's first record
    host_end: str = ""

    @property
    def LAeq(self) -> float:  # noqa: N802 - the quantity's name
        return energy_mean(self.laeq)

    @property
    def LCeq(self) -> float:  # noqa: N802
        return energy_mean(self.lceq)

    @property
    def LZeq(self) -> float:  # noqa: N802
        return energy_mean(self.lzeq)

    @property
    def spread_db(self) -> float:
        return max(self.laeq) - min(self.laeq)

    @property
    def std_db(self) -> float:
        n = len(self.laeq)
        if n < 2:
            return 0.0
        m = sum(self.laeq) / n
        return math.sqrt(sum((v - m) ** 2 for v in self.laeq) / (n - 1))

    def summary(self) -> dict[str, Any]:
        return {"start_ms": self.start_ms, "end_ms": self.end_ms, "host_start": self.host_start,
                "host_end": self.host_end, "intervals": len(self.laeq), "LAeq": round(self.LAeq, 2),
                "LCeq": round(self.LCeq, 2), "LZeq": round(self.LZeq, 2), "spread_db": round(self.spread_db, 2),
                "std_db": round(self.std_db, 3), "overload": self.overload, "underrange": self.underrange}


Progress = Callable[[str, int, int, "float | None"], None]
"""progress(phase, done, total, level): phase "settle", "wait_change", "window", "step" (a level step ended the
window: it is measured again once the level settles) or "skip" (reference values given: a window whose level does
not step as the values do was left out); level the last interval's (or the skipped window's) LAeq."""


def _now_iso() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


class IntervalReader:
    """The device's ``interval`` records from now on, in order, with no record lost and no restart in between.

    Records already queued on the link are discarded; the first interval after that began before the reader did and
    is skipped by ``measure``. Waits at most ``interval_s`` · 2 + ``slack_s`` wall seconds for each record (the
    device runs at real time, a virtual board faster).
    """

    def __init__(self, link: DeviceLink, interval_s: float, slack_s: float = 5.0):
        self.link = link
        self.interval_s = interval_s
        self.slack_s = slack_s
        self.queue: list[dict[str, Any]] = []
        self.last_end: int | None = None
        link.read_records()

    def skip_current(self) -> None:
        """Discard what is queued; the next interval returned is the first to start after now (it is read and
        dropped, since the one in progress began earlier)."""
        self.queue = [r for r in self.queue + self.link.read_records() if r.get("t") == "hello"]
        self.last_end = None  # what was discarded breaks the chain; from here on it must be whole again
        self.next()

    def next(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.interval_s * 2 + self.slack_s
        while True:
            while self.queue:
                rec = self.queue.pop(0)
                t = rec.get("t")
                if t == "hello":
                    raise CalibrationError("the device restarted during the measurement; nothing was changed")
                if t != "interval":
                    continue
                if any(not isinstance(rec.get(k), (int, float)) for k in ("LAeq", "LCeq", "LZeq")):
                    raise CalibrationRefused("no_tone", "the device reported no level (digital silence): is the "
                                                        "microphone connected?")
                start, end = rec.get("start_ms"), rec.get("end_ms")
                if self.last_end is not None and start != self.last_end:
                    raise CalibrationError("interval records were lost during the measurement (%s ms to %s ms); "
                                           "nothing was changed" % (self.last_end, start))
                self.last_end = end
                return rec
            left = deadline - time.monotonic()
            if left <= 0:
                raise CalibrationError("no interval record from the device for %.0f s (link %s); nothing was changed"
                                       % (self.interval_s * 2 + self.slack_s, self.link.state))
            self.queue.extend(self.link.read_records(timeout=min(left, 0.5)))


def _settle(reader: IntervalReader, spread_db: float, max_settle: int, recent: list[float],
            note: Progress) -> list[float]:
    """Read intervals until the last ``SETTLE_INTERVALS`` lie within ``spread_db`` (those levels), at most
    ``max_settle`` of them (then [], unsettled). ``recent``: levels already read that count."""
    for k in range(max_settle):
        rec = reader.next()
        recent = (recent + [float(rec["LAeq"])])[-SETTLE_INTERVALS:]
        note("settle", k + 1, max_settle, rec["LAeq"])
        if len(recent) == SETTLE_INTERVALS and max(recent) - min(recent) <= spread_db:
            return recent
    return []


def measure(reader: IntervalReader, intervals: int, *, settle_spread_db: float | None = TONE_SPREAD_DB,
            max_settle: int = 15, change_from: float | None = None, change_db: float = LEVEL_CHANGE_DB,
            max_change_wait: int = 180, step_db: float | None = None, progress: Progress | None = None) -> Window:
    """Measure one window of ``intervals`` intervals: skip the interval in progress; with ``change_from``, wait for a
    level at least ``change_db`` away from it (CalibrationRefused ``no_level_change`` after ``max_change_wait``);
    with ``settle_spread_db``, wait until ``SETTLE_INTERVALS`` intervals in a row lie within it (at most
    ``max_settle`` intervals, then measure anyway); then take the next ``intervals`` intervals.

    With ``step_db``, an interval of the window more than ``step_db`` from the level so far (the mean of the settled
    intervals and the window's) is a level step: the window is dropped (progress phase "step") and measured again
    once the new level has settled, from that interval on; after ``MAX_STEP_RESTARTS`` the window is kept whatever
    it holds (the caller's steadiness check judges it)."""
    def note(phase: str, done: int, total: int, level: float | None) -> None:
        if progress is not None:
            progress(phase, done, total, level)

    reader.skip_current()
    if change_from is not None:
        waited = 0
        while True:
            rec = reader.next()
            waited += 1
            note("wait_change", waited, max_change_wait, rec["LAeq"])
            if abs(rec["LAeq"] - change_from) >= change_db:
                break
            if waited >= max_change_wait:
                raise CalibrationRefused("no_level_change", "the level did not change by %g dB from %.1f dB(A) "
                                         "within %d intervals: set the next level" % (change_db, change_from, waited))
    first: list[float] = []  # the interval that ended a window at a step starts the settling again
    restarts = 0
    while True:
        settled = _settle(reader, settle_spread_db, max_settle, first, note) if settle_spread_db is not None else []
        w = Window(start_ms=0, end_ms=0, laeq=[], lceq=[], lzeq=[])
        step: float | None = None
        for k in range(intervals):
            rec = reader.next()
            level = float(rec["LAeq"])
            base = settled + w.laeq
            if step_db is not None and restarts < MAX_STEP_RESTARTS and base and \
                    abs(level - sum(base) / len(base)) > step_db:
                step = level
                break
            if k == 0:
                w.start_ms = rec["start_ms"]
                w.host_start = _now_iso()
            w.end_ms = rec["end_ms"]
            w.laeq.append(level)
            w.lceq.append(float(rec["LCeq"]))
            w.lzeq.append(float(rec["LZeq"]))
            w.overload = w.overload or bool(rec.get("overload"))
            w.underrange = w.underrange or bool(rec.get("underrange"))
            note("window", k + 1, intervals, rec["LAeq"])
        if step is None:
            w.host_end = _now_iso()
            return w
        restarts += 1
        note("step", restarts, MAX_STEP_RESTARTS, step)
        first = [step]


# ----------------------------------------------------------------------------------------------- results

@dataclass
class CalibrationResult:
    """What a run found and did. ``applied``: the device took the record (and, except for a check, the offset)."""

    method: str
    time: str
    offset_db: float  # in force after the run
    previous_offset_db: float
    readings: list[float]
    reference: dict[str, Any]
    residuals: list[float] = field(default_factory=list)
    slope: float | None = None
    intercept: float | None = None
    linear: bool | None = None
    uncertainty_db: float | None = None  # expanded, k = 2
    budget: dict[str, float] = field(default_factory=dict)  # standard uncertainties, dB
    drift_db: float | None = None
    change_since_check_db: float | None = None
    flagged: bool = False
    invalid_since: str | None = None  # check: data since this time are invalid (GB 3096)
    baseline: dict[str, Any] | None = None  # check: the calibration in force it is compared with
    windows: list[dict[str, Any]] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    n: int | None = None  # the record's number on the device
    applied: bool = False

    @property
    def change_db(self) -> float:
        return round(self.offset_db - self.previous_offset_db, 2)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["change_db"] = self.change_db
        return d


def expanded_uncertainty(budget: dict[str, float], k: float = 2.0) -> float:
    """U = k · sqrt(sum of u²) (GUM), rounded up to 0.01 dB."""
    u = math.sqrt(sum(v * v for v in budget.values()))
    return math.ceil(k * u * 100 - 1e-9) / 100


def _budget(method: str, windows: Sequence[Window], fit_scatter: float | None = None) -> dict[str, float]:
    b = dict(BUDGETS[method])
    n = len(windows)
    rep = math.sqrt(sum(w.std_db ** 2 / len(w.laeq) for w in windows)) / n
    b["repeatability (window spread)"] = round(rep * (math.sqrt(2) if method == "check" else 1.0), 4)
    if fit_scatter is not None:
        b["fit: scatter of (reference - reading) between levels"] = round(fit_scatter, 4)
    b["display resolution 0.01 dB"] = round(RESOLUTION_U, 4)
    return b


# ----------------------------------------------------------------------------------------------- input checks

def parse_level(text: Any, what: str = "level") -> float:
    """A level in dB from text or a number; ValueError (one line) when it is not a finite number."""
    if isinstance(text, bool):
        raise ValueError(f"{what} must be a number, not {text!r}")
    if isinstance(text, (int, float)):
        v = float(text)
    else:
        s = str(text).strip()
        try:
            v = float(s)
        except ValueError:
            raise ValueError(f"{what} must be a number in dB, not {s!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{what} must be a finite number, not {text!r}")
    return v


def parse_reference_values(text: str | Sequence[Any]) -> list[float]:
    """``"70.1,75.2,80.0"`` (or a list) -> [70.1, 75.2, 80.0]; ValueError naming the first that is not a number."""
    items = [s for s in text.split(",")] if isinstance(text, str) else list(text)
    if not items or (len(items) == 1 and not str(items[0]).strip()):
        raise ValueError("--reference-values: give the reference meter's LAeq for each window, e.g. 70.1,75.2,80.0")
    if len(items) > MAX_LEVELS:
        raise ValueError(f"--reference-values: at most {MAX_LEVELS} levels, got {len(items)}")
    return [parse_level(s, f"reference value {i + 1}") for i, s in enumerate(items)]


def range_floor(hello: dict[str, Any]) -> tuple[float, float]:
    """(lowest usable reference level, the microphone's self-noise) for this device: max(35 dB(A), self-noise +
    10 dB), the self-noise from the board profile the device names (``DEFAULT_SELF_NOISE_DBA`` if unknown here)."""
    noise = DEFAULT_SELF_NOISE_DBA
    try:
        from slm.boards import load_board

        noise = float(load_board(str(hello.get("board"))).microphone.self_noise_dba)
    except Exception:  # a board this host has no profile for
        pass
    return max(MIN_REFERENCE_DB, noise + SELF_NOISE_MARGIN_DB), noise


def check_reference_value(value: Any, floor: float, self_noise: float, index: int = 0) -> float:
    """A reference LAeq, parsed and checked against the meter's range; ValueError (one line) otherwise."""
    v = parse_level(value, f"reference value {index + 1}")
    if v < floor:
        raise ValueError(f"reference value {index + 1} ({v:g} dB(A)) is below the meter's range: at least "
                         f"{floor:g} dB(A) (35 dB(A), and 10 dB above the microphone's self-noise of {self_noise:g} "
                         f"dB(A), which lifts the reading below that)")
    if v > 130:
        raise ValueError(f"reference value {index + 1} ({v:g} dB(A)) is above the microphone's range")
    return v


def _check_texts(operator: str | None, note: str | None, instrument: str | None) -> None:
    for name, value, limit in (("--operator", operator, 60), ("--note", note, 200), ("--instrument", instrument, 60)):
        if value is not None and len(value) > limit:
            raise ValueError(f"{name} is {len(value)} characters; at most {limit}")
    probe = {"method": "reference", "offset_db": -10.55, "reference": {"instrument": instrument, "values":
             [100.55] * MAX_LEVELS}, "readings": [100.55] * MAX_LEVELS, "residuals": [-0.155] * MAX_LEVELS,
             "uncertainty_db": 0.55, "slope": 1.0005, "drift_db": -0.55, "window_s": 10.5,
             "time": "2026-01-01T00:00:00+08:00", "operator": operator, "note": note}
    size = len(json.dumps(probe, separators=(",", ":"), ensure_ascii=False).encode())
    if size > RECORD_LIMIT_BYTES:
        raise ValueError(f"--operator, --note and --instrument together are too long for the device's record "
                         f"({size} bytes with the figures, at most {RECORD_LIMIT_BYTES}): shorten the note")


def _intervals_for(window_s: float, interval_s: float) -> int:
    n = int(round(window_s / interval_s))
    if window_s <= 0 or n < 3:
        raise ValueError(f"--window {window_s:g} s is less than 3 of the device's {interval_s:g} s intervals")
    if window_s > 600:
        raise ValueError(f"--window {window_s:g} s: at most 600 s")
    return n


def _device_state(link: DeviceLink) -> tuple[dict[str, Any], float, float]:
    """(hello fields, calibration_db, interval_s) from ``info``."""
    hello = link.info(timeout=5.0)
    config = hello.get("config") or {}
    offset = config.get("calibration_db", (hello.get("cal") or {}).get("offset_db"))
    interval_s = config.get("interval_s", 1.0)
    if not isinstance(offset, (int, float)) or not isinstance(interval_s, (int, float)):
        raise CalibrationError("the device did not report its calibration_db and interval_s (old firmware?)")
    return hello, float(offset), float(interval_s)


# ----------------------------------------------------------------------------------------------- the calibrator

def _tone_checks(w: Window, level_db: float, what: str = "calibrator") -> None:
    """Refuse a window that is not a steady 1 kHz tone near ``level_db``."""
    if w.overload:
        raise CalibrationRefused("overload", f"the microphone overloaded during the window: a {level_db:g} dB "
                                 "calibrator is beyond this microphone's range")
    la = w.LAeq
    if la < level_db - NO_TONE_DB:
        raise CalibrationRefused("no_tone", f"no {what} tone: the meter reads {la:.1f} dB(A), {level_db - la:.0f} dB "
                                 f"below the {what}'s {level_db:g} dB (is it on and seated on the microphone?)")
    if w.spread_db > TONE_SPREAD_DB:
        raise CalibrationRefused("unstable", f"the tone is not steady: the {len(w.laeq)} interval levels spread "
                                 f"{w.spread_db:.2f} dB (at most {TONE_SPREAD_DB:g}): hold the {what} still, "
                                 "check its battery and the seal of the adapter")
    dc, dz = w.LCeq - la, w.LZeq - la
    if abs(dc) > TONE_WEIGHTING_DB or abs(dz) > TONE_WEIGHTING_DB:
        raise CalibrationRefused("not_1khz", f"not a 1 kHz tone: LCeq - LAeq = {dc:+.2f} dB, LZeq - LAeq = "
                                 f"{dz:+.2f} dB (within ±{TONE_WEIGHTING_DB:g} dB at 1 kHz): background noise or "
                                 f"another frequency")


def _calibrator_level(level_db) -> float:
    """The calibrator's certified level as a number in the range calibrators give; ValueError otherwise."""
    level_db = parse_level(level_db, "calibrator level")
    if not 70.0 <= level_db <= 140.0:
        raise ValueError(f"calibrator level {level_db:g} dB: calibrators give 94, 104, 114 or 124 dB")
    return level_db


def calibrate_with_calibrator(link: DeviceLink, level_db: float = 94.0, *, window_s: float = 10.0,
                              instrument: str | None = None, operator: str | None = None, note: str | None = None,
                              progress: Progress | None = None) -> CalibrationResult:
    """Calibrate against an acoustic calibrator of ``level_db`` (its certified level) on the microphone.

    Raises CalibrationRefused (nothing changed) when the tone is missing, unsteady, not 1 kHz, or the offset would
    exceed ±10 dB; ValueError for bad input; CalibrationError when the device cannot be read or written.
    """
    level_db = _calibrator_level(level_db)
    _check_texts(operator, note, instrument)
    hello, offset, interval_s = _device_state(link)
    n = _intervals_for(window_s, interval_s)
    w = measure(IntervalReader(link, interval_s), n, max_settle=max(SETTLE_INTERVALS, int(MAX_SETTLE_S / interval_s)),
                progress=progress)
    _tone_checks(w, level_db)
    reading = w.LAeq
    new_offset = round(offset + level_db - reading, 2)
    if abs(level_db - reading) > PLAUSIBLE_DB or abs(new_offset) > OFFSET_LIMIT_DB:
        raise CalibrationRefused("offset_limit", f"the offset would be {new_offset:+.2f} dB (the meter reads "
                                 f"{reading:.2f} dB, the calibrator is set to {level_db:g} dB, the offset now is "
                                 f"{offset:+.2f} dB): beyond ±{OFFSET_LIMIT_DB:g} dB - check the level given matches "
                                 "the calibrator's setting")
    budget = _budget("calibrator", [w])
    result = CalibrationResult(method="calibrator", time=_now_iso(), offset_db=new_offset, previous_offset_db=offset,
                               readings=[round(reading, 2)], reference={"level_db": level_db},
                               uncertainty_db=expanded_uncertainty(budget), budget=budget, windows=[w.summary()])
    if instrument:
        result.reference["instrument"] = instrument
    _apply(link, result, operator, note, window_s)
    return result


# ----------------------------------------------------------------------------------------------- the reference meter

def steps_like(series: Sequence[Window], values: Sequence[float]) -> bool:
    """The windows' levels step as the first ``len(series)`` reference values do, within ``SERIES_TOLERANCE_DB``
    (each level relative to the first: an offset between the meters cancels)."""
    first = series[0].LAeq
    return all(abs((w.LAeq - first) - (v - values[0])) <= SERIES_TOLERANCE_DB for w, v in zip(series, values))


def fit_line(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares y = slope · x + intercept."""
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((a - mx) ** 2 for a in x)
    slope = sum((a - mx) * (b - my) for a, b in zip(x, y)) / sxx
    return slope, my - slope * mx


def calibrate_with_reference(link: DeviceLink, reference_values: Sequence[Any] | str | None = None, *,
                             ask: Callable[[int, Window], Any] | None = None,
                             ready: Callable[[int], bool] | None = None, windows: int = 3, window_s: float = 10.0,
                             instrument: str | None = None, operator: str | None = None, note: str | None = None,
                             progress: Progress | None = None,
                             on_window: Callable[[int, Window, float], None] | None = None) -> CalibrationResult:
    """Calibrate side by side with a class 1 reference meter at one or more levels.

    reference_values: the reference meter's LAeq for each window, in order (all checked before anything is
    measured); or ``ask(index, window)`` returns it after each window (text or number). ready(index): called before
    each window (a prompt: the user sets the level and starts the reference meter); False ends the series (after at
    least one window). Without ``ready`` each window after the first waits for the level to change by
    ``LEVEL_CHANGE_DB``; with reference values and no ``ready``, the values go to the first run of windows whose
    levels step as the values do (``steps_like``; other windows are skipped, at most ``2 · levels + 1`` windows in
    all, else CalibrationRefused ``levels_mismatch``). A level step during a window (more than ``STEP_DB`` from its
    level) drops it: it is measured again once the new level settles. on_window(index, window, reference) reports
    each window of the series.
    """
    _check_texts(operator, note, instrument)
    hello, offset, interval_s = _device_state(link)
    floor, self_noise = range_floor(hello)
    n_int = _intervals_for(window_s, interval_s)
    values: list[float] | None = None
    if reference_values is not None:
        values = [check_reference_value(v, floor, self_noise, i)
                  for i, v in enumerate(parse_reference_values(reference_values))]
        windows = len(values)
    elif ask is None:
        raise ValueError("give the reference values or a way to ask for them")
    if not 1 <= windows <= MAX_LEVELS:
        raise ValueError(f"1 to {MAX_LEVELS} levels, not {windows}")
    # Reference values without prompts: the values are matched to the first run of windows whose levels step as
    # the values do (a series started in the middle of the levels, or a level set wrong, is left out and waited on).
    aligned = values is not None and ready is None and len(values) >= 2
    max_windows = 2 * windows + 1 if aligned else windows
    reader = IntervalReader(link, interval_s)
    measured: list[Window] = []
    refs: list[float] = []
    last: Window | None = None
    taken = 0
    while len(measured) < windows:
        i = len(measured)
        if ready is not None and not ready(i):
            if not measured:
                raise ValueError("no level was measured")
            break
        if taken >= max_windows:
            assert values is not None
            raise CalibrationRefused("levels_mismatch", f"the levels did not step as the reference values do "
                                     f"({', '.join('%g' % v for v in values)} dB(A)) in {taken} windows: set the "
                                     "levels in the order of the values, each steady for a window")
        change_from = last.LAeq if last is not None and ready is None else None
        w = measure(reader, n_int, settle_spread_db=1.0, max_settle=SETTLE_INTERVALS + 2, change_from=change_from,
                    max_change_wait=int(LEVEL_CHANGE_TIMEOUT_S / interval_s), step_db=STEP_DB, progress=progress)
        taken += 1
        last, n = w, taken  # n: the window's number for the messages
        if w.overload:
            raise CalibrationRefused("overload", f"the microphone overloaded in window {n}: lower the level")
        if w.underrange:
            raise CalibrationRefused("underrange", f"window {n} was under the meter's range: raise the level")
        if w.spread_db > REFERENCE_SPREAD_DB:
            raise CalibrationRefused("unsteady", f"the level was not steady in window {n}: its interval levels "
                                     f"spread {w.spread_db:.1f} dB (at most {REFERENCE_SPREAD_DB:g}); use a steady "
                                     "source (pink noise) and keep the level fixed during the window")
        if aligned:
            assert values is not None
            measured.append(w)
            while not steps_like(measured, values):
                skipped = measured.pop(0)
                if progress is not None:
                    progress("skip", taken, max_windows, skipped.LAeq)
            continue
        if values is not None:
            ref = values[i]
        else:
            assert ask is not None
            ref = check_reference_value(ask(i, w), floor, self_noise, i)
        measured.append(w)
        refs.append(ref)
        if on_window is not None:
            on_window(i, w, ref)
    if aligned:
        assert values is not None
        refs = list(values)
        for i, w in enumerate(measured):
            if on_window is not None:
                on_window(i, w, refs[i])

    readings = [w.LAeq for w in measured]
    diffs = [r - m for r, m in zip(refs, readings)]
    change = sum(diffs) / len(diffs)
    residuals = [round(d - change, 3) for d in diffs] if len(diffs) >= 2 else []  # one level: nothing left over
    slope = intercept = None
    if len(refs) >= 2 and max(refs) - min(refs) >= SLOPE_MIN_SPAN_DB:
        slope, intercept = fit_line(refs, readings)
    linear: bool | None = None
    if len(refs) >= 2:
        linear = max(abs(e) for e in residuals) <= RESIDUAL_LIMIT_DB and (
            slope is None or abs(slope - 1) <= SLOPE_TOLERANCE)
    if linear is False:
        raise CalibrationRefused("nonlinear", "the meter is not linear against the reference: slope "
                                 f"{slope if slope is not None else float('nan'):.3f} (1 ± {SLOPE_TOLERANCE:g}), "
                                 f"residuals {', '.join('%+.2f' % e for e in residuals)} dB (at most "
                                 f"±{RESIDUAL_LIMIT_DB:g}): check for background noise, self-noise at the low end "
                                 "and the meters' positions")
    new_offset = round(offset + change, 2)
    if abs(new_offset) > OFFSET_LIMIT_DB or abs(change) > PLAUSIBLE_DB:
        raise CalibrationRefused("offset_limit", f"the offset would be {new_offset:+.2f} dB (the reference reads "
                                 f"{change:+.2f} dB from the meter): beyond ±{OFFSET_LIMIT_DB:g} dB - check the "
                                 "values and the meters' positions")
    scatter = None
    if len(diffs) >= 2:
        scatter = math.sqrt(sum(e * e for e in residuals) / (len(diffs) - 1)) / math.sqrt(len(diffs))
    budget = _budget("reference", measured, scatter)
    result = CalibrationResult(method="reference", time=_now_iso(), offset_db=new_offset, previous_offset_db=offset,
                               readings=[round(r, 2) for r in readings],
                               reference={"values": [round(r, 2) for r in refs]},
                               residuals=[round(e, 2) for e in residuals],
                               slope=None if slope is None else round(slope, 4),
                               intercept=None if intercept is None else round(intercept, 2), linear=linear,
                               uncertainty_db=expanded_uncertainty(budget), budget=budget,
                               windows=[w.summary() for w in measured])
    if instrument:
        result.reference["instrument"] = instrument
    _apply(link, result, operator, note, window_s)
    return result


# ----------------------------------------------------------------------------------------------- checks

def check_with_calibrator(link: DeviceLink, level_db: float = 94.0, *, window_s: float = 10.0,
                          instrument: str | None = None, operator: str | None = None, note: str | None = None,
                          progress: Progress | None = None) -> CalibrationResult:
    """Measure the calibrator without changing the offset and report the drift since the calibration in force;
    ``flagged`` over 0.5 dB (GB 3096). The check is recorded in the device's history."""
    level_db = _calibrator_level(level_db)
    _check_texts(operator, note, instrument)
    hello, offset, interval_s = _device_state(link)
    history = read_history(link, hello)
    n = _intervals_for(window_s, interval_s)
    w = measure(IntervalReader(link, interval_s), n, max_settle=max(SETTLE_INTERVALS, int(MAX_SETTLE_S / interval_s)),
                progress=progress)
    _tone_checks(w, level_db)
    reading = w.LAeq
    if abs(reading - level_db) > PLAUSIBLE_DB:
        raise CalibrationRefused("implausible_level", f"the meter reads {reading:.2f} dB, {reading - level_db:+.1f} dB "
                                 f"from the calibrator's {level_db:g} dB: check the level given matches the "
                                 "calibrator's setting")
    baseline = next((r for r in reversed(history) if r.get("in_force")), None)
    base_offset = baseline.get("offset_db") if baseline else None
    if not isinstance(base_offset, (int, float)):
        base_offset = offset
    drift = round(reading - level_db - (offset - base_offset), 2)
    since = [r for r in history if r.get("method") == "check" and baseline is not None
             and r.get("n", 0) > baseline.get("n", 0) and isinstance(r.get("drift_db"), (int, float))]
    change_since_check = round(drift - since[-1]["drift_db"], 2) if since else None
    flagged = abs(drift) > DRIFT_LIMIT_DB or (change_since_check is not None
                                             and abs(change_since_check) > DRIFT_LIMIT_DB)
    invalid_since = None
    if flagged:
        good = [r for r in since if abs(r["drift_db"]) <= DRIFT_LIMIT_DB]
        invalid_since = good[-1].get("time") if good else (baseline.get("time") if baseline else None)
    budget = _budget("check", [w])
    result = CalibrationResult(method="check", time=_now_iso(), offset_db=offset, previous_offset_db=offset,
                               readings=[round(reading, 2)], reference={"level_db": level_db},
                               uncertainty_db=expanded_uncertainty(budget), budget=budget, drift_db=drift,
                               change_since_check_db=change_since_check, flagged=flagged,
                               invalid_since=invalid_since, windows=[w.summary()],
                               baseline=None if baseline is None else {k: baseline.get(k) for k in
                                                                       ("n", "method", "time", "offset_db")})
    if instrument:
        result.reference["instrument"] = instrument
    _apply(link, result, operator, note, window_s)
    return result


# ----------------------------------------------------------------------------------------------- the device's history

def _apply(link: DeviceLink, result: CalibrationResult, operator: str | None, note: str | None,
           window_s: float) -> None:
    """Send the record (``calibrate``); the device appends it and, except for a check, sets the offset."""
    rec: dict[str, Any] = {"method": result.method, "reference": result.reference, "readings": result.readings,
                           "residuals": result.residuals, "uncertainty_db": result.uncertainty_db,
                           "time": result.time, "operator": operator, "note": note, "window_s": window_s}
    if result.method != "check":
        rec["offset_db"] = result.offset_db
    if result.slope is not None:
        rec["slope"] = result.slope
    if result.drift_db is not None:
        rec["drift_db"] = result.drift_db
    result.record = rec
    try:
        ack = link.send("calibrate", record=rec, timeout=10.0)
    except DeviceError as e:
        if e.code == "unknown_cmd":
            raise CalibrationError("the device's firmware has no calibrate command: deploy current firmware; "
                                   "nothing was changed") from None
        raise CalibrationError(f"the device refused the record ({e.code}: {e.message}); nothing was changed") \
            from None
    except LinkError as e:
        raise CalibrationError(f"{e} - the device may or may not have taken the calibration: see "
                               "`slm calibrate --history`") from None
    got = ack.get("result") or {}
    result.n = got.get("n")
    result.applied = True
    if result.method != "check" and got.get("offset_db") is not None:
        result.offset_db = float(got["offset_db"])


def _reply(ack: dict[str, Any]) -> dict[str, Any]:
    result = ack.get("result")
    if not isinstance(result, dict):
        raise CalibrationError("the device's reply to cal_history has no result")
    return result


def read_history(link: DeviceLink, hello: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The device's calibration history, oldest first; each record gets ``in_force`` (host side): true for the
    calibration whose method and time config.json names (the one behind the offset now applied)."""
    if hello is None:
        hello = link.info(timeout=5.0)
    try:
        first = _reply(link.send("cal_history", index=0, timeout=5.0))
    except DeviceError as e:
        if e.code == "unknown_cmd":
            raise CalibrationError("the device's firmware has no calibration history: deploy current firmware") \
                from None
        raise CalibrationError(f"the device could not read its calibration history ({e.code}: {e.message})") \
            from None
    count = first.get("count") or 0
    records = [first["record"]] if count else []
    for i in range(1, count):
        records.append(_reply(link.send("cal_history", index=i, timeout=5.0))["record"])
    config = hello.get("config") or {}
    method, when = config.get("calibration_method"), config.get("calibration_time")
    in_force = None
    if method is not None:
        for r in records:
            if r.get("method") == method and r.get("time") == when and r.get("offset_db") == config.get(
                    "calibration_db"):
                in_force = r
    for r in records:
        r["in_force"] = r is in_force
    return records
