"""The app's settings: one typed object read once from the environment and `.env`.

Owns: config.settings (Settings, load_settings), the checks the settings need (DATABASE_URL in
config.database_url, the import policy in config.imports). Imports no package of this project:
everything else may import it.
"""

__version__ = "0.1.0"
