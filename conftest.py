"""Root conftest: its presence puts the repository root on ``sys.path`` (pytest's rootdir
conftest rule), so ``import coinfeed`` works from ``.venv/bin/pytest`` without an install."""
