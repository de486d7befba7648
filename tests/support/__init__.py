"""Helpers shared by test modules (importable as ``tests.support``; pytest puts the repository root on the path)."""
