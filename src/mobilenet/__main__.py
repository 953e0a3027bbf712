import sys

from mobilenet.cli import main

sys.exit(main())
