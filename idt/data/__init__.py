"""idt/data."""
