"""Tests of servekit.formats.triton."""
