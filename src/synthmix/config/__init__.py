"""params.yaml as typed, validated settings: one section object per group, parsed once at the edge."""
