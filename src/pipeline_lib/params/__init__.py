"""params.yaml: loading and validation (schema, then meaning), the method grids, verification settings, file paths."""
