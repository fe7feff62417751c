"""Write-back: records from a source into a form, matched on a key, under a load lease, with rejects."""
