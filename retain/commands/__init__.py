"""Click commands of the method half; each imports torch only inside its function."""
