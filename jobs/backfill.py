"""spark-submit entry point: publish every date from --start to --end in order.

spark-submit --py-files dist/clm_spark.zip jobs/backfill.py --config conf/clm.yaml --start D1 --end D2
"""

import sys

from clm_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["backfill", *sys.argv[1:]]))
