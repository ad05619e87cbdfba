"""Data: dataset adapters (official layouts -> Records), image IO, prepared cache, transforms, synthesis."""
