"""Analysis of trials and studies: diagnoses, remedies, report, importances, learning curves."""
