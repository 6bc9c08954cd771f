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
    MK_C_HIST_BINS = 33, MK_C_UNDER = 34, MK_C_JUMP = 35, MK_CFG_SIZE = 36
};
enum { MK_ST_SIZE = 19, MK_SUMS_SIZE = 20 };

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

/* One high-pass section, e = x - u; u += K e / 2**Q with u = h + l / 2**Q (see meter_kernel.py): returns e. */
#define MK_HIGHPASS(x, h, l, K, S, M) do { \
        int32_t e_ = (x) - (h); \
        int32_t t_ = (e_ & 0xFFF) * (K) + (l); \
        int32_t w_ = (e_ >> 12) * (K) + (t_ >> 12); \
        (h) += w_ >> (S); \
        (l) = MK_SHL(w_ & (M), 12) | (t_ & 0xFFF); \
        (x) = e_; \
    } while (0)

__attribute__((noinline)) void mk_filter_block(const int32_t *pw, int32_t i, int32_t n, int32_t *s,
                                               const int32_t *c, int32_t *b)
{
    const int32_t shift = c[MK_C_SHIFT], ovl = c[MK_C_OVERLOAD], eq_on = c[MK_C_EQ_ON], bq = c[MK_C_BQ];
    const int32_t jmp = c[MK_C_JUMP];
    const int32_t xmask = MK_SHL(1, 32 - shift) - 1, xsign = MK_SHL(1, 31 - shift);
    const int32_t bq12 = bq - 12, bqm = MK_SHL(1, bq - 12) - 1, bqh = MK_SHL(1, bq - 1);
    const int32_t dK = c[4], dS = c[5] - 12, c1K = c[6], c1S = c[7] - 12, c2K = c[8], c2S = c[9] - 12;
    const int32_t a2K = c[10], a2S = c[11] - 12, a3K = c[12], a3S = c[13] - 12;
    const int32_t dM = MK_SHL(1, dS) - 1, c1M = MK_SHL(1, c1S) - 1, c2M = MK_SHL(1, c2S) - 1;
    const int32_t a2M = MK_SHL(1, a2S) - 1, a3M = MK_SHL(1, a3S) - 1;
    const int32_t hb0 = c[14], hb1 = c[15], hb2 = c[16], ha1 = c[17], ha2 = c[18];
    const int32_t eb0 = c[19], eb1 = c[20], eb2 = c[21], ea1 = c[22], ea2 = c[23];
    int32_t dh = s[0], dl = s[1], c1h = s[2], c1l = s[3], c2h = s[4], c2l = s[5];
    int32_t a2h = s[6], a2l = s[7], a3h = s[8], a3l = s[9];
    int32_t hx1 = s[10], hx2 = s[11], hy1 = s[12], hy2 = s[13];
    int32_t ex1 = s[14], ex2 = s[15], ey1 = s[16], ey2 = s[17], xp = s[18];
    int32_t ahh = b[0], ahl = b[1], all_ = b[2], chh = b[3], chl = b[4], cll = b[5];
    int32_t zhh = b[6], zhl = b[7], zll = b[8], pc = b[9], pz = b[10], nov = b[11];
    const int32_t *p = pw + i, *end = pw + i + n;
    while (p < end) {
        int32_t v, t, w, z, cv, h, l;
        v = ((*p++ >> shift) & xmask);
        v = (v ^ xsign) - xsign;
        if (v >= ovl || v < 0 - ovl)
            nov += 1;
        t = v - xp;
        xp = v;
        if (t > jmp || t < 0 - jmp)
            nov += 1;
        if (eq_on) { /* microphone equalisation biquad, before the DC blocker */
            w = (v >> 12) * eb0 + (ex1 >> 12) * eb1 + (ex2 >> 12) * eb2 - (ey1 >> 12) * ea1 - (ey2 >> 12) * ea2;
            t = (v & 0xFFF) * eb0 + (ex1 & 0xFFF) * eb1 + (ex2 & 0xFFF) * eb2 - (ey1 & 0xFFF) * ea1
                - (ey2 & 0xFFF) * ea2;
            ex2 = ex1;
            ex1 = v;
            v = ((MK_SHL(w & bqm, 12) + t + bqh) >> bq) + (w >> bq12);
            ey2 = ey1;
            ey1 = v;
        }
        MK_HIGHPASS(v, dh, dl, dK, dS, dM); /* DC blocker */
        z = v;
        MK_HIGHPASS(v, c1h, c1l, c1K, c1S, c1M); /* C: two f1 high-passes */
        MK_HIGHPASS(v, c2h, c2l, c2K, c2S, c2M);
        /* C: H4 biquad, split products */
        w = (v >> 12) * hb0 + (hx1 >> 12) * hb1 + (hx2 >> 12) * hb2 - (hy1 >> 12) * ha1 - (hy2 >> 12) * ha2;
        t = (v & 0xFFF) * hb0 + (hx1 & 0xFFF) * hb1 + (hx2 & 0xFFF) * hb2 - (hy1 & 0xFFF) * ha1
            - (hy2 & 0xFFF) * ha2;
        hx2 = hx1;
        hx1 = v;
        v = ((MK_SHL(w & bqm, 12) + t + bqh) >> bq) + (w >> bq12);
        hy2 = hy1;
        hy1 = v;
        cv = v;
        MK_HIGHPASS(v, a2h, a2l, a2K, a2S, a2M); /* A: f2 and f3 high-passes on C */
        MK_HIGHPASS(v, a3h, a3l, a3K, a3S, a3M);
        /* squares, split so that each product and block sum fits in 31 bits */
        h = v >> 12;
        l = v & 0xFFF;
        ahh += h * h;
        ahl += h * l;
        all_ += l * l;
        h = cv >> 12;
        l = cv & 0xFFF;
        chh += h * h;
        chl += h * l;
        cll += l * l;
        h = z >> 12;
        l = z & 0xFFF;
        zhh += h * h;
        zhl += h * l;
        zll += l * l;
        if (cv < 0)
            cv = 0 - cv;
        if (cv > pc)
            pc = cv;
        if (z < 0)
            z = 0 - z;
        if (z > pz)
            pz = z;
    }
    s[0] = dh; s[1] = dl; s[2] = c1h; s[3] = c1l; s[4] = c2h; s[5] = c2l; s[6] = a2h; s[7] = a2l;
    s[8] = a3h; s[9] = a3l; s[10] = hx1; s[11] = hx2; s[12] = hy1; s[13] = hy2;
    s[14] = ex1; s[15] = ex2; s[16] = ey1; s[17] = ey2; s[18] = xp;
    b[0] = ahh; b[1] = ahl; b[2] = all_; b[3] = chh; b[4] = chl; b[5] = cll;
    b[6] = zhh; b[7] = zhl; b[8] = zll; b[9] = pc; b[10] = pz; b[11] = nov;
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
