import sys

from bids_app.cli import main

sys.exit(main())
