"""Fake REST APIs for GitLab and GitHub, served on 127.0.0.1, for the platform tests."""
