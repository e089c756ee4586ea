import sys

from famix_core.cli import main

sys.exit(main())
