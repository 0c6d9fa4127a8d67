"""`python -m npdlrm ...` is the `npdlrm` command."""
from .cli import main

raise SystemExit(main())
