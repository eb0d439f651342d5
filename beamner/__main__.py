"""``python -m beamner``: the ``beamner`` command."""

from beamner.cli import main

if __name__ == "__main__":
    main()
