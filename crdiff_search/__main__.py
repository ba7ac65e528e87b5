import sys

from crdiff_search.cli import main

sys.exit(main())
