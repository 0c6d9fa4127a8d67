"""Make the shared helpers in tests/ (gradcheck.py) importable from every test module."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
