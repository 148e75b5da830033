"""Helpers shared by the test tiers (agents, waiting); never imported by the library."""
