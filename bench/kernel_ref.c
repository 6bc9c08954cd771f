/* kernel_ref.c: the meter's C kernel (firmware/natmod/meter_kernel_core.h) compiled for this machine, for
 * bench/bench_kernel.py.
 *
 * The core is the natmod's statement-by-statement port of filter_block() and process_blocks() (with log100) from
 * firmware/meter_kernel.py; every viper machine word is an int32_t, as on the ESP32. The benchmark checks that this
 * program's final state equals the firmware's on the unix port, word for word. The configuration array, the log
 * table and the seeded filter state to start from (Meter.seed_filters) are read from files written by the
 * MicroPython side; the log table must equal the one compiled in.
 *
 * Build: gcc -O2 -fwrapv -I firmware/natmod -o kernel_ref kernel_ref.c
 * Run:   kernel_ref WORDS.bin CFG.bin LOG.bin ST0.bin CHUNK_BLOCKS REPEATS DUMP_OUT.bin
 * Prints "ns_per_sample <median>" and the per-repeat times; DUMP_OUT gets st, sums, acc after one pass from rest.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "meter_kernel_core.h"

static void *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    void *buf;
    long n;
    if (!f) {
        perror(path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc(n > 0 ? (size_t)n : 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(2);
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static void reset(int32_t *st, const int32_t *st0, int32_t *sums, int32_t *acc, size_t acc_n, const int32_t *cfg)
{
    memcpy(st, st0, MK_ST_SIZE * sizeof(int32_t));
    memset(sums, 0, MK_SUMS_SIZE * sizeof(int32_t));
    memset(acc, 0, acc_n * sizeof(int32_t));
    acc[MK_HIST_PHASE] = cfg[MK_C_HIST_EVERY]; /* meter.Meter.reset(): HIST_SAMPLE_BLOCKS */
}

static void run_signal(const int32_t *words, size_t nwords, int32_t chunk_blocks, int32_t *st, const int32_t *cfg,
                       int32_t *sums, int32_t *acc)
{
    size_t chunk = (size_t)chunk_blocks * (size_t)cfg[MK_C_BLOCK];
    size_t off;
    for (off = 0; off + chunk <= nwords; off += chunk)
        mk_process_blocks(words + off, chunk_blocks, st, cfg, sums, acc);
}

int main(int argc, char **argv)
{
    size_t nbytes, cfg_bytes, log_bytes, st0_bytes, nwords, chunk, nsamples, acc_n;
    int32_t *words, *cfg, *logt, *st0, st[MK_ST_SIZE], sums[MK_SUMS_SIZE], *acc;
    int chunk_blocks, repeats, r;
    double *times;
    FILE *out;
    if (argc != 8) {
        fprintf(stderr, "usage: %s WORDS.bin CFG.bin LOG.bin ST0.bin CHUNK_BLOCKS REPEATS DUMP_OUT.bin\n", argv[0]);
        return 2;
    }
    words = read_file(argv[1], &nbytes);
    cfg = read_file(argv[2], &cfg_bytes);
    logt = read_file(argv[3], &log_bytes);
    st0 = read_file(argv[4], &st0_bytes);
    if (cfg_bytes != MK_CFG_SIZE * 4 || log_bytes != 256 * 4 || st0_bytes != MK_ST_SIZE * 4) {
        fprintf(stderr, "bad cfg (%zu bytes), log table (%zu bytes) or start state (%zu bytes)\n", cfg_bytes,
                log_bytes, st0_bytes);
        return 2;
    }
    for (r = 0; r < 256; r++) {
        if (logt[r] != MK_LOG_TABLE[r]) {
            fprintf(stderr, "the log table differs from log_table.h at %d: rebuild it (gen_log_table.py)\n", r);
            return 2;
        }
    }
    chunk_blocks = atoi(argv[5]);
    repeats = atoi(argv[6]);
    nwords = nbytes / 4;
    chunk = (size_t)chunk_blocks * (size_t)cfg[MK_C_BLOCK];
    nsamples = nwords / chunk * chunk;
    acc_n = MK_ACC_SIZE + (size_t)cfg[MK_C_HIST_BINS];
    acc = calloc(acc_n, sizeof(int32_t));
    times = calloc((size_t)repeats, sizeof(double));

    /* one pass from rest: the state the firmware must match */
    reset(st, st0, sums, acc, acc_n, cfg);
    run_signal(words, nwords, chunk_blocks, st, cfg, sums, acc);
    out = fopen(argv[7], "wb");
    if (!out || fwrite(st, 4, MK_ST_SIZE, out) != MK_ST_SIZE || fwrite(sums, 4, MK_SUMS_SIZE, out) != MK_SUMS_SIZE ||
        fwrite(acc, 4, acc_n, out) != acc_n || fclose(out) != 0) {
        perror(argv[7]);
        return 2;
    }

    /* timing: whole passes over the signal, state carried on (steady state) */
    for (r = 0; r < repeats; r++) {
        double t0 = now_ns();
        run_signal(words, nwords, chunk_blocks, st, cfg, sums, acc);
        times[r] = (now_ns() - t0) / (double)nsamples;
    }
    printf("checksum %ld\n", (long)acc[MK_LEQ_A] + acc[MK_EF] + st[0]);
    printf("times_ns_per_sample");
    for (r = 0; r < repeats; r++)
        printf(" %.4f", times[r]);
    printf("\n");
    qsort(times, (size_t)repeats, sizeof(double), cmp_double);
    printf("ns_per_sample %.4f\n", times[repeats / 2]);
    printf("samples %zu\n", nsamples);
    return 0;
}
