"""Output file formats: JSON Lines, CSV and Parquet writers."""
