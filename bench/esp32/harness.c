/* A minimal MicroPython runtime stand-in that runs the meter kernel's xtensawin machine code under qemu-xtensa
 * (user mode, -cpu dc233c, windowed ABI), for bench/esp32_bench.py.
 *
 * RUN_VIPER: the viper functions of firmware/meter_kernel.py as mpy-cross -march=xtensawin emits them (blobs.S
 * includes their machine code). Objects as MicroPython lays them out on a 32-bit port: small ints (v << 1) | 1,
 * arrays as {type, buffer} (the stand-in's from_obj returns the buffer), functions as mp_obj_fun_bc_t
 * {type, context, child_table, bytecode}; the module context holds the qstr table (identity here: the .mpy's own
 * indices) and the constant table whose entry 0 is the native function table (mp_fun_table_t order of
 * py/nativeglue.h). Only the entries the kernel calls are filled; any other traps with exit code 200 + index.
 * RUN_NATIVE: mk_process_blocks of firmware/natmod/meter_kernel_core.h, compiled with the native module's flags
 * (also for rv32, the ESP32-C3, under qemu-riscv32).
 *
 * stdin: (count, int32 words) for cfg, st, sums, acc, (count, uint16) for the log table, then (chunks, blocks per
 * chunk) and the I2S words. stdout: the final st, sums and acc.
 */
typedef unsigned int u32;
typedef int i32;

#if defined(__riscv) /* qemu-riscv32 user mode: the ESP32-C3's rv32 code */
#define NR_READ 63
#define NR_WRITE 64
#define NR_EXIT 93
static inline __attribute__((always_inline)) int sc3(int nr, int a, int b, int c)
{
    register int r7 __asm__("a7") = nr;
    register int r0 __asm__("a0") = a;
    register int r1 __asm__("a1") = b;
    register int r2 __asm__("a2") = c;
    __asm__ volatile("ecall" : "+r"(r0) : "r"(r7), "r"(r1), "r"(r2) : "memory");
    return r0;
}
#else /* qemu-xtensa user mode */
#define NR_READ 12
#define NR_WRITE 13
#define NR_EXIT 118
static inline __attribute__((always_inline)) int sc3(int nr, int a, int b, int c)
{
    register int r2 __asm__("a2") = nr;
    register int r6 __asm__("a6") = a;
    register int r3 __asm__("a3") = b;
    register int r4 __asm__("a4") = c;
    __asm__ volatile("syscall" : "+r"(r2) : "r"(r6), "r"(r3), "r"(r4) : "memory");
    return r2;
}
#endif

static void die(int code)
{
    sc3(NR_EXIT, code, 0, 0);
    for (;;) {
    }
}

static void readn(void *p, int n)
{
    char *c = p;
    while (n > 0) {
        int r = sc3(NR_READ, 0, (int)c, n);
        if (r <= 0)
            die(90);
        c += r;
        n -= r;
    }
}

static void writen(const void *p, int n)
{
    if (sc3(NR_WRITE, 1, (int)p, n) != n)
        die(91);
}

static i32 cfg[64], st[64], sums[64], acc[2048];
static unsigned short logt[512];
static i32 words[960 * 64];
static u32 n_cfg, n_st, n_sums, n_acc;

#ifdef RUN_VIPER
extern char code_filter_block[], code_log100[], code_process_blocks[];
struct ctx { u32 type, globals; const unsigned short *qstr_table; const u32 *obj_table; };
struct fun { u32 type; const struct ctx *context; u32 child_table; void *bytecode; };
struct arr { u32 type; void *buf; };
typedef u32 (*viper_t)(void *self, u32 n_args, u32 n_kw, const u32 *args);

static u32 fun_table[64];
static u32 obj_table[1];
static unsigned short qstr_table[256];
static const struct ctx context = {0, 0, qstr_table, obj_table};
static struct fun f_filter = {0x46554e31, &context, 0, code_filter_block};
static struct fun f_log = {0x46554e32, &context, 0, code_log100};
static struct fun f_proc = {0x46554e33, &context, 0, code_process_blocks};
static u32 none_obj = 0x4e4f4e45, false_obj = 0x46414c53, true_obj = 0x54525545;
static struct arr o_cfg = {0x41525259, cfg}, o_st = {0x41525259, st}, o_sums = {0x41525259, sums},
    o_acc = {0x41525259, acc}, o_words = {0x41525259, words}, o_logt = {0x41525259, logt};

static u32 from_obj(u32 obj, u32 type)
{
    if (type == 0)
        return obj;
    if (obj & 1)
        return (u32)((i32)obj >> 1);
    if (type == 1)
        return obj == (u32)&true_obj;
    if (type >= 4 && type <= 7)
        return (u32)((struct arr *)obj)->buf;
    die(92);
    return 0;
}

static u32 to_obj(u32 val, u32 type)
{
    if (type == 0)
        return val;
    if (type == 1)
        return val ? (u32)&true_obj : (u32)&false_obj;
    if (type == 2 || type == 3)
        return (val << 1) | 1;
    die(93);
    return 0;
}

static u32 load_global(u32 q)
{
    if (q == Q_LOG_TABLE)
        return (u32)&o_logt;
    if (q == Q_FILTER_BLOCK)
        return (u32)&f_filter;
    if (q == Q_LOG100)
        return (u32)&f_log;
    die(100);
    return 0;
}

static u32 call_n_kw(u32 fun, u32 n_args_kw, const u32 *args)
{
    struct fun *f = (struct fun *)fun;
    return ((viper_t)f->bytecode)(f, n_args_kw & 0xff, (n_args_kw >> 8) & 0xff, args);
}

static u32 arg_check(u32 n_args, u32 n_kw, u32 sig) { return 0; }
static u32 swap_globals(u32 g) { return 0; }

/* floor division of small ints without a divide instruction or libgcc (mp_small_int_floor_divide) */
static u32 udiv(u32 n, u32 d, u32 *rem)
{
    u32 q = 0, r = 0;
    for (int b = 31; b >= 0; b--) {
        r = (r << 1) | ((n >> b) & 1);
        if (r >= d) {
            r -= d;
            q |= 1u << b;
        }
    }
    *rem = r;
    return q;
}

static i32 floordiv(i32 a, i32 b)
{
    u32 r, ua = a < 0 ? -(u32)a : (u32)a, ub = b < 0 ? -(u32)b : (u32)b;
    i32 q = (i32)udiv(ua, ub, &r);
    if ((a < 0) != (b < 0)) {
        q = -q;
        if (r)
            q -= 1;
    }
    return q;
}

static i32 sfloordiv(i32 a, i32 b) { return floordiv(a, b); }
static i32 smodulo(i32 a, i32 b) { return a - floordiv(a, b) * b; }

static void trap(void)
{
    die(200);
}

static void setup_runtime(void)
{
    u32 i;
    for (i = 0; i < 256; i++)
        qstr_table[i] = (unsigned short)i;
    for (i = 0; i < 64; i++)
        fun_table[i] = (u32)trap;
    fun_table[0] = (u32)&none_obj;
    fun_table[1] = (u32)&false_obj;
    fun_table[2] = (u32)&true_obj;
    fun_table[3] = (u32)from_obj;
    fun_table[4] = (u32)to_obj;
    fun_table[5] = (u32)swap_globals;
    fun_table[7] = (u32)load_global;
    fun_table[27] = (u32)call_n_kw;
    fun_table[44] = (u32)arg_check;
    fun_table[46] = (u32)sfloordiv;
    fun_table[47] = (u32)smodulo;
    obj_table[0] = (u32)fun_table;
}
#endif

#ifdef RUN_NATIVE
void mk_process_blocks(const i32 *words, i32 nblocks, i32 *st, const i32 *c, i32 *b, i32 *a);
#endif

int main(void)
{
    u32 hdr[2], n;
    readn(&n_cfg, 4);
    readn(cfg, 4 * n_cfg);
    readn(&n_st, 4);
    readn(st, 4 * n_st);
    readn(&n_sums, 4);
    readn(sums, 4 * n_sums);
    readn(&n_acc, 4);
    readn(acc, 4 * n_acc);
    readn(&n, 4);
    readn(logt, 2 * n);
    readn(hdr, 8);
    u32 chunk = hdr[1] * (u32)cfg[24];
    if (n_cfg > 64 || n_st > 64 || n_sums > 64 || n_acc > 2048 || n > 512 || chunk > sizeof(words) / 4)
        die(94);
#ifdef RUN_VIPER
    setup_runtime();
#endif
    for (u32 c = 0; c < hdr[0]; c++) {
        readn(words, 4 * chunk);
#ifdef RUN_VIPER
        u32 args[6] = {(u32)&o_words, (hdr[1] << 1) | 1, (u32)&o_st, (u32)&o_cfg, (u32)&o_sums, (u32)&o_acc};
        ((viper_t)code_process_blocks)(&f_proc, 6, 0, args);
#endif
#ifdef RUN_NATIVE
        mk_process_blocks(words, (i32)hdr[1], st, cfg, sums, acc);
#endif
    }
    writen(st, 4 * n_st);
    writen(sums, 4 * n_sums);
    writen(acc, 4 * n_acc);
    return 0;
}
