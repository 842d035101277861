"""What every package uses; imports nothing else of synthmix.

- `errors`: UserError (exit 2 with a message) and the messages for a full disk or a file-size limit.
- `files`: atomic writes, locks, hashes, and `read_csv`, the one reader of a CSV file synthmix wrote.
- `progress`: progress bars (quiet under SYNTHMIX_QUIET).
"""
