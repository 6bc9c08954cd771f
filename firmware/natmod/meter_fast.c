/* meter_fast: the meter's integer kernel as a MicroPython dynamic native module (natmod), loadable by stock
 * MicroPython firmware from meter_fast.mpy. Same functions, arguments and results as the viper ones in
 * firmware/meter_kernel.py; firmware/meter.py takes them when this module imports and its LAYOUT matches, else it
 * keeps the viper kernel. The work is in meter_kernel_core.h; this file only unpacks the arguments.
 */
#include "py/dynruntime.h"

#include "meter_kernel_core.h"

/* The int32 buffer behind an array('i') argument, at least min_words long. */
static int32_t *words_of(mp_obj_t obj, size_t min_words, mp_uint_t flags)
{
    mp_buffer_info_t info;
    mp_get_buffer_raise(obj, &info, flags);
    if (info.len / 4 < min_words) {
        mp_raise_ValueError(MP_ERROR_TEXT("buffer too small"));
    }
    return (int32_t *)info.buf;
}

/* process_blocks(words, nblocks, st, cfg, sums, acc) */
static mp_obj_t process_blocks(size_t n_args, const mp_obj_t *args)
{
    (void)n_args;
    mp_int_t nblocks = mp_obj_get_int(args[1]);
    const int32_t *cfg = words_of(args[3], MK_CFG_SIZE, MP_BUFFER_READ);
    int32_t *acc = words_of(args[5], MK_ACC_SIZE, MP_BUFFER_RW);
    if (nblocks < 0 || cfg[MK_C_BLOCK] <= 0 || cfg[MK_C_HIST_BINS] <= 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("bad arguments"));
    }
    words_of(args[5], MK_ACC_SIZE + (size_t)cfg[MK_C_HIST_BINS], MP_BUFFER_RW);
    const int32_t *words = words_of(args[0], (size_t)nblocks * (size_t)cfg[MK_C_BLOCK], MP_BUFFER_READ);
    mk_process_blocks(words, (int32_t)nblocks, words_of(args[2], MK_ST_SIZE, MP_BUFFER_RW), cfg,
                      words_of(args[4], MK_SUMS_SIZE, MP_BUFFER_RW), acc);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(process_blocks_obj, 6, 6, process_blocks);

/* filter_block(v, w, words, i, n, st, cfg, sums): v and w are ignored (the viper kernel's register slots) */
static mp_obj_t filter_block(size_t n_args, const mp_obj_t *args)
{
    (void)n_args;
    mp_int_t i = mp_obj_get_int(args[3]), n = mp_obj_get_int(args[4]);
    if (i < 0 || n < 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("bad arguments"));
    }
    const int32_t *words = words_of(args[2], (size_t)i + (size_t)n, MP_BUFFER_READ);
    mk_filter_block(words, (int32_t)i, (int32_t)n, words_of(args[5], MK_ST_SIZE, MP_BUFFER_RW),
                    words_of(args[6], MK_CFG_SIZE, MP_BUFFER_READ), words_of(args[7], MK_SUMS_SIZE, MP_BUFFER_RW));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(filter_block_obj, 8, 8, filter_block);

/* log100(acc, off) */
static mp_obj_t log100(mp_obj_t acc_in, mp_obj_t off_in)
{
    mp_int_t off = mp_obj_get_int(off_in);
    if (off < 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("bad arguments"));
    }
    return mp_obj_new_int(mk_log100(words_of(acc_in, (size_t)off + 6, MP_BUFFER_READ), (int32_t)off));
}
static MP_DEFINE_CONST_FUN_OBJ_2(log100_obj, log100);

mp_obj_t mpy_init(mp_obj_fun_bc_t *self, size_t n_args, size_t n_kw, mp_obj_t *args)
{
    MP_DYNRUNTIME_INIT_ENTRY

    mp_store_global(MP_QSTR_process_blocks, MP_OBJ_FROM_PTR(&process_blocks_obj));
    mp_store_global(MP_QSTR_filter_block, MP_OBJ_FROM_PTR(&filter_block_obj));
    mp_store_global(MP_QSTR_log100, MP_OBJ_FROM_PTR(&log100_obj));
    /* what firmware/meter.py checks before it takes this kernel: array sizes and the log table it was built with */
    static const mp_obj_t layout[5] = {
        MP_OBJ_NEW_SMALL_INT(MK_CFG_SIZE), MP_OBJ_NEW_SMALL_INT(MK_ST_SIZE), MP_OBJ_NEW_SMALL_INT(MK_SUMS_SIZE),
        MP_OBJ_NEW_SMALL_INT(MK_ACC_SIZE), MP_OBJ_NEW_SMALL_INT(MK_LOG_TABLE_SUM)
    };
    mp_store_global(MP_QSTR_LAYOUT, mp_obj_new_tuple(5, layout));

    MP_DYNRUNTIME_INIT_EXIT
}
