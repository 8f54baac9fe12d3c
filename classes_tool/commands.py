"""Registration of the commands that belong to the other targets (campaign, convert, ...)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = []
