"""`python -m mdgen.bench ...` = `mdgen bench ...`."""
import sys

from mdgen.bench.cli import main

sys.exit(main())
