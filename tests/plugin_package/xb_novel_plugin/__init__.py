"""A third-party plugin as the tests install it: one method and one metric, one file each."""
