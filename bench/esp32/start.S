/* Entry point for qemu-xtensa user mode: call main with the windowed ABI (callx8), exit with its result. */
    .text
    .literal_position
    .align 4
    .global _start
_start:
    movi a0, 0
    movi a8, main
    .byte 0xe0, 0x08, 0x00   /* callx8 a8 */
    mov a6, a10
    movi a2, 118             /* exit */
    syscall
