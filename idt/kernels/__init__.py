"""idt/kernels."""
