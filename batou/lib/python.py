"""batou.lib.python: venvs and pip packages (see executor.lib.python)."""

from executor.lib.python import Package, Venv, VirtualEnv

__all__ = ["Package", "Venv", "VirtualEnv"]
