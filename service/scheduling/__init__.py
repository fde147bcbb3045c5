"""Trial slots (claims), the workers registry and reaper, and the learning-curve job queue."""
