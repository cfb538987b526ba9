"""`python -m llm_demo ...` = the `llm-demo` command (for hosts where the package is on PYTHONPATH only)."""

from .cli import main

main()
