"""The generator: one platform-neutral job plan, rendered as GitLab CI and GitHub Actions
pipelines (inline, or as thin callers of the reusable templates)."""
