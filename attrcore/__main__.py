import sys

from .cli.main import main

# guarded: Dask's LocalCluster (--workers) starts worker processes that re-import this module
if __name__ == "__main__":
    sys.exit(main())
