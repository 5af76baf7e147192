"""Running a spec: parsing it into entries of validated plugin instances, the run context
protocols measure with, the one pipeline every adversarial set goes through, and writing the
report."""
