"""Helpers shared by tests (real TF objects, no mocks)."""
