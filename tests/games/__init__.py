"""Tests of the games/ package (environments, solvers, dynamics, CLI)."""
