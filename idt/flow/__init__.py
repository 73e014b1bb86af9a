"""idt/flow."""
