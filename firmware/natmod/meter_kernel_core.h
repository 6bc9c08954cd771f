/* meter_kernel_core.h: the meter's integer kernel in C, a statement-by-statement port of filter_block, log100 and
 * process_blocks of firmware/meter_kernel.py (the viper kernel stays the reference and the fallback).
 *
 * Every viper machine word is an int32_t here, as on the ESP32; the design keeps every value inside int32
 * (host/weighting_design.py, host/int_model.py), so this computes what the viper kernel computes, word for word
 * (tests/test_fast_kernel.py). Left shifts go through uint32_t and there is no division instruction or library
 * call, so the code is free of undefined behaviour and links without libgcc on every architecture (the windowed
 * xtensa build cannot call lx106's call0 libgcc).
 *
 * Included by meter_fast.c (the native module) and by bench/esp32/harness.c (the emulator benchmark).
 */
#ifndef METER_KERNEL_CORE_H
#define METER_KERNEL_CORE_H

#include <stdint.h>

#include "log_table.h"

/* Layout of acc, cfg, st, sums: the same constants as firmware/meter_kernel.py (checked through LAYOUT). */
enum {
    MK_S_A = 0, MK_EF = 12, MK_FMAX = 24, MK_LEQ_A = 48, MK_PEAK_C = 69, MK_PEAK_Z = 70, MK_OVERLOADS = 71,
    MK_UNDERRANGES = 72, MK_BLOCKS_RUN = 73, MK_HIST_PHASE = 74, MK_HIST_COUNT = 75, MK_FMIN_VALID = 76,
    MK_BLOCK_COUNT = 78, MK_HIST = 80, MK_ACC_SIZE = 80
};
enum {
    MK_C_SHIFT = 0, MK_C_OVERLOAD = 1, MK_C_EQ_ON = 2, MK_C_BQ = 3, MK_C_DC = 4, MK_C_H4 = 14, MK_C_EQ = 19,
    MK_C_BLOCK = 24, MK_C_ALPHA_F = 25, MK_C_SETTLE_F = 29, MK_C_HIST_EVERY = 31, MK_C_HIST_BASE = 32,
    MK_C_HIST_BINS = 33, MK_C_UNDER = 34, MK_C_JUMP = 35, MK_C_EQ2 = 36, MK_CFG_SIZE = 41
};
enum { MK_ST_EQ = 14, MK_ST_EQ2 = 19, MK_ST_SIZE = 23, MK_SUMS_SIZE = 20 };

#define MK_SHL(v, n) ((int32_t)((uint32_t)(v) << (n)))

/* n // d for 0 <= n, 0 < d (shift and subtract; runs once per histogram sample, not per audio sample) */
static uint32_t mk_udiv(uint32_t n, uint32_t d)
{
    uint32_t q = 0, r = 0;
    int b;
    for (b = 31; b >= 0; b--) {
        r = (r << 1) | ((n >> b) & 1u);
        if (r >= d) {
            r -= d;
            q |= 1u << b;
        }
    }
    return q;
}

#define MK_UNLIKELY(x) __builtin_expect(!!(x), 0)
/* (w & (2**S - 1)) << 12 for 0 < S <= 20, as two shifts */
#define MK_LOW_SHL12(w, S) ((int32_t)(((uint32_t)(w) << (32 - (S))) >> (20 - (S))))

/* One high-pass section on the sample v, state (h, l) at s[0], s[1], coefficient K, S = Q - 12:
 * e = v - u; u += K·e / 2**Q with u = h + l / 2**Q exactly (see meter_kernel.py); v becomes e. The state stays in
 * memory: the ESP32's windowed registers cannot hold the whole filter, and spills cost more than these loads. */
#define MK_HIGHPASS(v, s, K, S) do { \
        int32_t t_, w_; \
        (v) = (v) - (s)[0]; \
        t_ = ((v) & 0xFFF) * (K) + (s)[1]; \
        w_ = ((v) >> 12) * (K) + (t_ >> 12); \
        (s)[0] += w_ >> (S); \
        (s)[1] = MK_LOW_SHL12(w_, S) | (t_ & 0xFFF); \
    } while (0)

/* A biquad, direct form I with split products, on v: state x1 x2 y1 y2 at s[0..3], b0 b1 b2 a1 a2 at q[0..4],
 * results in Q(BQ) rounded to nearest. */
#define MK_BIQUAD(v, s, q, BQ) do { \
        int32_t w_, t_; \
        w_ = ((v) >> 12) * (q)[0] + ((s)[0] >> 12) * (q)[1] + ((s)[1] >> 12) * (q)[2] - ((s)[2] >> 12) * (q)[3] \
             - ((s)[3] >> 12) * (q)[4]; \
        t_ = ((v) & 0xFFF) * (q)[0] + ((s)[0] & 0xFFF) * (q)[1] + ((s)[1] & 0xFFF) * (q)[2] \
             - ((s)[2] & 0xFFF) * (q)[3] - ((s)[3] & 0xFFF) * (q)[4]; \
        (s)[1] = (s)[0]; \
        (s)[0] = (v); \
        (v) = ((MK_LOW_SHL12(w_, (BQ) - 12) + t_ + MK_SHL(1, (BQ) - 1)) >> (BQ)) + (w_ >> ((BQ) - 12)); \
        (s)[3] = (s)[2]; \
        (s)[2] = (v); \
    } while (0)

/* squares of v split (v >> 12, v & 0xFFF) added to the block sums b[0..2] */
#define MK_SQUARES(v, b) do { \
        int32_t h_ = (v) >> 12, l_ = (v) & 0xFFF; \
        (b)[0] += h_ * h_; \
        (b)[1] += h_ * l_; \
        (b)[2] += l_ * l_; \
    } while (0)

/* The per-sample loop over p[0..n), for shifts given as constants (a specialised copy: immediate shifts) or as
 * variables (the general copy). */
#define MK_LOOP(SHIFT, BQ, SD, SC1, SC2, SA2, SA3) do { \
        const int32_t *p_ = p, *end_ = p + n; \
        while (p_ < end_) { \
            int32_t v, t, z, cv; \
            v = ((*p_++ >> (SHIFT)) & (MK_SHL(1, 32 - (SHIFT)) - 1)); \
            v = (v ^ MK_SHL(1, 31 - (SHIFT))) - MK_SHL(1, 31 - (SHIFT)); \
            t = v - s[18]; \
            s[18] = v; \
            if (MK_UNLIKELY((uint32_t)(v + ovl) >= (uint32_t)(2 * ovl))) /* v >= ovl or v < -ovl */ \
                b[11] += 1; \
            if (MK_UNLIKELY((uint32_t)(t + jmp) > (uint32_t)(2 * jmp))) /* t > jmp or t < -jmp */ \
                b[11] += 1; \
            if (eq_on) { /* microphone equalisation: one or two biquads, before the DC blocker */ \
                MK_BIQUAD(v, s + MK_ST_EQ, c + MK_C_EQ, BQ); \
                if (eq_on > 1) \
                    MK_BIQUAD(v, s + MK_ST_EQ2, c + MK_C_EQ2, BQ); \
            } \
            MK_HIGHPASS(v, s, c[4], SD); /* DC blocker */ \
            z = v; \
            MK_HIGHPASS(v, s + 2, c[6], SC1); /* C: two f1 high-passes and H4 */ \
            MK_HIGHPASS(v, s + 4, c[8], SC2); \
            MK_BIQUAD(v, s + 10, c + MK_C_H4, BQ); \
            cv = v; \
            MK_HIGHPASS(v, s + 6, c[10], SA2); /* A: f2 and f3 high-passes on C */ \
            MK_HIGHPASS(v, s + 8, c[12], SA3); \
            MK_SQUARES(v, b); \
            MK_SQUARES(cv, b + 3); \
            MK_SQUARES(z, b + 6); \
            cv = cv < 0 ? 0 - cv : cv; \
            if (MK_UNLIKELY(cv > b[9])) \
                b[9] = cv; \
            z = z < 0 ? 0 - z : z; \
            if (MK_UNLIKELY(z > b[10])) \
                b[10] = z; \
        } \
    } while (0)

/* meter_kernel.filter_block: weight n samples of pw from index i; the filter state in s, block sums in b. */
__attribute__((noinline)) void mk_filter_block(const int32_t *pw, int32_t i, int32_t n, int32_t *s,
                                               const int32_t *c, int32_t *b)
{
    const int32_t ovl = c[MK_C_OVERLOAD], jmp = c[MK_C_JUMP], eq_on = c[MK_C_EQ_ON];
    const int32_t *p = pw + i;
    if (c[MK_C_SHIFT] == 10 && c[MK_C_BQ] == 14 && c[5] == 29 && c[7] == 24 && c[9] == 24 && c[11] == 22
        && c[13] == 19) {
        MK_LOOP(10, 14, 17, 12, 12, 10, 7); /* 48 and 44.1 kHz, 24-bit words */
    } else {
        const int32_t shift = c[MK_C_SHIFT], bq = c[MK_C_BQ];
        MK_LOOP(shift, bq, c[5] - 12, c[7] - 12, c[9] - 12, c[11] - 12, c[13] - 12);
    }
}

/* 1000·lg(E) in 0.01 dB for the 6-limb value at a[off]; 0 when E < 256 (meter_kernel.log100). */
int32_t mk_log100(const int32_t *a, int32_t off)
{
    int32_t t = 5, top, bl, v2, msb, m;
    while (t >= 0 && a[off + t] == 0)
        t -= 1;
    if (t < 0)
        return 0;
    top = a[off + t];
    bl = 0;
    while ((top >> bl) != 0)
        bl += 1;
    v2 = MK_SHL(top, 15);
    if (t > 0)
        v2 = v2 | a[off + t - 1];
    msb = 15 * t + bl - 1;
    if (msb < 8)
        return 0;
    m = v2 >> (bl + 6);
    return (int32_t)mk_udiv((uint32_t)(msb * 30103), 100) + MK_LOG_TABLE[m - 256];
}

/* meter_kernel.process_blocks: nblocks blocks of words (from its start) through the filters and the block-rate
 * statistics. */
__attribute__((noinline)) void mk_process_blocks(const int32_t *words, int32_t nblocks, int32_t *st,
                                                 const int32_t *c, int32_t *b, int32_t *a)
{
    const int32_t block = c[MK_C_BLOCK];
    int32_t pos = 0;
    while (nblocks > 0) {
        int32_t k, ch, w, run, ph;
        nblocks -= 1;
        for (k = 0; k < 9; k++)
            b[k] = 0;
        b[9] = a[MK_PEAK_C];
        b[10] = a[MK_PEAK_Z];
        b[11] = a[MK_OVERLOADS];
        mk_filter_block(words, pos, block, st, c, b);
        pos += block;
        a[MK_PEAK_C] = b[9];
        a[MK_PEAK_Z] = b[10];
        a[MK_OVERLOADS] = b[11];
        /* block sums hh·2**24 + hl·2**13 + ll -> 4 limbs of 15 bits (A, C, Z), added to the interval sums */
        for (ch = 0; ch < 3; ch++) {
            int32_t hh = b[3 * ch], hl = b[3 * ch + 1], ll = b[3 * ch + 2];
            int32_t o = 4 * ch, v, dst, carry;
            v = (ll & 0x7FFF) + MK_SHL(hl & 3, 13);
            a[o] = v & 0x7FFF;
            v = (v >> 15) + (ll >> 15) + ((hl >> 2) & 0x7FFF) + MK_SHL(hh & 0x3F, 9);
            a[o + 1] = v & 0x7FFF;
            v = (v >> 15) + (hl >> 17) + (hh >> 6);
            a[o + 2] = v & 0x7FFF;
            a[o + 3] = v >> 15;
            dst = MK_LEQ_A + 7 * ch;
            carry = 0;
            for (k = 0; k < 7; k++) {
                v = a[dst + k] + carry;
                if (k < 4)
                    v += a[o + k];
                a[dst + k] = v & 0x7FFF;
                carry = v >> 15;
            }
        }
        /* F and S time weighting of LA²: E += floor(A·(S·2**30 - E) / 2**QA), 6 limbs */
        for (w = 0; w < 2; w++) {
            int32_t eo = MK_EF + 6 * w, am = c[MK_C_ALPHA_F + 2 * w], bs = c[MK_C_ALPHA_F + 2 * w + 1] - 15;
            int32_t rs = 15 - bs, v, d[8]; /* d: S·2**30 - E, then P = A·d (limbs; d[7] the signed rest) */
            v = 0 - a[eo];
            d[0] = v & 0x7FFF;
            v = (v >> 15) - a[eo + 1];
            d[1] = v & 0x7FFF;
            for (k = 2; k < 5; k++) {
                v = (v >> 15) - a[eo + k] + a[MK_S_A + k - 2];
                d[k] = v & 0x7FFF;
            }
            d[5] = (v >> 15) - a[eo + 5] + a[MK_S_A + 3];
            v = d[0] * am;
            for (k = 1; k < 6; k++) {
                v = (v >> 15) + d[k] * am;
                d[k] = v & 0x7FFF;
            }
            v = v >> 15;
            d[6] = v & 0x7FFF;
            d[7] = v >> 15;
            v = 0;
            for (k = 0; k < 5; k++) {
                v = (v >> 15) + a[eo + k] + ((d[1 + k] >> bs) | (MK_SHL(d[2 + k], rs) & 0x7FFF));
                a[eo + k] = v & 0x7FFF;
            }
            a[eo + 5] = (v >> 15) + a[eo + 5] + (d[6] >> bs) + MK_SHL(d[7], rs);
        }
        run = a[MK_BLOCKS_RUN];
        if (run <= 0x3FFFFFFF) {
            run += 1;
            a[MK_BLOCKS_RUN] = run;
        }
        a[MK_BLOCK_COUNT] += 1;
        /* interval max / min of F and S (min only once the weighting has settled) */
        for (w = 0; w < 4; w++) {
            int32_t src = MK_EF + 6 * (w >> 1), dst = MK_FMAX + 6 * w, take = 0;
            k = 5;
            while (k > 0 && a[src + k] == a[dst + k])
                k -= 1;
            if ((w & 1) == 0) {
                if (a[src + k] > a[dst + k])
                    take = 1;
            } else if (run >= c[MK_C_SETTLE_F + (w >> 1)]) {
                int32_t valid = MK_FMIN_VALID + (w >> 1);
                if (a[valid] == 0 || a[src + k] < a[dst + k]) {
                    take = 1;
                    a[valid] = 1;
                }
            }
            if (take)
                for (k = 0; k < 6; k++)
                    a[dst + k] = a[src + k];
        }
        /* LAF into the percentile histogram every HIST_EVERY blocks, once F has settled */
        ph = a[MK_HIST_PHASE] - 1;
        if (ph <= 0) {
            ph = c[MK_C_HIST_EVERY];
            if (run >= c[MK_C_SETTLE_F]) {
                int32_t lg = mk_log100(a, MK_EF), bn = 0;
                if (lg < c[MK_C_UNDER])
                    a[MK_UNDERRANGES] += 1;
                if (lg >= c[MK_C_HIST_BASE])
                    bn = (int32_t)mk_udiv((uint32_t)(lg - c[MK_C_HIST_BASE]), 10);
                if (bn >= c[MK_C_HIST_BINS])
                    bn = c[MK_C_HIST_BINS] - 1;
                a[MK_HIST + bn] += 1;
                a[MK_HIST_COUNT] += 1;
            }
        }
        a[MK_HIST_PHASE] = ph;
    }
}

#endif
