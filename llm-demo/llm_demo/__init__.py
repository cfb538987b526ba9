"""llm-demo: warm up a TensorRT-LLM + Triton serving stack.

Self-contained: this package imports nothing from other packages of the repository.
"""

__version__ = "0.1.0"
