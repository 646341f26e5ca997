"""Command-line entry points (``[project.scripts]`` in pyproject.toml): thin tyro front ends over the library."""
