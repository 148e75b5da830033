"""The functional core: interrupts, handlers, hooks, config, the agent loop, checkpoints.

Pure Python; never imports ``ray`` (a test pins it). Import public names from
``kaizen_ray``; the modules here are private.
"""
