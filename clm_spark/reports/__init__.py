"""What people read: the console summary, the offline HTML report and validation reports."""
