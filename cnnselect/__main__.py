import sys

from cnnselect.cli import main

sys.exit(main())
