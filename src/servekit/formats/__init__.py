"""Foreign model layouts turned into servekit's own ModelConfig and runtime."""
