"""Model repository: folders of numbered versions, their loading and resolution."""
