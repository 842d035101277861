"""What every package uses: the user-error type, atomic file writes and hashes, CSV tables, progress bars."""
