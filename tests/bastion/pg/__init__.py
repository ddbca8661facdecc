"""Tests of the sans-IO PostgreSQL protocol core."""
