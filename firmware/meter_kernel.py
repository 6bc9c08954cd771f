"""Integer DSP kernel of the meter: I2S words in, A/C/Z weighting, squares, F/S time weighting, interval stats.

Everything here is viper code over preallocated ``array('i')`` buffers and allocates nothing. Every value that
lives in a machine word stays inside signed 32 bits for any input (host/weighting_design.py proves the node ranges,
host/int_model.py asserts them), so the same code gives the same numbers on a 32-bit ESP32 and the 64-bit unix port.

Per sample (the formats are explained in docs/measurement.md):
  x  = the microphone sample in the top of the 32-bit word, word >> input_shift (22 bits for a 24-bit part, 2 bits
       of headroom; fewer when the word lost its top bits); overload at its extremes or at a wrapped step;
  z  = DC blocker(EQ(x)), EQ = none, one or two microphone equalisation biquads      Z weighting
  c  = H4(HP_f1(HP_f1(z)))                                             C weighting
  a  = HP_f3(HP_f2(c))                                                 A weighting
A high-pass section is ``e = x - u; u += K·e / 2**Q`` with u kept as integer and fraction words; a biquad is
direct form I with coefficients in Q``BIQUAD_Q``. Products are split (v = vh·2**12 + vl) so that every product of a
coefficient (< 2**16) and a signal value fits in 31 bits.

Per block (~1 ms): sums of squares become 15-bit limbs; F and S exponential averages (block-rate, α = A/2**QA)
of LA² are kept in 6 limbs with 30 fraction bits; interval Leq sums (7 limbs), max/min of F and S, peaks of
C and Z, overload count, and every ``HIST_SAMPLE_BLOCKS`` blocks a 0.1 dB histogram entry of LAF.

Timing: see docs/performance.md (bench/bench_kernel.py). Memory: the arrays are allocated by meter.Meter.
"""

import micropython
from micropython import const

from weighting_coeffs import LOG_TABLE

# Layout of the limb/scalar register array ``acc`` (array('i')).
S_A = const(0)  # block sum of squares, 4 limbs, per channel A, C, Z
S_C = const(4)
S_Z = const(8)
EF = const(12)  # F and S time-weighted LA² (6 limbs, 2 of them fraction)
ES = const(18)
FMAX = const(24)  # interval max / min of EF and ES (6 limbs each)
FMIN = const(30)
SMAX = const(36)
SMIN = const(42)
LEQ_A = const(48)  # interval sums of block sums of squares (7 limbs each)
LEQ_C = const(55)
LEQ_Z = const(62)
PEAK_C = const(69)  # interval max |c| and |z|
PEAK_Z = const(70)
OVERLOADS = const(71)  # samples at or beyond the overload threshold in the interval
UNDERRANGES = const(72)  # histogram samples below the under-range threshold in the interval
BLOCKS_RUN = const(73)  # blocks since reset (saturates at 2**30)
HIST_PHASE = const(74)  # blocks until the next histogram sample
HIST_COUNT = const(75)  # histogram samples in the interval
FMIN_VALID = const(76)
SMIN_VALID = const(77)
BLOCK_COUNT = const(78)  # blocks in the interval
HIST = const(80)  # the interval's LAF histogram follows the registers: acc[HIST + bin]
ACC_SIZE = const(80)  # registers; the array is ACC_SIZE + histogram bins long
E_LIMBS = const(6)
SUM_LIMBS = const(7)

# Layout of the configuration array ``cfg`` (array('i')).
C_SHIFT = const(0)  # right shift that turns the I2S word into the 22-bit sample
C_OVERLOAD = const(1)  # |x| >= this (22-bit units) is an overload
C_EQ_ON = const(2)  # equalisation sections: 0, 1 or 2
C_BQ = const(3)  # BIQUAD_Q
C_DC = const(4)  # K, Q of DC blocker, C f1 x2, A f2, A f3 (10 words)
C_H4 = const(14)  # b0 b1 b2 a1 a2
C_EQ = const(19)  # b0 b1 b2 a1 a2 of the microphone equalisation
C_BLOCK = const(24)  # samples per block
C_ALPHA_F = const(25)  # A, QA
C_ALPHA_S = const(27)
C_SETTLE_F = const(29)  # blocks before F min / histogram are tracked
C_SETTLE_S = const(30)
C_HIST_EVERY = const(31)
C_HIST_BASE = const(32)  # 1000·lg(E) of the lowest histogram bin edge (0.01 dB units)
C_HIST_BINS = const(33)
C_UNDER = const(34)  # 1000·lg(E) under-range threshold
C_JUMP = const(35)  # a step |x[n] - x[n-1]| above this is a wrapped sample (a word that lost its top bits): overload
C_EQ2 = const(36)  # b0 b1 b2 a1 a2 of the second equalisation section (after the first)
CFG_SIZE = const(41)

# Layout of the filter state array ``st`` (array('i')).
ST_DC = const(0)  # DC blocker integer and fraction word
ST_EQ = const(14)  # equaliser x1 x2 y1 y2
ST_EQ2 = const(19)  # second equaliser section x1 x2 y1 y2
ST_SIZE = const(23)  # DC, C1, C2, A2, A3: (integer, fraction) each; H4 x1 x2 y1 y2; EQ x1 x2 y1 y2; previous x; EQ2
SUMS_SIZE = const(20)  # block sums (9), peaks (2), overloads (1), scratch limbs (8)



@micropython.viper
def filter_block(v: int, w: int, words, i: int, n: int, st, cfg, sums):
    """Weight n samples of ``words`` from index ``i``; add squares to sums[0..8] (hh, hl, ll for A, C, Z) and
    raise sums[9] (peak |c|), sums[10] (peak |z|), sums[11] (overload count). Pass v = w = 0.

    Viper keeps only the first two locals of a function in machine registers (on xtensawin, rv32imc and x64
    alike; parameters count), every other local lives in the stack frame. So the two hottest values are the
    first two parameters: ``v``, the sample flowing down the chain, and ``w``, a scratch word. Expressions are
    written as left-leaning chains (``(a op b) op c``) whose right operands are locals or constants, which viper
    compiles to about three instructions per operation; a nested right operand costs a spill and a reload."""
    pw = ptr32(words)
    s = ptr32(st)
    c = ptr32(cfg)
    b = ptr32(sums)
    s16 = ptr16(st)  # signed loads through 16-bit halves: ptr32 loads zero-extend on 64-bit ports
    c16 = ptr16(cfg)
    b16 = ptr16(sums)
    end = i + n
    # non-negative configuration words load directly; shifts and masks are computed once here
    shift = c[C_SHIFT]
    # the sample is the word's top 32 - shift bits, signed by the word's own sign bit (bit 31): the same value
    # whether the port loads the word sign- (ESP32) or zero-extended (64-bit unix port)
    xmask = (1 << (32 - shift)) - 1
    xsign = 1 << (31 - shift)
    ovl = c[C_OVERLOAD]
    novl = 0 - ovl
    jmp = c[C_JUMP]
    njmp = 0 - jmp
    eq_on = c[C_EQ_ON]
    bq = c[C_BQ]
    bq12 = bq - 12
    bqm = (1 << bq12) - 1
    bqh = 1 << (bq - 1)  # biquads round to nearest: a floor would leave a DC offset that an EQ's poles near 1 amplify
    dK = c[C_DC]
    dS = c[C_DC + 1] - 12
    dM = (1 << dS) - 1
    c1K = c[C_DC + 2]
    c1S = c[C_DC + 3] - 12
    c1M = (1 << c1S) - 1
    c2K = c[C_DC + 4]
    c2S = c[C_DC + 5] - 12
    c2M = (1 << c2S) - 1
    a2K = c[C_DC + 6]
    a2S = c[C_DC + 7] - 12
    a2M = (1 << a2S) - 1
    a3K = c[C_DC + 8]
    a3S = c[C_DC + 9] - 12
    a3M = (1 << a3S) - 1
    hb0 = (c16[28] | (((c16[29] ^ 0x8000) - 0x8000) << 16))
    hb1 = (c16[30] | (((c16[31] ^ 0x8000) - 0x8000) << 16))
    hb2 = (c16[32] | (((c16[33] ^ 0x8000) - 0x8000) << 16))
    ha1 = (c16[34] | (((c16[35] ^ 0x8000) - 0x8000) << 16))
    ha2 = (c16[36] | (((c16[37] ^ 0x8000) - 0x8000) << 16))
    eb0 = (c16[38] | (((c16[39] ^ 0x8000) - 0x8000) << 16))
    eb1 = (c16[40] | (((c16[41] ^ 0x8000) - 0x8000) << 16))
    eb2 = (c16[42] | (((c16[43] ^ 0x8000) - 0x8000) << 16))
    ea1 = (c16[44] | (((c16[45] ^ 0x8000) - 0x8000) << 16))
    ea2 = (c16[46] | (((c16[47] ^ 0x8000) - 0x8000) << 16))
    fb0 = (c16[72] | (((c16[73] ^ 0x8000) - 0x8000) << 16))  # the second section (C_EQ2)
    fb1 = (c16[74] | (((c16[75] ^ 0x8000) - 0x8000) << 16))
    fb2 = (c16[76] | (((c16[77] ^ 0x8000) - 0x8000) << 16))
    fa1 = (c16[78] | (((c16[79] ^ 0x8000) - 0x8000) << 16))
    fa2 = (c16[80] | (((c16[81] ^ 0x8000) - 0x8000) << 16))
    # state: high-pass integer words are signed, fraction words are not
    dh = (s16[0] | (((s16[1] ^ 0x8000) - 0x8000) << 16))
    dl = s[1]
    c1h = (s16[4] | (((s16[5] ^ 0x8000) - 0x8000) << 16))
    c1l = s[3]
    c2h = (s16[8] | (((s16[9] ^ 0x8000) - 0x8000) << 16))
    c2l = s[5]
    a2h = (s16[12] | (((s16[13] ^ 0x8000) - 0x8000) << 16))
    a2l = s[7]
    a3h = (s16[16] | (((s16[17] ^ 0x8000) - 0x8000) << 16))
    a3l = s[9]
    hx1 = (s16[20] | (((s16[21] ^ 0x8000) - 0x8000) << 16))
    hx2 = (s16[22] | (((s16[23] ^ 0x8000) - 0x8000) << 16))
    hy1 = (s16[24] | (((s16[25] ^ 0x8000) - 0x8000) << 16))
    hy2 = (s16[26] | (((s16[27] ^ 0x8000) - 0x8000) << 16))
    ex1 = (s16[28] | (((s16[29] ^ 0x8000) - 0x8000) << 16))
    ex2 = (s16[30] | (((s16[31] ^ 0x8000) - 0x8000) << 16))
    ey1 = (s16[32] | (((s16[33] ^ 0x8000) - 0x8000) << 16))
    ey2 = (s16[34] | (((s16[35] ^ 0x8000) - 0x8000) << 16))
    xp = (s16[36] | (((s16[37] ^ 0x8000) - 0x8000) << 16))
    fx1 = (s16[38] | (((s16[39] ^ 0x8000) - 0x8000) << 16))
    fx2 = (s16[40] | (((s16[41] ^ 0x8000) - 0x8000) << 16))
    fy1 = (s16[42] | (((s16[43] ^ 0x8000) - 0x8000) << 16))
    fy2 = (s16[44] | (((s16[45] ^ 0x8000) - 0x8000) << 16))
    # block sums: hh and ll are sums of squares (non-negative), hl is signed
    ahh = b[0]
    ahl = (b16[2] | (((b16[3] ^ 0x8000) - 0x8000) << 16))
    all_ = b[2]
    chh = b[3]
    chl = (b16[8] | (((b16[9] ^ 0x8000) - 0x8000) << 16))
    cll = b[5]
    zhh = b[6]
    zhl = (b16[14] | (((b16[15] ^ 0x8000) - 0x8000) << 16))
    zll = b[8]
    pc = b[9]
    pz = b[10]
    nov = b[11]
    t = 0
    z = 0
    cv = 0
    while i < end:
        v = (((pw[i] >> shift) & xmask) ^ xsign) - xsign
        i += 1
        if v >= ovl:
            nov += 1
        elif v < novl:
            nov += 1
        t = v - xp
        xp = v
        if t > jmp:
            nov += 1
        elif t < njmp:
            nov += 1
        if eq_on:  # microphone equalisation biquad, before the DC blocker so that the blocker also removes the
            # DC its rounding and its poles near z = 1 would add (direct form I, split products as in H4 below)
            w = (v >> 12) * eb0 + (ex1 >> 12) * eb1 + (ex2 >> 12) * eb2 - (ey1 >> 12) * ea1 - (ey2 >> 12) * ea2
            t = (v & 0xFFF) * eb0 + (ex1 & 0xFFF) * eb1 + (ex2 & 0xFFF) * eb2 - (ey1 & 0xFFF) * ea1 - (ey2 & 0xFFF) * ea2
            ex2 = ex1
            ex1 = v
            v = ((((w & bqm) << 12) + t + bqh) >> bq) + (w >> bq12)
            ey2 = ey1
            ey1 = v
            if eq_on > 1:  # the second section
                w = (v >> 12) * fb0 + (fx1 >> 12) * fb1 + (fx2 >> 12) * fb2 - (fy1 >> 12) * fa1 - (fy2 >> 12) * fa2
                t = (v & 0xFFF) * fb0 + (fx1 & 0xFFF) * fb1 + (fx2 & 0xFFF) * fb2 - (fy1 & 0xFFF) * fa1 - \
                    (fy2 & 0xFFF) * fa2
                fx2 = fx1
                fx1 = v
                v = ((((w & bqm) << 12) + t + bqh) >> bq) + (w >> bq12)
                fy2 = fy1
                fy1 = v
        # High-pass sections, e = x - u; u += K·e / 2**Q with u = h + l / 2**Q (0 <= l < 2**Q), exactly:
        # t = K·(e & 0xFFF) + l;  w = K·(e >> 12) + (t >> 12), so that u·2**Q + K·e = h·2**Q + w·2**12 + (t & 0xFFF)
        # and w >> (Q - 12) carries into h. The stage's output e stays in v.
        v = v - dh  # DC blocker
        t = (v & 0xFFF) * dK + dl
        w = (v >> 12) * dK + (t >> 12)
        dh = (w >> dS) + dh
        dl = ((w & dM) << 12) | (t & 0xFFF)
        z = v
        v = v - c1h  # C: two f1 high-passes
        t = (v & 0xFFF) * c1K + c1l
        w = (v >> 12) * c1K + (t >> 12)
        c1h = (w >> c1S) + c1h
        c1l = ((w & c1M) << 12) | (t & 0xFFF)
        v = v - c2h
        t = (v & 0xFFF) * c2K + c2l
        w = (v >> 12) * c2K + (t >> 12)
        c2h = (w >> c2S) + c2h
        c2l = ((w & c2M) << 12) | (t & 0xFFF)
        # C: H4 biquad; w and t are the high and low partial sums (v = (v >> 12)·2**12 + (v & 0xFFF))
        w = (v >> 12) * hb0 + (hx1 >> 12) * hb1 + (hx2 >> 12) * hb2 - (hy1 >> 12) * ha1 - (hy2 >> 12) * ha2
        t = (v & 0xFFF) * hb0 + (hx1 & 0xFFF) * hb1 + (hx2 & 0xFFF) * hb2 - (hy1 & 0xFFF) * ha1 - (hy2 & 0xFFF) * ha2
        hx2 = hx1
        hx1 = v
        v = ((((w & bqm) << 12) + t + bqh) >> bq) + (w >> bq12)
        hy2 = hy1
        hy1 = v
        cv = v
        v = v - a2h  # A: f2 and f3 high-passes on C
        t = (v & 0xFFF) * a2K + a2l
        w = (v >> 12) * a2K + (t >> 12)
        a2h = (w >> a2S) + a2h
        a2l = ((w & a2M) << 12) | (t & 0xFFF)
        v = v - a3h
        t = (v & 0xFFF) * a3K + a3l
        w = (v >> 12) * a3K + (t >> 12)
        a3h = (w >> a3S) + a3h
        a3l = ((w & a3M) << 12) | (t & 0xFFF)
        # squares, split (v >> 12, v & 0xFFF) so that each product and block sum fits in 31 bits
        w = v & 0xFFF
        v = v >> 12
        ahh = v * v + ahh
        ahl = v * w + ahl
        all_ = w * w + all_
        v = cv
        w = v & 0xFFF
        v = v >> 12
        chh = v * v + chh
        chl = v * w + chl
        cll = w * w + cll
        v = cv
        if v < 0:
            v = 0 - v
        if v > pc:
            pc = v
        v = z
        w = v & 0xFFF
        v = v >> 12
        zhh = v * v + zhh
        zhl = v * w + zhl
        zll = w * w + zll
        v = z
        if v < 0:
            v = 0 - v
        if v > pz:
            pz = v
    s[0] = dh
    s[1] = dl
    s[2] = c1h
    s[3] = c1l
    s[4] = c2h
    s[5] = c2l
    s[6] = a2h
    s[7] = a2l
    s[8] = a3h
    s[9] = a3l
    s[10] = hx1
    s[11] = hx2
    s[12] = hy1
    s[13] = hy2
    s[14] = ex1
    s[15] = ex2
    s[16] = ey1
    s[17] = ey2
    s[18] = xp
    s[19] = fx1
    s[20] = fx2
    s[21] = fy1
    s[22] = fy2
    b[0] = ahh
    b[1] = ahl
    b[2] = all_
    b[3] = chh
    b[4] = chl
    b[5] = cll
    b[6] = zhh
    b[7] = zhl
    b[8] = zll
    b[9] = pc
    b[10] = pz
    b[11] = nov


@micropython.viper
def sample_sum(words, i: int, n: int, shift: int) -> int:
    """Sum of n samples of ``words`` from index i (as filter_block reads them); for Meter.seed_filters. Call it
    per block: a block's sum fits in 32 bits."""
    pw = ptr32(words)
    xmask = (1 << (32 - shift)) - 1
    xsign = 1 << (31 - shift)
    total = 0
    n += i
    while i < n:
        total += (((pw[i] >> shift) & xmask) ^ xsign) - xsign
        i += 1
    return total


@micropython.viper
def log100(acc, off: int) -> int:
    """1000·lg(E) in 0.01 dB for the 6-limb value at acc[off] (E counted in units of the lowest limb);
    0 when E < 256."""
    a = ptr32(acc)
    lt = ptr16(LOG_TABLE)
    t = 5
    while t >= 0 and a[off + t] == 0:
        t -= 1
    if t < 0:
        return 0
    top = a[off + t]
    bl = 0
    while (top >> bl) != 0:
        bl += 1
    v2 = top << 15
    if t > 0:
        v2 = v2 | a[off + t - 1]
    msb = 15 * t + bl - 1
    if msb < 8:
        return 0
    m = v2 >> (bl + 6)
    return (msb * 30103) // 100 + lt[m - 256]


@micropython.viper
def process_blocks(words, nblocks: int, st, cfg, sums, acc):
    """Run ``nblocks`` blocks of ``words`` (from its start) through the filters and the block-rate statistics."""
    a = ptr32(acc)
    c = ptr32(cfg)
    b = ptr32(sums)
    b16 = ptr16(sums)  # signed loads (see filter_block)
    block = c[C_BLOCK]
    pos = 0
    while nblocks > 0:
        nblocks -= 1
        b[0] = 0
        b[1] = 0
        b[2] = 0
        b[3] = 0
        b[4] = 0
        b[5] = 0
        b[6] = 0
        b[7] = 0
        b[8] = 0
        b[9] = a[PEAK_C]
        b[10] = a[PEAK_Z]
        b[11] = a[OVERLOADS]
        filter_block(0, 0, words, pos, block, st, cfg, sums)
        pos += block
        a[PEAK_C] = b[9]
        a[PEAK_Z] = b[10]
        a[OVERLOADS] = b[11]
        # block sums hh·2**24 + hl·2**13 + ll -> 4 limbs of 15 bits (A, C, Z), added to the interval sums (7 limbs);
        # the limb loops are written out: constant offsets and no per-limb branches
        ch = 0
        while ch < 3:
            q = 3 * ch
            o = 4 * ch
            hh = b[q]
            hl = (b16[2 * q + 2] | (((b16[2 * q + 3] ^ 0x8000) - 0x8000) << 16))
            ll = b[q + 2]
            v = (ll & 0x7FFF) + ((hl & 3) << 13)
            l0 = v & 0x7FFF
            v = (v >> 15) + (ll >> 15) + ((hl >> 2) & 0x7FFF) + ((hh & 0x3F) << 9)
            l1 = v & 0x7FFF
            v = (v >> 15) + (hl >> 17) + (hh >> 6)
            l2 = v & 0x7FFF
            l3 = v >> 15
            a[o] = l0
            a[o + 1] = l1
            a[o + 2] = l2
            a[o + 3] = l3
            o = LEQ_A + 7 * ch
            v = a[o] + l0
            a[o] = v & 0x7FFF
            v = (v >> 15) + a[o + 1] + l1
            a[o + 1] = v & 0x7FFF
            v = (v >> 15) + a[o + 2] + l2
            a[o + 2] = v & 0x7FFF
            v = (v >> 15) + a[o + 3] + l3
            a[o + 3] = v & 0x7FFF
            v = (v >> 15) + a[o + 4]
            a[o + 4] = v & 0x7FFF
            v = (v >> 15) + a[o + 5]
            a[o + 5] = v & 0x7FFF
            a[o + 6] = ((v >> 15) + a[o + 6]) & 0x7FFF
            ch += 1
        # F and S time weighting of LA²: E += floor(A·(S·2**30 - E) / 2**QA); E has 6 limbs, 2 of them fraction.
        w = 0
        while w < 2:
            eo = EF + 6 * w
            am = c[C_ALPHA_F + 2 * w]
            bs = c[C_ALPHA_F + 2 * w + 1] - 15  # QA = 15 + bs, 0 <= bs < 15
            rs = 15 - bs
            # d = S·2**30 - E in limbs d0..d5, the top one signed
            v = 0 - a[eo]
            d0 = v & 0x7FFF
            v = (v >> 15) - a[eo + 1]
            d1 = v & 0x7FFF
            v = (v >> 15) - a[eo + 2] + a[S_A]
            d2 = v & 0x7FFF
            v = (v >> 15) - a[eo + 3] + a[S_A + 1]
            d3 = v & 0x7FFF
            v = (v >> 15) - a[eo + 4] + a[S_A + 2]
            d4 = v & 0x7FFF
            d5 = (v >> 15) - a[eo + 5] + a[S_A + 3]
            # P = A·d: limbs p1..p6 of 15 bits (limb 0 only carries) and the signed rest p7
            v = d0 * am
            v = (v >> 15) + d1 * am
            p1 = v & 0x7FFF
            v = (v >> 15) + d2 * am
            p2 = v & 0x7FFF
            v = (v >> 15) + d3 * am
            p3 = v & 0x7FFF
            v = (v >> 15) + d4 * am
            p4 = v & 0x7FFF
            v = (v >> 15) + d5 * am
            p5 = v & 0x7FFF
            v = v >> 15
            p6 = v & 0x7FFF
            p7 = v >> 15
            # E += P >> QA (arithmetic): result limb k takes P limbs k+1 and k+2
            v = a[eo] + ((p1 >> bs) | ((p2 << rs) & 0x7FFF))
            a[eo] = v & 0x7FFF
            v = (v >> 15) + a[eo + 1] + ((p2 >> bs) | ((p3 << rs) & 0x7FFF))
            a[eo + 1] = v & 0x7FFF
            v = (v >> 15) + a[eo + 2] + ((p3 >> bs) | ((p4 << rs) & 0x7FFF))
            a[eo + 2] = v & 0x7FFF
            v = (v >> 15) + a[eo + 3] + ((p4 >> bs) | ((p5 << rs) & 0x7FFF))
            a[eo + 3] = v & 0x7FFF
            v = (v >> 15) + a[eo + 4] + ((p5 >> bs) | ((p6 << rs) & 0x7FFF))
            a[eo + 4] = v & 0x7FFF
            a[eo + 5] = (v >> 15) + a[eo + 5] + (p6 >> bs) + (p7 << rs)
            w += 1
        run = a[BLOCKS_RUN]
        if run <= 0x3FFFFFFF:  # saturate; constants must be small ints on 32-bit ports
            run += 1
            a[BLOCKS_RUN] = run
        a[BLOCK_COUNT] += 1
        # interval max / min of F and S (min only once the weighting has settled)
        w = 0
        while w < 4:
            src = EF + 6 * (w >> 1)
            dst = FMAX + 6 * w
            k = 5
            while k > 0 and a[src + k] == a[dst + k]:
                k -= 1
            take = 0
            if (w & 1) == 0:
                if a[src + k] > a[dst + k]:
                    take = 1
            elif run >= c[C_SETTLE_F + (w >> 1)]:
                valid = FMIN_VALID + (w >> 1)
                if a[valid] == 0 or a[src + k] < a[dst + k]:
                    take = 1
                    a[valid] = 1
            if take:
                k = 0
                while k < 6:
                    a[dst + k] = a[src + k]
                    k += 1
            w += 1
        # LAF into the percentile histogram every HIST_EVERY blocks, once F has settled
        ph = a[HIST_PHASE] - 1
        if ph <= 0:
            ph = c[C_HIST_EVERY]
            if run >= c[C_SETTLE_F]:
                lg = int(log100(acc, EF))
                if lg < c[C_UNDER]:
                    a[UNDERRANGES] += 1
                bn = 0
                if lg >= c[C_HIST_BASE]:
                    bn = (lg - c[C_HIST_BASE]) // 10
                if bn >= c[C_HIST_BINS]:
                    bn = c[C_HIST_BINS] - 1
                a[HIST + bn] += 1
                a[HIST_COUNT] += 1
        a[HIST_PHASE] = ph


@micropython.viper
def add_histogram(total, acc, n: int):
    """total[i] += acc[HIST + i] and clear it, for i < n: folds the interval's histogram into a running one."""
    t = ptr32(total)
    h = ptr32(acc)
    i = 0
    while i < n:
        t[i] += h[HIST + i]
        h[HIST + i] = 0
        i += 1
