"""Task groups: one extraction fanned out over many tasks (plan, mapped read, commit)."""
