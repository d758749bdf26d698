import sys

from mdgen.cli import main

sys.exit(main())
