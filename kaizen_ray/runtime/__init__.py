"""The Ray shell: actors and driver-side handles over the core. Private; see ``kaizen_ray``."""
