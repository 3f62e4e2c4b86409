"""GAN mathematics shared by every algorithm (losses, steps, aggregation), as pure functions."""
