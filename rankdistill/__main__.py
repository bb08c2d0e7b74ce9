import sys

from rankdistill.cli import main

sys.exit(main())
