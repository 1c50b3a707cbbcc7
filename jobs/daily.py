"""spark-submit entry point: ingest + refine + publish one snapshot date.

spark-submit --py-files dist/clm_spark.zip jobs/daily.py --config conf/clm.yaml --date 2024-03-31
"""

import sys

from clm_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
