"""Helpers shared by the test tiers (imported as ``_support``: pytest puts ``tests/`` on ``sys.path``)."""
