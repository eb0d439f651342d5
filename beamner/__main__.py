"""``python -m beamner``: the ``beamner`` command."""

from beamner.cli.app import main

if __name__ == "__main__":
    main()
