"""idt/pipeline."""
