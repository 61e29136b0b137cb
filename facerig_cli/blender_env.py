"""A private, temporary Blender user configuration for every ``facerig`` command.

Why: bpy, like Blender, keeps its *user* resources — preferences, installed extensions and the
wheels those extensions unpacked into ``extensions/.local`` — under ``$BLENDER_USER_RESOURCES``,
else ``~/.config/blender/<version>`` (``%APPDATA%``/``~/Library`` elsewhere). The commands that
build heads call ``bpy.ops.wm.read_factory_settings``, which resets the preferences to factory
defaults (no extension enabled) and makes Blender re-sync the extension wheels to the enabled
extensions (``addon_utils.extensions_refresh`` → ``_bpy_internal.extensions.wheel_manager.apply_action``):
with the user's configuration that deleted every installed extension's wheels, and a Blender open at
the same time then failed to import them. Blender reads these variables when bpy is imported, so
:func:`isolate_blender_user_config` must run before that; ``facerig_cli.main`` calls it first thing.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

# Blender's per-kind overrides win over BLENDER_USER_RESOURCES, so a user's own setting of any of
# them would still point bpy at their files: they are removed for the command's process.
USER_OVERRIDES = ("BLENDER_USER_CONFIG", "BLENDER_USER_SCRIPTS", "BLENDER_USER_DATAFILES",
                  "BLENDER_USER_EXTENSIONS")


def isolate_blender_user_config() -> Path | None:
    """Point bpy (this process and its children) at a fresh temporary user configuration.

    Returns the directory (removed when the process exits), or None when bpy is already imported:
    then it is too late, and the caller (a test session, a script inside Blender) owns the choice.
    """
    if "bpy" in sys.modules:
        log.debug("bpy already imported: its user configuration is left as it is")
        return None
    path = Path(tempfile.mkdtemp(prefix="facerig-blender-user-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    os.environ["BLENDER_USER_RESOURCES"] = str(path)
    for name in USER_OVERRIDES:
        os.environ.pop(name, None)
    return path


__all__ = ["USER_OVERRIDES", "isolate_blender_user_config"]
