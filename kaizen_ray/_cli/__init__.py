"""The parts of the ``kaizen-ray`` command (:mod:`kaizen_ray.cli`): pure logic apart from Ray access."""
