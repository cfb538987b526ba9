"""`python -m llem_ray` runs the `llem` command (for environments without the console script)."""

from llem_ray.cli import app

if __name__ == "__main__":
    app()
