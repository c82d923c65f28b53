"""``pixio curate``: curation statistics (planned)."""

from .common import not_built

register = not_built("curate", "curation statistics")
