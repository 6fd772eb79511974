"""Data readers shared by both front ends (numpy only)."""
