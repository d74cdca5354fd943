"""Tests of servekit.formats."""
