"""Analyses that apply to any allocator's snapshot (the walkers call them)."""
