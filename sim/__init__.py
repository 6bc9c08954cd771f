"""Simulator of a public square's sound and IEC 61672 test signals, with ground truth."""
