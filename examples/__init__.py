"""Small runnable trioweb apps: ``trioweb run examples.echo:app``."""
