/* Entry point for qemu-riscv32 user mode: call main, exit with its result. */
    .text
    .global _start
_start:
    call main
    li a7, 93
    ecall
