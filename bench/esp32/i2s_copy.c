/* The per-frame copy of MicroPython's ports/esp32/machine_i2s.c (v1.28.0, fill_appbuf_from_dma), restated so that
 * bench/esp32_bench.py can count its instructions under qemu-xtensa: machine.I2S.readinto copies the bytes the
 * format keeps from each 8-byte DMA frame to the app buffer, through a 240-byte transform buffer. IDF's own work
 * (i2s_channel_read, the DMA interrupt, the queue) is not included.
 */
typedef unsigned int u32;
#define FRAME 8
#define TRANSFORM_BYTES 240
static const signed char frame_map[4][FRAME] = {
    {2, 3, -1, -1, -1, -1, -1, -1}, /* mono, 16 bits */
    {0, 1, 2, 3, -1, -1, -1, -1},   /* mono, 32 bits: the firmware's usual format */
    {2, 3, 6, 7, -1, -1, -1, -1},   /* stereo, 16 bits */
    {0, 1, 2, 3, 4, 5, 6, 7}};      /* stereo, 32 bits */
static unsigned char transform[TRANSFORM_BYTES];
static unsigned char app[FRAMES * 8];

__attribute__((noinline)) u32 copy_frames(unsigned char *app_p, u32 received, unsigned char f_index)
{
    u32 a_index = 0, t_index = 0;
    while (t_index < received) {
        unsigned char *transform_p = transform + t_index;
        for (unsigned char i = 0; i < FRAME; i++) {
            signed char m = frame_map[f_index][i];
            if (m != -1) {
                *app_p++ = transform_p[m];
                a_index++;
            }
            t_index++;
        }
    }
    return a_index;
}

int main(void)
{
    /* FRAMES frames in transform-buffer pieces of 30 frames, as readinto reads them */
    u32 total = 0, k;
    for (k = 0; k < FRAMES / 30; k++)
        total += copy_frames(app + total, TRANSFORM_BYTES, F_INDEX);
    return total == FRAMES * (F_INDEX == 3 ? 8 : 4) ? 0 : 1;
}
