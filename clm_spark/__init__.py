"""clm-spark: customer lifecycle management on PySpark and Delta Lake."""

__version__ = "0.1.0"
